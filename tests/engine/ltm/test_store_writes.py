"""How the LTM store writes a change of a run (`engine.ltm.store.apply`): all of it or none of
it, on both databases; on PostgreSQL an execution's commit is one statement (data-modifying
CTEs), whose parts each write only if the run's compare-and-set won."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from engine import api
from engine.ltm import store
from engine.models import LtmAppend, LtmEvent, LtmExecution, LtmInstance, LtmRun
from tests.engine.ltm.support import django_runtime  # noqa: F401  (autouse fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


@pytest.fixture
def queued_run(user):
    """A run whose root execution is queued, not run (the queue is not immediate)."""
    from huey.contrib.djhuey import HUEY

    HUEY.immediate = False
    try:
        run_id = api.start_ltm("my_ltm", user)
        yield run_id
    finally:
        HUEY.immediate = True
        HUEY.storage.flush_all()


def _write(snap: store.Snapshot, queued: LtmExecution, **expect: Any) -> store.Write:
    """An execution's commit, of the shape an execution's end makes: an instance changed, an
    execution queued, the executing one closed, an event."""
    fqn = next(iter(snap.rows))
    record = store.row_record(snap.run, snap.rows[fqn])
    return store.Write(
        records=[replace(record, error="written by the test")],
        executions=[(fqn, {"brought": [1, "two", {"3": None}]})],
        events=[{"kind": "note", "fqn": fqn, "data": {"said": "it's <here>"}}],
        execution_changes=[(queued.pk, {"status": "done", "finished": timezone.now()})],
        expect=expect or {"status": "queued", "attempts": queued.attempts},
    )


def _stored(run_id: Any) -> dict[str, Any]:
    run = LtmRun.objects.get(pk=run_id)
    return {
        "run": (run.version, run.seq, run.state, run.updated),
        "instances": sorted(LtmInstance.objects.filter(run=run).values_list("fqn", "error")),
        "executions": sorted(
            LtmExecution.objects.filter(run=run).values_list("id", "status", "closed_seq")
        ),
        "events": LtmEvent.objects.filter(run=run).count(),
    }


def test_a_commit_stores_all_its_parts_and_on_postgresql_in_one_statement(queued_run, monkeypatch):
    """On PostgreSQL the commit is one statement, which commits by itself: no transaction
    is opened for it (its `BEGIN` and `COMMIT` were two more round trips)."""
    queued = LtmExecution.objects.get(run_id=queued_run, status="queued")
    before = LtmRun.objects.get(pk=queued_run)
    events_before = LtmEvent.objects.filter(run=before).count()
    opened: list[int] = []
    atomic = transaction.atomic

    def counted(*args: Any, **kwargs: Any) -> Any:
        opened.append(1)
        return atomic(*args, **kwargs)

    monkeypatch.setattr(store.transaction, "atomic", counted)

    with CaptureQueriesContext(connection) as captured:
        write = store.commit(queued_run, lambda snap: _write(snap, queued))
    monkeypatch.undo()

    assert write is not None
    run = LtmRun.objects.get(pk=queued_run)
    assert run.version == before.version + 1 and run.seq == before.seq + 1
    fqn = write.records[0].fqn
    assert LtmInstance.objects.get(run=run, fqn=fqn).error == "written by the test"
    (new_id,) = write.new_execution_ids
    new = LtmExecution.objects.get(pk=new_id)
    assert (new.fqn, new.status, new.payload) == (
        fqn,
        "queued",
        {"brought": [1, "two", {"3": None}]},
    )
    assert new.queued_seq == run.seq and new.dispatched_at is not None
    closed = LtmExecution.objects.get(pk=queued.pk)
    assert (closed.status, closed.closed_seq) == ("done", run.seq)
    event = LtmEvent.objects.get(run=run, seq=run.seq)
    assert (event.kind, event.fqn, event.data) == ("note", fqn, {"said": "it's <here>"})
    assert LtmEvent.objects.filter(run=run).count() == events_before + 1
    # What this process holds of the run is what is stored.
    held = store.committed.get(run.pk, run.version)
    assert held is not None and held.rows[fqn].error == "written by the test"

    writes = [q["sql"] for q in captured if q["sql"].startswith(("UPDATE", "INSERT", "WITH"))]
    if connection.vendor == "postgresql":
        assert len(writes) == 1 and writes[0].startswith("WITH w AS (UPDATE"), writes
        assert not opened
    else:
        assert len(writes) >= 4, writes  # (SQLite: statement by statement)
        assert opened


def test_a_commit_that_lost_its_compare_and_set_writes_nothing(queued_run):
    queued = LtmExecution.objects.get(run_id=queued_run, status="queued")
    stale = store.read(queued_run)
    write = _write(stale, queued)
    LtmRun.objects.filter(pk=queued_run).update(version=F("version") + 1)  # a write elsewhere
    stored = _stored(queued_run)

    with transaction.atomic():
        assert store.apply(stale, write) is False

    assert _stored(queued_run) == stored
    assert write.new_execution_ids == [] and stale.run.version == stored["run"][0] - 1


def test_a_commit_whose_execution_is_not_as_expected_writes_nothing(queued_run):
    """Its execution was handed on meanwhile (another attempt): the whole write is dropped,
    the run's row, the instance, the new execution and the event with it."""
    queued = LtmExecution.objects.get(run_id=queued_run, status="queued")
    stored = _stored(queued_run)

    written = store.commit(queued_run, lambda snap: _write(snap, queued, attempts=7))

    assert written is None
    assert _stored(queued_run) == stored


def test_a_claim_of_a_queued_execution_taken_meanwhile_builds_the_write_again(queued_run):
    """A write that claims a queued execution for its worker (`Write.keep_queued`) finds it
    claimed by another: nothing of it stays, and it is built again on what is stored."""
    queued = LtmExecution.objects.get(run_id=queued_run, status="queued")
    fqn = queued.fqn
    builds: list[int] = []

    def build(snap: store.Snapshot) -> store.Write:
        builds.append(snap.run.version)
        record = store.row_record(snap.run, snap.rows[fqn])
        write = store.Write(
            records=[replace(record, error=f"try {len(builds)}")],
            events=[{"kind": "note", "fqn": fqn, "data": {}}],
        )
        if len(builds) == 1:  # another worker claims it first (the run's row untouched)
            LtmExecution.objects.filter(pk=queued.pk).update(attempts=F("attempts") + 1)
            write.keep, write.keep_queued = True, queued
            write.keep_claim = {"status": "claimed", "attempts": queued.attempts + 1}
            write.keep_record = replace(record, status="active")
            write.keep_event = {"kind": "status", "fqn": fqn, "data": {}}
        return write

    version = LtmRun.objects.get(pk=queued_run).version
    write = store.commit(queued_run, build)

    assert write is not None and write.kept is None and len(builds) == 2
    assert LtmInstance.objects.get(run_id=queued_run, fqn=fqn).error == "try 2"
    run = LtmRun.objects.get(pk=queued_run)
    assert run.version == version + 1
    assert LtmEvent.objects.filter(run=run, seq__gt=run.seq - 1).count() == 1
    assert LtmExecution.objects.get(pk=queued.pk).status == "queued"


def test_a_joins_appends_store_the_list_and_their_events_on_postgresql_in_one_statement(user):
    """Each arrival at a join appends to its list: on PostgreSQL the run's compare-and-set,
    the append's row, the list and its `state.appended` event are one statement, which
    commits by itself (on SQLite, a transaction of four); the seqs of the run's events
    have no gap."""
    with CaptureQueriesContext(connection) as captured:
        run_id = api.start_ltm("flou_join", user, {"size": 6})

    run = LtmRun.objects.get(pk=run_id)
    assert run.state == "complete"
    appended = LtmEvent.objects.filter(run=run, kind="state.appended").order_by("seq")
    assert [event.data["length"] for event in appended] == [1, 2, 3, 4, 5, 6]
    lists = [
        value
        for instance in LtmInstance.objects.filter(run=run)
        for value in instance.state.values()
        if isinstance(value, list) and len(value) == 6
    ]
    assert lists, "the join's list holds the six arrivals"
    seqs = sorted(LtmEvent.objects.filter(run=run).values_list("seq", flat=True))
    assert seqs == list(range(1, run.seq + 1))
    sql = [q["sql"] for q in captured]
    appends = [q for q in sql if 'INTO "engine_ltmappend"' in q]
    at_once = [q for q in appends if q.startswith('WITH w AS (UPDATE "engine_ltmrun"')]
    if connection.vendor == "postgresql":
        assert (len(appends), len(at_once)) == (6, 6), appends
    else:
        assert (len(appends), len(at_once)) == (6, 0), appends


def test_an_append_made_before_is_not_made_again_and_leaves_no_trace(user):
    """A re-run of an execution repeats its append: it finds it made, and nothing of the
    second try stays (on PostgreSQL the one statement aborts, all of it, and the append is
    asked again in a transaction, which finds it made)."""
    from engine.ltm.executor import append

    with CaptureQueriesContext(connection):
        run_id = api.start_ltm("flou_join", user, {"size": 2})
    run = LtmRun.objects.get(pk=run_id)
    made = LtmAppend.objects.filter(execution__run=run).order_by("id").first()
    execution = LtmExecution.objects.get(pk=made.execution_id)
    LtmExecution.objects.filter(pk=execution.pk).update(status="claimed")  # (its re-run)
    stored = _stored(run_id)
    target = LtmInstance.objects.get(run=run, fqn=made.target)

    values, appended = append(execution, made.target, made.key, {"again": True}, made.call_index)

    assert appended is None and {"again": True} not in values
    assert _stored(run_id) == stored
    assert LtmInstance.objects.get(pk=target.pk).state == target.state
