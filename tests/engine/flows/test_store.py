"""The flows' hot path (engine.flows.store): what it sends is what the ORM would have sent,
what it publishes is what the stored rows say, and a flow started inline is not read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from engine import Task, api, rows
from engine import events as engine_events
from engine.flows import store
from engine.flows.status import FlowState
from engine.models import Flow, FlowEvent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "text",
        "",
        0,
        7,
        True,
        False,
        datetime(2026, 12, 6, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 12, 6, 3, 4, 5, tzinfo=UTC),  # (no microseconds: no fraction written)
        datetime(2026, 12, 6, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2026, 12, 6, 3, 4, 5, 6),  # naive (Django warns, and takes it as local time)
        {"a": [1, "b", None]},
        [1, 2],
        {"at": datetime(2026, 12, 6, 3, 4, 5, tzinfo=UTC), "d": Decimal("1.5"), "u": [{}]},
        [],
        {},
        Decimal("1.5"),
        "waiting",
        FlowState.WAITING,  # a text choice (a str subclass)
    ],
)
@pytest.mark.bothmodes
@pytest.mark.filterwarnings("ignore:DateTimeField .* received a naive datetime")
def test_each_value_goes_to_the_database_as_the_field_would_send_it(value):
    for field in [*Flow._meta.concrete_fields, *FlowEvent._meta.concrete_fields]:
        try:
            expected = field.get_db_prep_save(value, connection)
        except (TypeError, ValueError, AttributeError, ValidationError):
            continue  # a value this field does not take
        got = rows.db_value(field, value, connection)
        assert _sent(got) == _sent(expected), (field.name, value)


@pytest.mark.bothmodes
@pytest.mark.django_db
def test_an_events_values_are_what_each_field_would_send(user, routine):
    """The event rows' values, made without `db_value` for their plain columns, are what
    `db_value` (so the field's `get_db_prep_save`) sends for every column of every row."""
    flow = api.start_flow(routine("t_echo", "t_wait"), user)
    specs = [
        ("step.completed", {"data": {"step": 0, "at": datetime.now(UTC), "n": Decimal("1.5")}}),
        ("input.pushed", {"actor": user, "message": "yes \u00e9", "data": {"a": [1, {"b": None}]}}),
        ("flow.waiting", {"message": "", "data": {}}),
    ]
    made = store._event_rows(flow, specs)
    odd = store._EventRow(flow, "odd", {"data": []})
    odd.position, odd.seq = None, True  # a null, and a bool where an integer goes
    made.append(odd)
    _, _, fields = store._event_sql(connection)
    now = datetime.now(UTC)

    got = store._event_values(connection, fields, made, now)

    expected = [
        [rows.db_value(field, getattr(row, field.attname), connection) for field in fields[:-1]]
        + [rows.db_value(fields[-1], now, connection)]
        for row in made
    ]
    assert [[_sent(v) for v in values] for values in got] == [
        [_sent(v) for v in values] for values in expected
    ]


def _sent(value):
    """What the driver sends for a value, comparable: psycopg's wrappers (PostgreSQL) as
    what they wrap and the type they name (`Int4(7)` is sent as an int4, plain 7 as the
    smallest integer type that holds it: both store alike in an integer column); a JSON
    document wrapped for the driver to encode (`Jsonb`) as the text it encodes it to, which
    the engine sends itself, and the server takes as the column's JSON."""
    if type(value).__name__ in ("Json", "Jsonb"):
        return str, "", (value.dumps or json.dumps)(value.obj)
    wrapped = getattr(value, "obj", value)  # Int4(...) -> its int
    kind = type(wrapped)
    if isinstance(wrapped, int) and not isinstance(wrapped, bool):
        kind = int  # Int2 / Int4 / Int8 / plain int
    return kind, type(value).__name__ if hasattr(value, "obj") else "", wrapped


def test_a_published_event_is_its_stored_row_as_the_feed_carries_it(user, routine):
    published: list[dict] = []

    def sink(batch: list[dict]) -> None:
        published.extend(event for event in batch if event.get("type") == "flow.event")

    engine_events.connect(sink)
    try:
        flow = api.start_flow(routine("t_echo", "t_wait"), user)
        api.push_input(flow, {"answer": "yes"}, user)
    finally:
        engine_events.disconnect(sink)
    flow.refresh_from_db()
    rows = {row.seq: row for row in FlowEvent.objects.filter(flow=flow)}
    assert len(published) == len(rows) > 4
    for event in published:
        row = rows[event["seq"]]
        expected = row.feed(owner=flow.owner_id, version=event["version"])
        assert event == expected, event["kind"]
    actors = {event["kind"]: event["actor"] for event in published}
    assert actors["flow.created"] == user.pk and actors["flow.running"] is None


def test_a_flow_run_inline_is_answered_without_reading_it_back(user, routine):
    """start_flow's run (inline here) takes the flow just written, and start_flow answers
    with the flow as that run left it: no SELECT of the flow's row."""
    with CaptureQueriesContext(connection) as captured:
        flow = api.start_flow(routine("t_echo", "t_echo"), user)
    assert flow.state == "complete" and flow.results[1]["position"] == 1
    reads = [
        q["sql"] for q in captured if q["sql"].startswith("SELECT") and "engine_flow" in q["sql"]
    ]
    assert not [
        sql for sql in reads if 'FROM "engine_flow"' in sql or "FROM engine_flow " in sql
    ], reads
    stored = Flow.objects.get(pk=flow.pk)
    assert (stored.state, stored.version, stored.seq) == (flow.state, flow.version, flow.seq)


@pytest.mark.bothmodes
def test_a_flow_run_at_once_is_claimed_by_its_creation(user, routine):
    """Run at once (inline, no transaction of the caller's holding it), a flow is claimed by
    the write that creates it: its first write holds `flow.created` (recording it pending, as
    created) and `flow.running`, and the run writes only its steps. Started inside a
    caller's transaction, it is created pending and claimed by its run after the commit."""
    steps = routine("t_echo", "t_echo")
    with CaptureQueriesContext(connection) as captured:
        flow = api.start_flow(steps, user)
    assert flow.state == "complete"
    writes = [q["sql"] for q in captured if 'UPDATE "engine_flow"' in q["sql"]]
    assert len(writes) == 2, writes  # the two steps' (the claim took one more)
    events = list(FlowEvent.objects.filter(flow=flow).order_by("seq").values_list("kind", "state"))
    assert events[:3] == [
        ("flow.created", "pending"),
        ("flow.running", "running"),
        ("step.completed", "running"),
    ]
    assert events[-1] == ("flow.complete", "complete")

    with transaction.atomic():
        later = api.start_flow(steps, user)
        assert later.state == "pending"  # (its run waits for this transaction's commit)
    stored = Flow.objects.get(pk=later.pk)
    assert stored.state == "complete"
    kinds = list(FlowEvent.objects.filter(flow=later).order_by("seq").values_list("kind", "state"))
    assert kinds[:2] == [("flow.created", "pending"), ("flow.running", "running")]


class _StartsAnother(Task):
    """Starts the routine its flow's data names (inline here, inside this step)."""

    name = "t_starts_another"

    def perform(self):
        inner = api.start_flow(self.data["inner"], self.user)
        return {"inner": inner.pk, "state": inner.state}


def test_a_flow_started_inside_an_inline_step_leaves_the_outer_answer_current(user, routine):
    inner = routine("t_echo")
    flow = api.start_flow(
        routine("t_starts_another", "t_offloaded", "t_echo"), user, data={"inner": inner.pk}
    )
    assert flow.results[0]["state"] == "complete"
    stored = Flow.objects.get(pk=flow.pk)
    assert stored.state == "complete"
    assert (flow.state, flow.version) == (stored.state, stored.version)


def _write_step(flow: Flow, position: int) -> bool:
    return store.write_flow(
        flow,
        {"position": position + 1, "stored_results": store.ItemAt(position, {"n": position})},
        [("step.completed", {"data": {"n": position}})],
        expect_state="running",
    )


def _step_written(flow: Flow) -> FlowEvent:
    """Check that `_write_step(flow, 0)` is stored as the flow in memory says; its event."""
    stored = Flow.objects.get(pk=flow.pk)
    assert (stored.version, stored.seq, stored.position) == (flow.version, flow.seq, 1)
    assert stored.stored_results == [{"n": 0}]
    last = FlowEvent.objects.filter(flow=flow).order_by("-seq").first()
    assert last is not None and (last.seq, last.kind, last.data) == (
        flow.seq,
        "step.completed",
        {"n": 0},
    )
    return last


@pytest.mark.bothmodes
def test_a_write_that_loses_its_compare_and_set_stores_nothing_and_leaves_the_flow_as_read(
    user, routine
):
    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    Flow.objects.filter(pk=flow.pk).update(state="running")
    flow.refresh_from_db()
    stale = Flow.objects.get(pk=flow.pk)
    assert _write_step(flow, 0)  # the winner
    events = FlowEvent.objects.filter(flow=flow).count()
    before = (stale.position, stale.version, stale.seq, stale.updated)

    assert not _write_step(stale, 0)  # read before that write: it loses

    assert (stale.position, stale.version, stale.seq, stale.updated) == before
    assert FlowEvent.objects.filter(flow=flow).count() == events
    stored = Flow.objects.get(pk=flow.pk)
    assert (stored.version, stored.position) == (flow.version, 1)
    assert stored.stored_results == [{"n": 0}]


@pytest.mark.bothmodes
def test_a_step_write_is_its_result_its_events_and_the_flow_at_once(user, routine):
    """Outside a transaction a step's write commits by itself: on PostgreSQL one statement
    (the update, the result row and the events), elsewhere one transaction."""
    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    Flow.objects.filter(pk=flow.pk).update(state="running")
    flow.refresh_from_db()
    published: list[dict] = []
    engine_events.connect(published.extend)
    try:
        with CaptureQueriesContext(connection) as captured:
            assert _write_step(flow, 0)
    finally:
        engine_events.disconnect(published.extend)
    statements = [q["sql"] for q in captured]
    if connection.vendor == "postgresql":
        assert len(statements) == 1 and statements[0].startswith("WITH f AS (UPDATE"), statements
    last = _step_written(flow)
    assert [event["seq"] for event in published] == [flow.seq]
    assert published[0] == last.feed(owner=flow.owner_id, version=flow.version)


@pytest.mark.bothmodes
def test_a_step_write_inside_a_callers_transaction_rolls_back_with_it(user, routine):
    from django.db import transaction

    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    Flow.objects.filter(pk=flow.pk).update(state="running")
    flow.refresh_from_db()
    version, events = flow.version, FlowEvent.objects.filter(flow=flow).count()
    with pytest.raises(RuntimeError), transaction.atomic():
        assert _write_step(flow, 0)
        raise RuntimeError("the caller fails after the write")
    stored = Flow.objects.get(pk=flow.pk)
    assert stored.version == version and stored.stored_results == []
    assert FlowEvent.objects.filter(flow=flow).count() == events


@pytest.mark.bothmodes
def test_a_flows_creation_is_one_statement_on_postgresql_with_its_first_event(user, routine):
    from huey.contrib.djhuey import HUEY

    steps = routine("t_echo")
    immediate, HUEY.immediate = HUEY.immediate, False  # created and queued, not run here
    try:
        with CaptureQueriesContext(connection) as captured:
            flow = api.start_flow(steps, user)
    finally:
        HUEY.immediate = immediate
        HUEY.storage.flush_all()
    writes = [q["sql"] for q in captured if not q["sql"].startswith("SELECT")]
    if connection.vendor == "postgresql":
        assert len(writes) == 1 and writes[0].startswith("WITH f AS (INSERT"), writes
    stored = Flow.objects.get(pk=flow.pk)
    assert (stored.state, stored.version, stored.seq) == ("pending", 1, 1)
    created = FlowEvent.objects.get(flow=flow)
    assert (created.seq, created.kind, created.actor_id) == (1, "flow.created", user.pk)


@pytest.mark.bothmodes
def test_an_answer_is_written_in_its_own_transaction_without_a_savepoint(user, routine):
    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    assert flow.state == "waiting"
    with CaptureQueriesContext(connection) as captured:
        api.push_input(flow, {"answer": "yes"}, user)
    assert not [q["sql"] for q in captured if "SAVEPOINT" in q["sql"]]
    flow.refresh_from_db()
    assert flow.state == "complete"


@pytest.mark.bothmodes
def test_a_flow_read_in_one_statement_is_what_the_orm_reads(user, routine):
    flow = api.start_flow(routine("t_wait", "t_echo"), user, data={"n": 1})
    orm = Flow.objects.select_related("owner", "routine").get(pk=flow.pk)
    with CaptureQueriesContext(connection) as captured:
        read = api.read_flow(flow.pk)
        assert read is not None
        owner, steps_of = read.owner, read.routine  # read with it: no query
    assert len(captured) == 1
    for left, right in ((read, orm), (owner, orm.owner), (steps_of, orm.routine)):
        for field in type(right)._meta.concrete_fields:
            assert getattr(left, field.attname) == getattr(right, field.attname), field.name
    assert api.read_flow(flow.pk + 1000) is None
    assert api.read_flow(2**63) is None and api.read_flow(-(2**63) - 1) is None  # no 500


sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite",
    reason="the driver's own path is SQLite's (on PostgreSQL a step is one statement)",
)


@sqlite_only
def test_a_step_write_on_sqlite_goes_to_the_driver_and_publishes_once_committed(
    user, routine, monkeypatch
):
    """Outside a transaction, with nobody watching its statements, a step's write on SQLite
    never goes through Django's cursor; its events are published once it has committed."""
    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    Flow.objects.filter(pk=flow.pk).update(state="running")
    flow.refresh_from_db()
    seen: list[tuple[bool, int]] = []

    def sink(batch: list[dict]) -> None:
        import sqlite3

        other = sqlite3.connect(connection.settings_dict["NAME"])  # another reader
        try:
            (version,) = other.execute(
                "SELECT version FROM engine_flow WHERE id = ?", [flow.pk]
            ).fetchone()
        finally:
            other.close()
        seen.append((connection.connection.in_transaction, version))

    def no_django_cursor(*args, **kwargs):
        raise AssertionError("a step's write went through Django's cursor")

    engine_events.connect(sink)
    monkeypatch.setattr(connection, "cursor", no_django_cursor)
    try:
        assert _write_step(flow, 0)
    finally:
        monkeypatch.undo()
        engine_events.disconnect(sink)
    assert seen == [(False, flow.version)]  # committed, visible to another connection
    _step_written(flow)


@sqlite_only
def test_a_step_write_that_fails_on_sqlite_rolls_back_whole_and_leaves_the_flow_as_read(
    user, routine
):
    from django.db import IntegrityError

    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    Flow.objects.filter(pk=flow.pk).update(state="running")
    flow.refresh_from_db()
    # An event row already at the sequence number the write's event takes.
    blocker = FlowEvent.objects.create(
        flow=flow, seq=flow.seq + 1, kind="x", state="running", position=0
    )
    before = (flow.position, flow.version, flow.seq, flow.updated, flow.state)
    published: list[dict] = []
    engine_events.connect(published.extend)
    try:
        with pytest.raises(IntegrityError):  # Django's error, as its cursor raises it
            _write_step(flow, 0)
    finally:
        engine_events.disconnect(published.extend)
    assert not published
    assert (flow.position, flow.version, flow.seq, flow.updated, flow.state) == before
    assert not connection.connection.in_transaction  # rolled back, the connection usable
    stored = Flow.objects.get(pk=flow.pk)
    assert (stored.version, stored.position, stored.stored_results) == (flow.version, 0, [])
    blocker.delete()
    assert _write_step(flow, 0)  # the same write goes through once the row is gone
    assert Flow.objects.get(pk=flow.pk).stored_results == [{"n": 0}]


@sqlite_only
def test_a_start_on_sqlite_creates_through_the_driver_then_publishes_then_queues(
    user, routine, monkeypatch
):
    """A flow started outside a transaction on SQLite is created in a transaction of its own
    on the driver (never Django's cursor nor its atomic block); its first event is published
    once that has committed, and only then is it queued."""
    from huey.contrib.djhuey import HUEY

    from engine.flows import runner

    steps = routine("t_echo")
    order: list[tuple[str, bool]] = []

    def sink(batch: list[dict]) -> None:
        order.append(("published", connection.connection.in_transaction))

    def queued(flow_id: int) -> None:
        order.append(("queued", connection.connection.in_transaction))

    def no_django(*args, **kwargs):
        raise AssertionError("a flow's creation went through Django's cursor or atomic")

    engine_events.connect(sink)
    immediate, HUEY.immediate = HUEY.immediate, False
    monkeypatch.setattr(runner, "enqueue_run", queued)
    monkeypatch.setattr(connection, "cursor", no_django)
    monkeypatch.setattr(connection, "set_autocommit", no_django)
    try:
        flow = api.start_flow(steps, user)
    finally:
        monkeypatch.undo()
        HUEY.immediate = immediate
        engine_events.disconnect(sink)
    assert order == [("published", False), ("queued", False)]
    stored = Flow.objects.get(pk=flow.pk)
    assert (stored.state, stored.version, stored.seq) == ("pending", 1, 1)
    assert FlowEvent.objects.get(flow=flow).kind == "flow.created"


@sqlite_only
def test_a_creation_that_fails_on_sqlite_stores_and_publishes_nothing(user, routine):
    from django.db import IntegrityError

    steps = routine("t_echo")
    flow = Flow(routine_id=steps.pk + 1000, steps=[], owner=user)  # no such routine
    published: list[dict] = []
    engine_events.connect(published.extend)
    try:
        with pytest.raises(IntegrityError):  # the key is checked at the commit
            store.create_flow(flow, [("flow.created", {"actor": user})])
    finally:
        engine_events.disconnect(published.extend)
    assert not published and flow.pk is None and flow._state.adding
    assert not connection.connection.in_transaction  # rolled back, the connection usable
    assert not Flow.objects.exists() and not FlowEvent.objects.exists()
    assert api.start_flow(steps, user).state == "complete"


@pytest.mark.bothmodes
def test_a_write_leaves_out_the_versioned_columns_the_row_holds_already(user, routine):
    from django.utils import timezone

    from engine.flows.status import FlowState

    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    Flow.objects.filter(pk=flow.pk).update(state="running", error="")
    flow.refresh_from_db()
    renewed = timezone.now().replace(microsecond=0)
    # A lease renewal leaves the version alone: the flow in memory does not know of it.
    Flow.objects.filter(pk=flow.pk).update(lease_until=renewed)
    with CaptureQueriesContext(connection) as captured:
        assert store.write_flow(
            flow,
            {
                "state": FlowState.RUNNING,  # held (as text)
                "error": "",  # held
                "input": None,  # held
                "has_input": False,  # held
                "position": 1,  # changed
                "attempt": True,  # not the integer held: written
                "lease_until": flow.lease_until,  # never left out
            },
            expect_state="running",
        )
    (update,) = [
        q["sql"] for q in captured if q["sql"].lstrip().upper().startswith(("UPDATE", "WITH"))
    ]
    sets = update.split(" WHERE ")[0]
    for column in ("state", "error", "input", "has_input"):
        assert f'"{column}" = ' not in sets, column
    for column in ("position", "attempt", "lease_until", "worker", "version"):
        assert f'"{column}" = ' in sets or f"{column} = " in sets, column
    stored = Flow.objects.get(pk=flow.pk)
    assert (stored.state, stored.position, stored.error, stored.version) == (
        "running",
        1,
        "",
        flow.version,
    )
    assert stored.lease_until == flow.lease_until != renewed


@pytest.mark.parametrize(
    ("held", "value", "holds"),
    [
        (None, None, True),
        ("running", "running", True),
        ("", "", True),
        (0, 0, True),
        (False, False, True),
        (None, "", False),
        ("", None, False),
        (1, True, False),  # stored alike, but not what was asked for: written
        (True, 1, False),
        ("1", 1, False),
        ({"a": 1}, {"a": 1}, False),  # a JSON value is always written
    ],
)
def test_what_a_row_holds_already_is_the_same_value_of_the_same_kind(held, value, holds):
    flow = Flow(input=held if isinstance(held, dict) else None)
    name = "input" if isinstance(held, dict) else "error"
    if name == "error":
        flow.error = held
    assert store._holds(flow, name, value) is holds
    assert store._holds(flow, "lease_until", flow.lease_until) is False  # never left out


@pytest.mark.bothmodes
@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="prepared statements are PostgreSQL's: the scale-out pass (tests/test_scaleout.py) "
    "runs this on PostgreSQL",
)
def test_on_postgresql_a_flows_creation_load_and_steps_run_as_prepared_statements(user, routine):
    """The statements of a flow's life on PostgreSQL (its creation, its load, a step's write)
    are parsed and planned once per connection, then only executed."""
    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    assert store.load_flow(flow.pk) is not None
    Flow.objects.filter(pk=flow.pk).update(state="running")
    flow.refresh_from_db()
    assert _write_step(flow, 0)
    _step_written(flow)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]
    assert any(s.startswith("WITH f AS (INSERT INTO") for s in prepared)  # the creation
    assert any(s.startswith("WITH f AS (UPDATE") for s in prepared)  # the step
    assert any("JOIN" in s and "engine_flow" in s and "WHERE f." in s for s in prepared)


postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="a claim in one statement is PostgreSQL's (elsewhere the runner reads the flow, then "
    "claims it): the scale-out pass (tests/test_scaleout.py) runs this on PostgreSQL",
)


def _claim(flow_id: int, events=(("flow.running", {}),)) -> Flow | None:
    from engine.leases import lease_until

    claim = {"state": FlowState.RUNNING, "lease_until": lease_until(), "job_id": ""}
    return store.claim_pending(flow_id, claim, list(events))


@pytest.mark.bothmodes
@postgresql_only
def test_on_postgresql_a_claim_is_one_statement_that_reads_the_flow_as_written(
    user, other_user, queued
):
    flow = queued("t_echo", "t_echo")
    published: list[dict] = []
    engine_events.connect(published.extend)
    try:
        with CaptureQueriesContext(connection) as captured:
            claimed = _claim(
                flow.pk,
                [
                    ("flow.running", {}),
                    ("a.note", {"message": "m", "data": {"a": [1]}, "actor": other_user}),
                ],
            )
    finally:
        engine_events.disconnect(published.extend)
    assert len(captured) == 1, [q["sql"] for q in captured]
    assert claimed is not None
    stored = Flow.objects.select_related("owner").get(pk=flow.pk)
    for field in Flow._meta.concrete_fields:
        assert getattr(claimed, field.attname) == getattr(stored, field.attname), field.name
    for field in type(stored.owner)._meta.concrete_fields:
        assert getattr(claimed.owner, field.attname) == getattr(stored.owner, field.attname)
    assert (stored.state, stored.version, stored.seq) == ("running", 2, 3)
    running, note = FlowEvent.objects.filter(flow=flow, seq__gt=1).order_by("seq")
    assert (running.seq, running.kind, running.actor_id) == (2, "flow.running", None)
    assert (running.state, running.position, running.message, running.data) == (
        "running",
        0,
        "",
        {},
    )
    assert (note.seq, note.kind, note.actor_id, note.message, note.data) == (
        3,
        "a.note",
        other_user.pk,
        "m",
        {"a": [1]},
    )
    assert running.created == note.created == stored.updated
    assert published == [
        running.feed(owner=user.pk, version=2),
        note.feed(owner=user.pk, version=2),
    ]

    # Claimed: a second claim finds it no longer pending, and writes nothing.
    assert _claim(flow.pk) is None
    assert Flow.objects.get(pk=flow.pk).version == 2
    assert FlowEvent.objects.filter(flow=flow).count() == 3
    assert _claim(flow.pk + 1000) is None


@pytest.mark.bothmodes
@postgresql_only
def test_on_postgresql_only_a_claims_commit_does_not_wait_for_the_disk(queued):
    """The claim's statement runs with `synchronous_commit` off for its own transaction: a
    trigger at the end of each statement that inserts events notes the setting then. A
    step's write keeps the server's setting, and the session's is left as it was."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        (server,) = cursor.fetchone()
        cursor.execute("CREATE TABLE commit_seen (statement serial, setting text)")
        cursor.execute(
            "CREATE FUNCTION commit_seen() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO commit_seen (setting) VALUES (current_setting('synchronous_commit')); "
            "RETURN NULL; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER commit_seen AFTER INSERT ON engine_flowevent "
            "FOR EACH STATEMENT EXECUTE FUNCTION commit_seen()"
        )
    try:
        flow = queued("t_echo", "t_echo")
        claimed = _claim(flow.pk)
        assert claimed is not None
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone() == (server,)  # not left set for what follows
        assert _write_step(claimed, 0)
        with connection.cursor() as cursor:
            cursor.execute("SELECT setting FROM commit_seen ORDER BY statement")
            seen = [setting for (setting,) in cursor.fetchall()]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER commit_seen ON engine_flowevent")
            cursor.execute("DROP FUNCTION commit_seen()")
            cursor.execute("DROP TABLE commit_seen")
    assert server != "off"
    # the creation, the claim, the step
    assert seen == [server, "off", server]


@pytest.mark.bothmodes
@postgresql_only
def test_on_postgresql_a_claim_inside_a_callers_transaction_is_not_at_once():
    """Inside a caller's transaction the claim would make the caller's whole commit skip the
    disk: the runner reads the flow and claims it with `write_flow` there."""
    from django.db import transaction

    assert store.claims_at_once()
    with transaction.atomic():
        assert not store.claims_at_once()
