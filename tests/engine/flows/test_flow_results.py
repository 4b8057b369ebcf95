"""Each step's result is a row of its own (FlowResult): the migration that moved the arrays
into rows (both ways), and what reads and writes them."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext

from engine import api
from engine.models import Flow, FlowEvent, FlowResult

# Runs on PostgreSQL too, in the scale-out pass.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]

BEFORE = [("engine", "0008_flow_search_index")]
AFTER = [("engine", "0009_flow_results")]


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


def _search_triggers() -> set[str]:
    if connection.vendor != "sqlite":
        return set()
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        return {name for (name,) in cursor.fetchall() if name.startswith("engine_flow_search")}


def test_the_migration_moves_each_array_into_rows_and_back(user, routine):
    triggers = _search_triggers()
    old = _migrate(BEFORE)
    OldFlow = old.get_model("engine", "Flow")
    base = {
        "routine_id": routine("t_echo", "t_echo", "t_echo").pk,
        "routine_version": 1,
        "owner_id": user.pk,
        "steps": [{"name": f"s{i}", "script": "t_echo", "params": {}} for i in range(3)],
    }
    # Results as the column held them: one before a skipped (None) step and a last one, a
    # trailing None (a skipped last step), and none.
    gapped = OldFlow.objects.create(**base, stored_results=[{"a": 1}, None, [2, "b"]])
    trailing = OldFlow.objects.create(**base, stored_results=[{"a": 1}, None])
    empty = OldFlow.objects.create(**base, stored_results=[])

    _migrate(AFTER)
    assert Flow.objects.get(pk=gapped.pk).stored_results == [{"a": 1}, None, [2, "b"]]
    assert Flow.objects.get(pk=trailing.pk).stored_results == [{"a": 1}, None]
    assert Flow.objects.get(pk=empty.pk).stored_results == []
    assert FlowResult.objects.filter(flow_id=gapped.pk).count() == 3
    assert "stored_results" not in {f.column for f in Flow._meta.concrete_fields}
    assert _search_triggers() == triggers  # dropped in place: the search index's triggers stay

    back = _migrate(BEFORE)
    OldFlow = back.get_model("engine", "Flow")
    assert OldFlow.objects.get(pk=gapped.pk).stored_results == [{"a": 1}, None, [2, "b"]]
    assert OldFlow.objects.get(pk=trailing.pk).stored_results == [{"a": 1}, None]
    assert OldFlow.objects.get(pk=empty.pk).stored_results == []
    assert _search_triggers() == triggers  # the rebuilt table has its triggers again
    _migrate(
        [n for n in MigrationExecutor(connection).loader.graph.leaf_nodes() if n[0] == "engine"]
    )
    assert _search_triggers() == triggers  # (and the migrations after it keep them)


def test_a_step_reads_the_results_before_it_only_when_it_looks(user, routine):
    """Steps that do not look at `self.results` read no result rows; one that does sees every
    result before it, in order."""
    with CaptureQueriesContext(connection) as captured:
        flow = api.start_flow(routine("t_echo", "t_echo", "t_echo"), user)
    assert flow.state == "complete"
    reads = [q["sql"] for q in captured if "engine_flowresult" in q["sql"]]
    assert not [sql for sql in reads if sql.startswith("SELECT")], reads

    flow = api.start_flow(routine("t_echo", "t_echo", "t_results"), user)
    assert flow.state == "complete", flow.error
    assert flow.results[2] == {"seen": [0, 1]}


def test_a_skipped_step_has_a_null_row_and_deleting_the_flow_deletes_its_rows(user, routine):
    flow = api.start_flow(routine("t_echo", "t_wait", "t_echo"), user)
    assert flow.state == "waiting"
    flow = api.skip(flow, user, reason="not needed")
    assert flow.state == "complete"
    row = FlowResult.objects.get(flow=flow, position=1)
    assert row.value is None
    assert Flow.objects.get(pk=flow.pk).stored_results[1] is None
    assert len(Flow.objects.get(pk=flow.pk).stored_results) == 3
    Flow.objects.filter(pk=flow.pk).delete()
    assert not FlowResult.objects.filter(flow_id=flow.pk).exists()


def test_a_flows_results_and_latest_events_are_what_the_orm_reads(user, routine, other_user):
    """The page's reads (statements written once): results by position with gaps as None;
    the latest events, newest first, with their actors."""
    flow = api.start_flow(routine("t_echo", "t_wait", "t_echo", "t_wait"), user)
    flow = api.skip(flow, user, reason="not needed")
    FlowResult.objects.filter(flow=flow, position=0).delete()  # a gap before the others
    fresh = Flow.objects.get(pk=flow.pk)
    assert fresh.stored_results == [None, None, flow.stored_results[2]]
    assert fresh.stored_results[2] is not None

    FlowEvent.objects.filter(flow=flow, seq=2).update(actor=other_user)
    orm = list(flow.events.select_related("actor").order_by("-seq")[:4])
    got = api.latest_events(flow, 4)
    assert [(e.pk, e.seq, e.kind, e.state, e.data, e.created) for e in got] == [
        (e.pk, e.seq, e.kind, e.state, e.data, e.created) for e in orm
    ]
    assert [e.actor for e in got] == [e.actor for e in orm]
    assert len(api.latest_events(flow)) == flow.events.count() < 200
