"""Migration 0010: the hot tables keep only the indexes that pay (each step writes a flow row
and event rows; every index on them is written too), on SQLite and PostgreSQL alike, and
neither table is rebuilt (SQLite's flow search triggers stay)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from engine import api
from engine.models import (
    Flow,
    FlowEvent,
    LtmAppend,
    LtmExecution,
    LtmInstance,
    LtmRun,
    Notification,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]
RUN = "00000000-0000-0000-0000-000000000001"


def _indexes(table: str) -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, table)
    return {
        name: info["columns"]
        for name, info in found.items()
        if info["index"] and not info["unique"] and not info["primary_key"]
    }


def _triggers() -> set[str]:
    if connection.vendor != "sqlite":
        return set()
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        return {name for (name,) in cursor.fetchall()}


def _latest() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    return [node for node in executor.loader.graph.leaf_nodes() if node[0] == "engine"]


def _migrate(target: list[tuple[str, str]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)


def test_the_hot_tables_have_no_index_another_covers():
    flows, events = _indexes("engine_flow"), _indexes("engine_flowevent")
    ltm_events = _indexes("engine_ltmevent")
    assert ["owner_id"] not in flows.values() and ["routine_id"] not in flows.values()
    assert ["flow_id"] not in events.values() and ["run_id"] not in ltm_events.values()
    # Partial now: only events with an actor, only flows with a deadline, a retry, a limit.
    assert events["flowevent_actor"] == ["actor_id"] == ltm_events["ltmevent_actor"]
    assert list(events.values()).count(["actor_id"]) == 1
    assert flows["flow_state_deadline"] == ["state", "deadline"]
    # The LTM tables and the human steps': no key indexed twice, nor where another begins.
    for table, column in [
        ("engine_ltminstance", "run_id"),
        ("engine_ltmexecution", "run_id"),
        ("engine_ltmappend", "execution_id"),
        ("engine_ltmcheckpoint", "run_id"),
        ("engine_ltmrun", "owner_id"),
        ("engine_notification", "user_id"),
    ]:
        assert [column] not in _indexes(table).values(), table
    assigned = list(_indexes("engine_flowassignee").values())
    assert assigned.count(["user_id"]) == 1 and assigned.count(["group_id"]) == 1


def test_the_migration_drops_and_restores_only_indexes(user, routine):
    flow = api.start_flow(routine("t_echo", "t_echo"), user)
    events = FlowEvent.objects.filter(flow=flow).count()
    triggers = _triggers()
    after = _indexes("engine_flowevent")

    _migrate([("engine", "0009_flow_results")])
    assert ["flow_id"] in _indexes("engine_flowevent").values()
    assert ["owner_id"] in _indexes("engine_flow").values()
    assert _triggers() == triggers

    _migrate(_latest())
    assert _indexes("engine_flowevent") == after
    assert _triggers() == triggers
    assert FlowEvent.objects.filter(flow=flow).count() == events
    assert Flow.objects.get(pk=flow.pk).state == "complete"


def test_what_searched_the_dropped_indexes_searches_the_ones_that_stay():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's plan (PostgreSQL plans a table this small by scanning it)")
    from django.utils import timezone

    now = timezone.now()
    plans = {
        "flow_state_deadline": Flow.objects.filter(state="waiting", deadline__lte=now),
        "flow_state_retry": Flow.objects.filter(state="retrying", retry_at__lte=now),
        "flow_state_time_limit": Flow.objects.filter(state="running", step_deadline__lte=now),
        "flow_owner_recent": Flow.objects.filter(owner_id=1),
        "flow_routine_recent": Flow.objects.filter(routine_id=1),
        "flowevent_actor": FlowEvent.objects.filter(actor_id=1),
        "sqlite_autoindex_engine_flowevent_1": FlowEvent.objects.filter(flow_id=1),
        "ltmexec_run_status ltmexec_run_queued": LtmExecution.objects.filter(run_id=RUN),
        "sqlite_autoindex_engine_ltminstance_1": LtmInstance.objects.filter(run_id=RUN),
        "sqlite_autoindex_engine_ltmappend_1": LtmAppend.objects.filter(execution_id=1),
        "ltmrun_owner_state": LtmRun.objects.filter(owner_id=1),
        "notification_user_open": Notification.objects.filter(user_id=1),
    }
    for indexes, query in plans.items():  # (any of those named serves)
        plan = query.explain()
        assert any(f"USING INDEX {index} " in plan for index in indexes.split()), plan
