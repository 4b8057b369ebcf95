"""Each step's result in a row of its own (`FlowResult`), no longer an array in the flow's row.

A step's write used to set one item of that array, which the database parses and writes
again whole: a step cost more the longer the flow. Now it writes one row.

The existing arrays are copied into rows (every item, a None one as a NULL row, so that a
flow's list of results reads exactly as before), then the column is dropped. On SQLite the
column is dropped in place (`ALTER TABLE ... DROP COLUMN`, no rebuild of `engine_flow`), so
the search triggers of 0008 stay. Reversible: the arrays are rebuilt from the rows (on
SQLite, adding the column back rebuilds the table, and the search triggers are created again).
"""

import importlib

import django.core.serializers.json
import django.db.models.deletion
from django.db import migrations, models

BATCH = 2000


def rows_from_arrays(apps, schema_editor):
    Flow = apps.get_model("engine", "Flow")
    FlowResult = apps.get_model("engine", "FlowResult")
    alias = schema_editor.connection.alias
    batch = []
    flows = Flow.objects.using(alias).order_by("pk").values_list("pk", "stored_results")
    for flow_id, stored in flows.iterator(chunk_size=BATCH):
        for position, value in enumerate(stored or []):
            batch.append(FlowResult(flow_id=flow_id, position=position, value=value))
        if len(batch) >= BATCH:
            FlowResult.objects.using(alias).bulk_create(batch)
            batch = []
    if batch:
        FlowResult.objects.using(alias).bulk_create(batch)


def arrays_from_rows(apps, schema_editor):
    Flow = apps.get_model("engine", "Flow")
    FlowResult = apps.get_model("engine", "FlowResult")
    alias = schema_editor.connection.alias
    arrays: dict[int, list] = {}
    rows = FlowResult.objects.using(alias).order_by("flow_id", "position")
    for flow_id, position, value in rows.values_list("flow_id", "position", "value").iterator():
        stored = arrays.setdefault(flow_id, [])
        stored.extend([None] * (position - len(stored)))
        stored.append(value)
    for flow_id, stored in arrays.items():
        Flow.objects.using(alias).filter(pk=flow_id).update(stored_results=stored)


def search_triggers_again(apps, schema_editor):
    """Once the column is back (on SQLite a rebuild of `engine_flow`, which drops its
    triggers): the search index's triggers of 0008, created again."""
    if schema_editor.connection.vendor != "sqlite":
        return
    search = importlib.import_module("engine.migrations.0008_flow_search_index")
    for sql in search.SQLITE_TRIGGERS:
        schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("engine", "0008_flow_search_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="FlowResult",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("position", models.PositiveIntegerField()),
                (
                    "value",
                    models.JSONField(
                        encoder=django.core.serializers.json.DjangoJSONEncoder, null=True
                    ),
                ),
                (
                    "flow",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="result_rows",
                        to="engine.flow",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("flow", "position"), name="flowresult_unique_step"
                    )
                ],
            },
        ),
        migrations.RunPython(rows_from_arrays, arrays_from_rows),
        # (Reversed, this runs after the column is added back.)
        migrations.RunPython(migrations.RunPython.noop, search_triggers_again),
        migrations.RemoveField(
            model_name="flow",
            name="stored_results",
        ),
    ]
