"""An index for the dashboard's search of a wait reason (any part, any case): see
engine.flows.queries.narrow.

- PostgreSQL: the pg_trgm extension and a GIN trigram index of the wait reason in upper case
  (`NULLIF(UPPER(wait_reason), '')`, what the search compares), partial: only flows with a
  wait reason have entries (a flow's every write is a new row version, `updated` being
  indexed; a flow that is not waiting adds nothing to it); and statistics of that expression
  (PostgreSQL 14+), from which the planner knows how many flows a text matches.
- SQLite: an FTS5 table with the trigram tokenizer, `engine_flow_search(wait_reason)` whose
  rowid is the flow's id, holding the flows with a wait reason only; triggers keep it in step
  with `engine_flow` (insert, a changed wait reason, delete), and the existing flows are copied
  in. Django rebuilds a SQLite table for some schema changes (a new table copied over, the old
  one dropped with its triggers): a later migration that does so to `engine_flow` must create
  the triggers again (SQLITE_TRIGGERS here); tests/engine/flows/test_search_index.py fails
  until it does.

Each part is skipped on the other database; the reverse removes the index and its statistics,
the table and the triggers (not the pg_trgm extension, which other objects may use).
"""

from django.db import migrations

PG_INDEX = "flow_wait_reason_trgm"
PG_STATISTICS = "flow_wait_reason_upper"
SQLITE_TABLE = "engine_flow_search"

# What the search compares (engine.flows.queries._PG_REASON): the reason in upper case, NULL
# when there is none.
PG_REASON = "(NULLIF(UPPER(wait_reason::text), ''))"
PG_FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX IF NOT EXISTS {PG_INDEX} ON engine_flow USING gin ({PG_REASON} gin_trgm_ops) "
    f"WHERE {PG_REASON} IS NOT NULL",
    # How many flows a text matches is estimated from statistics of the expression (a partial
    # index's own are not used): the planner then reads the index for rare text and the
    # flows in the list's order for common text.
    f"CREATE STATISTICS IF NOT EXISTS {PG_STATISTICS} ON {PG_REASON} FROM engine_flow",
    "ANALYZE engine_flow",
]
PG_REVERSE = [f"DROP STATISTICS IF EXISTS {PG_STATISTICS}", f"DROP INDEX IF EXISTS {PG_INDEX}"]

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS {SQLITE_TABLE}_insert AFTER INSERT ON engine_flow
    WHEN new.wait_reason <> '' BEGIN
        INSERT INTO {SQLITE_TABLE}(rowid, wait_reason) VALUES (new.id, new.wait_reason);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS {SQLITE_TABLE}_update
    AFTER UPDATE OF id, wait_reason ON engine_flow
    WHEN old.wait_reason IS NOT new.wait_reason OR old.id IS NOT new.id BEGIN
        DELETE FROM {SQLITE_TABLE} WHERE rowid = old.id;
        INSERT INTO {SQLITE_TABLE}(rowid, wait_reason)
            SELECT new.id, new.wait_reason WHERE new.wait_reason <> '';
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS {SQLITE_TABLE}_delete AFTER DELETE ON engine_flow
    WHEN old.wait_reason <> '' BEGIN
        DELETE FROM {SQLITE_TABLE} WHERE rowid = old.id;
    END""",
]
SQLITE_FORWARD = [
    # The trigram tokenizer folds case (case_sensitive 0) and serves LIKE '%abc%'.
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {SQLITE_TABLE} USING fts5(wait_reason, "
    "tokenize='trigram')",
    f"DELETE FROM {SQLITE_TABLE}",
    f"INSERT INTO {SQLITE_TABLE}(rowid, wait_reason) "
    "SELECT id, wait_reason FROM engine_flow WHERE wait_reason <> ''",
    *SQLITE_TRIGGERS,
]
SQLITE_REVERSE = [
    *(f"DROP TRIGGER IF EXISTS {SQLITE_TABLE}_{event}" for event in ("insert", "update", "delete")),
    f"DROP TABLE IF EXISTS {SQLITE_TABLE}",
]


def _run(schema_editor, statements: dict[str, list[str]]) -> None:
    for sql in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(sql, params=None)


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        with schema_editor.connection.cursor() as cursor:
            try:
                cursor.execute(
                    "CREATE VIRTUAL TABLE temp.flowstudio_probe USING fts5(t, tokenize='trigram')"
                )
                cursor.execute("DROP TABLE temp.flowstudio_probe")
            except Exception as exc:
                raise RuntimeError(
                    "the dashboard's search index needs SQLite 3.34 or later with FTS5 "
                    f"(its trigram tokenizer): {exc}"
                ) from exc
    _run(schema_editor, {"postgresql": PG_FORWARD, "sqlite": SQLITE_FORWARD})


def reverse(apps, schema_editor):
    _run(schema_editor, {"postgresql": PG_REVERSE, "sqlite": SQLITE_REVERSE})


class Migration(migrations.Migration):
    dependencies = [
        ("engine", "0007_dashboard_indexes"),
    ]

    operations = [
        migrations.RunPython(forward, reverse, elidable=False),
    ]
