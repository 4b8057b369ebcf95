"""Executing LTM runs (engine.ltm.executor: the Django runtime) with Huey in immediate mode:
the seed's examples, statuses, run-to-completion, failures, atomic appends, transitions, forks
and joins, and the events each execution leaves."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection

from engine import api
from engine.core.errors import FlowStateError
from engine.ltm.executor import DjangoRuntime
from engine.models import LtmAppend, LtmEvent, LtmExecution, LtmInstance, LtmRun
from tests import ltm_catalog as catalog
from tests.engine.ltm.support import (
    Flaky,
    Racer,
    django_runtime,  # noqa: F401  (autouse fixture)
    kinds,
    statuses,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


# -- the seed's example ---------------------------------------------------------------------


def test_seed_example_through_django(user, capsys):
    run_id = api.start_ltm("my_ltm", user)

    assert capsys.readouterr().out.splitlines() == ["state_value", "global_value", "end"]
    root = api.load_ltm(run_id)
    assert root.state == {"global_key": "global_value"}
    assert root.status == "active"
    assert root.instances["my_ltm.my_state"].state == {"internal_state_key": "state_value"}
    assert statuses(run_id) == {
        "my_ltm": "active",
        "my_ltm.my_state": "completed",
        "my_ltm.end_state": "active",
    }
    run = LtmRun.objects.get(pk=run_id)
    assert run.owner == user and run.state == "complete" and run.finished is not None
    assert set(LtmExecution.objects.filter(run=run).values_list("status", flat=True)) == {"done"}


def test_my_ltm_start_from_code_runs_under_django(capsys, make_user):
    root = catalog.MyLtm()
    run_id = root.start()

    assert root.id == run_id and isinstance(root.runtime, DjangoRuntime)
    assert capsys.readouterr().out.splitlines() == ["state_value", "global_value", "end"]
    assert root.status == "active" and root.state == {"global_key": "global_value"}
    assert root.child("end_state").status == "active"
    run = LtmRun.objects.get(pk=run_id)
    assert run.owner is None and run.state == "complete"
    assert api.load_ltm(run_id).state == {"global_key": "global_value"}
    assert list(api.visible_ltm_runs(make_user("someone"))) == []
    assert list(api.visible_ltm_runs(make_user("admin", is_staff=True))) == [run]


# -- statuses, payload, run to completion ------------------------------------------------------


def test_statuses_move_init_queued_active_completed(user):
    run_id = api.start_ltm("my_ltm", user)

    changes = [
        e.data["to"]
        for e in LtmEvent.objects.filter(run_id=run_id, kind="status", fqn="my_ltm.my_state")
    ]
    assert changes == ["queued", "active", "completed"]
    assert statuses(run_id)["my_ltm.my_state"] == "completed"
    states = [e.data["to"] for e in LtmEvent.objects.filter(run_id=run_id, kind="run.state")]
    assert states == ["running", "complete"]


def test_payload_reaches_run_and_nothing_is_written_before_it_returns(user):
    run_id = api.start_ltm("probe", user, {"answer": 42})

    root = api.load_ltm(run_id)
    assert root.state["payload"] == {"answer": 42}
    assert root.state["stored_inside"] == {} and root.state["global_inside"] == {}
    assert root.state["status_inside"] == "active"  # claimed and shown before run() ran
    assert root.state["seen"] is True


def test_a_raise_writes_nothing_records_the_error_and_the_state_can_be_retried(user):
    Flaky.failures = 1
    run_id = api.start_ltm("flaky_ltm", user)

    root = api.load_ltm(run_id)
    flaky = root.instances["flaky_ltm.flaky"]
    assert flaky.status == "failed" and flaky.state == {}
    assert "RuntimeError: flaky" in (flaky.error or "")
    assert root.instances["flaky_ltm.fine"].state == {"fine": True}  # the other branch ran
    run = root.run
    assert run.state == "failed" and "flaky_ltm.flaky failed: RuntimeError: flaky" in run.error
    error = LtmEvent.objects.get(run_id=run_id, kind="error")
    assert error.fqn == "flaky_ltm.flaky" and "RuntimeError: flaky" in error.data["error"]

    api.retry_ltm(run_id, user)

    root = api.load_ltm(run_id)
    assert root.instances["flaky_ltm.flaky"].status == "active"
    assert root.instances["flaky_ltm.flaky"].state == {"tried": True, "payload": {}}
    assert root.run.state == "complete" and root.run.error == ""
    retry = LtmEvent.objects.get(run_id=run_id, kind="manual.retry")
    assert retry.actor == user and retry.data == {"states": ["flaky_ltm.flaky"]}
    with pytest.raises(FlowStateError, match="no failed state"):
        api.retry_ltm(run_id, user)


def test_a_catalog_failure_discards_updates_and_transitions(user):
    run_id = api.start_ltm("failing_ltm", user)

    root = api.load_ltm(run_id)
    assert root.state == {} and "failing_ltm.aftermath" not in root.instances
    assert root.instances["failing_ltm.explode"].status == "failed"
    assert kinds(run_id, "failing_ltm.explode") == ["status", "status", "status", "error"]
    changes = LtmEvent.objects.filter(run_id=run_id, kind="status", fqn="failing_ltm.explode")
    assert [e.data["to"] for e in changes] == ["queued", "active", "failed"]


def test_a_state_that_is_not_json_fails_its_execution_clearly(user):
    run_id = api.start_ltm("not_json_ltm", user)

    state = api.load_ltm(run_id).instances["not_json_ltm.not_json"]
    assert state.status == "failed" and state.state == {}
    assert "the state of not_json_ltm.not_json must be JSON-serialisable" in (state.error or "")


@pytest.mark.django_db(transaction=True)
def test_an_ltm_state_that_raises_with_nul_fails_its_run_with_the_message_escaped(user):
    run_id = api.start_ltm("nul_raiser", user)
    root = api.load_ltm(run_id)
    assert root.run.state == "failed"
    assert root.run.error.endswith("ValueError: a\\x00b")


def test_atomic_append_is_idempotent_per_execution_and_call(user):
    run_id = api.start_ltm("append_ltm", user)

    root = api.load_ltm(run_id)
    assert root.state["items"] == ["a"]
    assert root.instances["append_ltm.append_twice"].state == {"first": ["a"], "again": ["a"]}
    assert LtmAppend.objects.filter(execution__run_id=run_id).count() == 1
    assert kinds(run_id).count("state.appended") == 1


# -- transitions --------------------------------------------------------------------------------


def test_a_namespaced_transition_moves_two_sibling_machines_and_leaves_a_third(user):
    run_id = api.start_ltm("broadcast", user)

    found = statuses(run_id)
    assert found["broadcast.sub_a.done"] == found["broadcast.sub_b.done"] == "active"
    assert found["broadcast.sub_a.waiting"] == found["broadcast.sub_b.waiting"] == "completed"
    assert found["broadcast.sub_c.waiting"] == "active"
    assert "broadcast.sub_c.done" not in found
    moved = LtmEvent.objects.filter(run_id=run_id, kind="transition", data__label="go")
    assert sorted(e.fqn for e in moved) == ["broadcast.sub_a", "broadcast.sub_b"]
    assert {e.data["namespace"] for e in moved} == {"global"}


def test_a_transition_that_moves_nothing_by_the_time_it_is_planned_is_recorded(user):
    Racer.operator = user
    run_id = api.start_ltm("race_ltm", user)

    skipped = LtmEvent.objects.get(run_id=run_id, kind="transition.skipped")
    assert skipped.fqn == "race_ltm.racer" and skipped.data["label"] == "finish"
    assert kinds(run_id).count("transition") == 1  # the operator's
    assert statuses(run_id)["race_ltm.reached"] == "active"


def test_sub_machines_nested_three_deep(user):
    run_id = api.start_ltm("deep", user)

    root = api.load_ltm(run_id)
    assert root.state == {"reached": "deep.level1.level2.level2_done"}
    assert root.instances["deep.level1.level2.level3"].status == "completed"
    assert root.instances["deep.level1.level2.level3.leaf"].status == "completed"
    assert root.instances["deep.level1"].status == "active"


def test_parameterised_instances_fork_and_join(user):
    run_id = api.start_ltm("fan_out", user, {"size": 8})

    root = api.load_ltm(run_id)
    work = root.instances["fan_out.batch.work_3"]
    assert work.params == {"n": 3} and work.status == "completed"
    assert sorted(root.instances["fan_out.batch"].state["results"]) == [n * 10 for n in range(8)]
    assert root.state["total"] == 280
    assert LtmInstance.objects.get(run_id=run_id, fqn="fan_out.batch.work_7").params == {"n": 7}


def test_a_join_arrival_commits_at_its_first_try_and_its_claim_leaves_the_run_alone(
    user, monkeypatch
):
    """A join entered once per branch (flou's): each arrival appends, the last moves on. An
    execution whose run() appended commits from the run as its append left it (its
    compare-and-set does not lose to its own append, nor is it read and planned again); the
    claim of each arrival after the first (the join is active already) changes its
    execution only: the run's row is not written, its version not bumped, so no other write
    loses its compare-and-set to it."""
    from engine.ltm import store

    tries: list[bool] = []
    run_kept: list[str] = []  # what the writes that left the run's row alone changed
    apply = store.apply

    def counted(snap, write, **options):
        version = snap.run.version
        tries.append(apply(snap, write, **options))
        if tries[-1] and snap.run.version == version:
            run_kept.extend(str(changes["status"]) for _, changes in write.execution_changes)
        return tries[-1]

    monkeypatch.setattr(store, "apply", counted)
    run_id = api.start_ltm("flou_join", user, {"size": 5})  # (tests/ltm_flou.py)

    root = api.load_ltm(run_id)
    got = root.instances["flou_join.gather"].state["got"]
    assert sorted(arrival["k"] for arrival in got) == ["1", "2", "3", "4", "5"]
    assert root.instances["flou_join.finished"].status == "active"
    assert kinds(run_id).count("state.appended") == 5
    assert tries and all(tries), f"{tries.count(False)} of {len(tries)} writes lost their try"
    assert sorted(run_kept) == ["claimed"] * 4
    # The history holds every arrival all the same: the time machine replays each.
    assert LtmExecution.objects.filter(run_id=run_id, fqn="flou_join.gather").count() == 5


# -- history ------------------------------------------------------------------------------------


def test_events_are_numbered_one_to_n_and_carry_what_happened(user):
    run_id = api.start_ltm("my_ltm", user)

    events = list(LtmEvent.objects.filter(run_id=run_id).order_by("seq"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert LtmRun.objects.get(pk=run_id).seq == len(events)
    assert events[0].kind == "run.created" and events[0].actor == user
    transition = next(e for e in events if e.kind == "transition")
    assert transition.data["label"] == "my_transition" and transition.data["payload"] == {}
    updates = [e.data["update"] for e in events if e.kind == "state.updated"]
    assert updates == [{"internal_state_key": "state_value"}, {"global_key": "global_value"}]
    assert events[-1].kind == "run.state" and events[-1].state == "complete"


def test_live_events_are_published_after_commit(user):
    from engine import events as engine_events

    seen: list[dict[str, Any]] = []
    engine_events.connect(seen.extend)
    try:
        run_id = api.start_ltm("my_ltm", user)
    finally:
        engine_events.disconnect(seen.extend)
    mine = [e for e in seen if e.get("type") == "ltm.event" and e["run"] == run_id]
    assert [e["seq"] for e in mine] == list(range(1, len(mine) + 1))
    assert mine[-1]["state"] == "complete" and mine[0]["owner"] == user.pk
    json.dumps(mine)  # what a channel layer carries


def test_what_run_does_with_an_appended_value_after_the_append_is_not_stored(user):
    """The list an append returns, and the value it appended, are run()'s own: changing
    them changes neither the stored list nor the run as this process holds it."""
    from engine.ltm import store

    run_id = api.start_ltm("meddle_ltm", user)
    stored = LtmInstance.objects.get(run_id=run_id, fqn="meddle_ltm.meddler").state
    assert stored["got"] == [{"n": 1, "tags": []}]
    held = store.read(run_id)  # (this process committed the run last: its rows, unread)
    assert held.rows["meddle_ltm.meddler"].state == stored
    returned = LtmRun.objects.get(pk=run_id).global_state["returned"]
    assert returned == [{"n": 3, "tags": []}, "not stored"]
    assert api.load_ltm(run_id).instances["meddle_ltm.meddler"].state == stored


def test_a_published_event_is_its_stored_row_as_the_feed_carries_it(user):
    """A write's events go to the database and to the live feed without a model built for
    each: what is published is what `LtmEvent.feed` makes of the stored row."""
    from engine import events as engine_events

    seen: list[dict[str, Any]] = []
    engine_events.connect(seen.extend)
    try:
        run_id = api.start_ltm("flou_join", user, {"size": 3})  # (appends, an actor, changes)
    finally:
        engine_events.disconnect(seen.extend)
    run = LtmRun.objects.get(pk=run_id)
    rows = {row.seq: row for row in LtmEvent.objects.filter(run_id=run_id)}
    mine = [e for e in seen if e.get("type") == "ltm.event" and e["run"] == run_id]
    assert sorted(e["seq"] for e in mine) == sorted(rows) == list(range(1, run.seq + 1))
    kinds = {e["kind"] for e in mine}
    assert {"run.created", "state.appended", "transition", "status", "run.state"} <= kinds
    for event in mine:
        row = rows[event["seq"]]
        assert event == row.feed(owner=user.pk, version=event["version"], name=run.name)
    assert rows[1].actor == user
    assert [row.change is None for row in rows.values()].count(False) >= 3


def test_a_commit_takes_the_snapshot_run_saw_and_reads_again_only_if_the_run_moved_on(user):
    """An execution's commit takes the snapshot its run() saw as it is (no read of the run
    or its instances: the compare-and-set on the version decides), and plans again on what
    is stored when somebody wrote the run meanwhile."""
    from dataclasses import replace

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from engine.ltm import store

    run_id = api.start_ltm("flou_join", user, {"size": 3})
    seen: list[str] = []
    first, other = [f for f in store.read(run_id).rows if "." in f][:2]

    def build(snap: store.Snapshot) -> store.Write:
        seen.append(snap.rows[other].error)
        record = store.row_record(snap.run, snap.rows[first])
        return store.Write(records=[replace(record, error=f"written {len(seen)}")])

    earlier = store.read(run_id)
    with CaptureQueriesContext(connection) as captured:
        store.commit(run_id, build, known=earlier)
    selects = [q["sql"] for q in captured if q["sql"].startswith("SELECT")]
    assert not [sql for sql in selects if "engine_ltmrun" in sql or "engine_ltminstance" in sql]

    stale = store.read(run_id)
    LtmRun.objects.filter(pk=run_id).update(version=stale.run.version + 1)  # a write elsewhere
    LtmInstance.objects.filter(run_id=run_id, fqn=other).update(error="new")
    with CaptureQueriesContext(connection) as captured:
        store.commit(run_id, build, known=stale)
    assert any("engine_ltminstance" in query["sql"] for query in captured)
    assert seen == ["", "", "new"]  # planned on the snapshot, then again on what is stored
    assert LtmInstance.objects.get(run_id=run_id, fqn=first).error == "written 3"


# -- the runs this process committed (engine.ltm.store.committed) ------------------------------


def _stored_records(run_id: str) -> dict[str, Any]:
    """fqn -> record of every instance as the database holds it now."""
    from engine.ltm import store

    store.committed.clear()
    return {record.fqn: record for record in store.read(run_id).records()}


def test_a_run_this_process_committed_is_read_without_its_instance_rows(user):
    """After a run's last write committed here, a snapshot at that version reads the run's
    row only, and holds what the database holds: the rows and their tree alike."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from engine.core.ltm.tree import RecordTree
    from engine.ltm import store

    run_id = api.start_ltm("flou_join", user, {"size": 12})
    with CaptureQueriesContext(connection) as captured:
        held = store.read(run_id)
    assert len(captured) == 1 and "engine_ltminstance" not in captured[0]["sql"]
    records = {record.fqn: record for record in held.records()}
    tree = held.record_tree()  # derived write by write, never built from every record
    assert records == _stored_records(run_id)
    fresh = RecordTree(store.root_class("flou_join"), records.values())
    assert {r.fqn: r for r in tree.records()} == {r.fqn: r for r in fresh.records()}
    assert {f: tree.children(f) for f in tree.fqns()} == {
        f: fresh.children(f) for f in fresh.fqns()
    }


def test_a_write_that_rolled_back_never_serves_as_the_run(user):
    """What a rolled-back write would have stored is never held: the write that commits that
    version number afterwards is what the next snapshot reads."""
    from django.db import transaction

    from engine.ltm import store

    run_id = api.start_ltm("flou_join", user, {"size": 3})
    fqn = next(f for f in store.read(run_id).rows if "." in f)

    def write_error(text: str) -> Any:
        def build(snap: store.Snapshot) -> store.Write:
            record = store.row_record(snap.run, snap.rows[fqn])
            return store.Write(records=[record.__class__(**{**record.__dict__, "error": text})])

        return build

    with pytest.raises(RuntimeError), transaction.atomic():
        store.commit(run_id, write_error("rolled back"))
        raise RuntimeError("the caller fails after the write")
    store.commit(run_id, write_error("committed"))  # the same version number
    assert store.read(run_id).rows[fqn].error == "committed"
    assert _stored_records(run_id)[fqn].error == "committed"


def test_a_write_committed_serves_a_reader_before_its_writer_has_run_its_hooks(user):
    """A reader can find a write committed before the writer has run its on-commit hooks
    (on PostgreSQL a writer waiting for the run's row lock wakes as the other's commit
    ends). It takes the rows as written, without reading every instance row again."""
    from django.db import transaction
    from django.test.utils import CaptureQueriesContext

    from engine.ltm import store

    run_id = api.start_ltm("flou_join", user, {"size": 12})
    fqn = next(f for f in store.read(run_id).rows if "." in f)
    seen: dict[str, Any] = {}

    def read_at_once() -> None:  # runs before the write's own hook: registered first
        assert store.committed.get(run_id, seen["version"]) is None  # (not yet kept)
        with CaptureQueriesContext(connection) as captured:
            seen["snap"] = store.read(run_id)
        seen["sql"] = [query["sql"] for query in captured]

    def build(snap: store.Snapshot) -> store.Write:
        record = store.row_record(snap.run, snap.rows[fqn])
        return store.Write(records=[record.__class__(**{**record.__dict__, "error": "new"})])

    with transaction.atomic():
        seen["version"] = store.read(run_id).run.version + 1
        transaction.on_commit(read_at_once)
        store.commit(run_id, build)
    assert len(seen["sql"]) == 1 and "engine_ltminstance" not in seen["sql"][0]
    assert seen["snap"].run.version == seen["version"]
    assert seen["snap"].rows[fqn].error == "new"
    assert {r.fqn: r for r in seen["snap"].records()} == _stored_records(run_id)


def test_a_rolled_back_write_never_serves_a_version_another_process_wrote(user):
    """A rolled-back write is kept as written a while, under the run's row as it would have
    left it: a row another process writes at the same version is not that row."""
    from django.db import transaction

    from engine.ltm import store

    run_id = api.start_ltm("flou_join", user, {"size": 3})
    fqn = next(f for f in store.read(run_id).rows if "." in f)
    version = store.read(run_id).run.version

    def build(snap: store.Snapshot) -> store.Write:
        record = store.row_record(snap.run, snap.rows[fqn])
        return store.Write(records=[record.__class__(**{**record.__dict__, "error": "undone"})])

    with pytest.raises(RuntimeError), transaction.atomic():
        store.commit(run_id, build)
        raise RuntimeError("the caller fails after the write")
    LtmInstance.objects.filter(run_id=run_id, fqn=fqn).update(error="elsewhere")
    LtmRun.objects.filter(pk=run_id).update(version=version + 1)  # as another process's write
    assert store.read(run_id).rows[fqn].error == "elsewhere"


def test_no_two_writes_of_a_process_give_a_run_the_same_time():
    from engine.ltm import store

    times = [store.write_time() for _ in range(2000)]
    assert all(earlier < later for earlier, later in zip(times, times[1:], strict=False))


def test_a_write_from_an_outdated_snapshot_takes_the_run_as_this_process_left_it(user):
    """A snapshot read before another write of this process committed is outdated: the
    write is planned once, on the run as that write left it (held here), instead of losing
    its compare-and-set and being planned again."""
    from engine.ltm import store

    run_id = api.start_ltm("flou_join", user, {"size": 3})
    first, second = [f for f in store.read(run_id).rows if "." in f][:2]
    outdated = store.read(run_id)
    seen: list[int] = []

    def write_error(fqn: str, text: str) -> Any:
        def build(snap: store.Snapshot) -> store.Write:
            seen.append(snap.run.version)
            record = store.row_record(snap.run, snap.rows[fqn])
            return store.Write(records=[record.__class__(**{**record.__dict__, "error": text})])

        return build

    store.commit(run_id, write_error(first, "first"))
    seen.clear()
    store.commit(run_id, write_error(second, "second"), known=outdated)
    assert seen == [outdated.run.version + 1]  # planned once, on the newer run
    stored = _stored_records(run_id)
    assert (stored[first].error, stored[second].error) == ("first", "second")


def test_threads_writing_one_run_do_not_race_each_other_to_its_compare_and_set(user, monkeypatch):
    """Two threads of this process writing one run, each from the run as its last write
    left it: each waits for the other's write to commit (`store.run_locks`) and takes the
    run as it left it, so no write loses the compare-and-set and is planned again."""
    import threading

    from engine.ltm import store

    if connection.vendor == "sqlite":
        pytest.skip(
            "SQLite's write transaction holds the whole database: its writers take no run "
            "lock of this process; the scale-out pass (tests/test_scaleout.py) runs this on "
            "PostgreSQL"
        )

    run_id = api.start_ltm("flou_join", user, {"size": 3})
    fqns = [f for f in store.read(run_id).rows if "." in f][:2]
    lost: list[int] = []
    apply = store.apply

    def counted(snap: store.Snapshot, write: store.Write, **options: Any) -> bool:
        won = apply(snap, write, **options)
        if not won:
            lost.append(snap.run.version)
        return won

    monkeypatch.setattr(store, "apply", counted)
    errors: list[BaseException] = []

    def writer(fqn: str) -> None:
        try:
            snap = store.read(run_id)
            for number in range(25):

                def build(now: store.Snapshot, number: int = number) -> store.Write:
                    record = store.row_record(now.run, now.rows[fqn])
                    error = f"{fqn} {number}"
                    return store.Write(
                        records=[record.__class__(**{**record.__dict__, "error": error})]
                    )

                write = store.commit(run_id, build, known=snap)
                assert write is not None
                snap = store.after(write) or store.read(run_id)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(fqn,)) for fqn in fqns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert lost == []
    stored = _stored_records(run_id)
    assert [stored[fqn].error for fqn in fqns] == [f"{fqn} 24" for fqn in fqns]
    assert LtmRun.objects.get(pk=run_id).version == store.read(run_id).run.version


def test_a_run_another_process_wrote_is_read_from_the_database(user):
    from engine.ltm import store

    run_id = api.start_ltm("flou_join", user, {"size": 3})
    version = store.read(run_id).run.version
    fqn = next(f for f in store.read(run_id).rows if "." in f)
    LtmInstance.objects.filter(run_id=run_id, fqn=fqn).update(error="elsewhere")
    assert store.read(run_id).rows[fqn].error == ""  # held: the version is the same
    LtmRun.objects.filter(pk=run_id).update(version=version + 1)  # as another process's write
    assert store.read(run_id).rows[fqn].error == "elsewhere"


def test_a_write_of_a_partial_snapshot_keeps_the_run_held_whole(user):
    """A write read only some instances (a claim) while the run at that version was held:
    the run it leaves is held whole, as the database holds it, and its events still go out."""
    from django.db import transaction

    from engine import events as engine_events
    from engine.ltm import store

    run_id = api.start_ltm("flou_join", user, {"size": 3})
    whole = _stored_records(run_id)  # (clears what was held)
    fqn = next(f for f in whole if "." in f)
    snap = store.read(run_id, only=[fqn])
    assert snap.partial
    full = store.read(run_id)
    store.committed.put(run_id, store.Held(full.run.version, full.rows, full.record_tree()))
    record = store.row_record(snap.run, snap.rows[fqn])
    write = store.Write(
        records=[record.__class__(**{**record.__dict__, "error": "partly"})],
        events=[{"kind": "note", "fqn": fqn, "data": {}}],
        run_state=snap.run.state,  # (as a claim's: the other instances are not read)
    )
    seen: list[dict[str, Any]] = []
    engine_events.connect(seen.extend)
    try:
        with transaction.atomic():
            assert store.apply(snap, write)
            assert snap.partial
    finally:
        engine_events.disconnect(seen.extend)

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        held = store.read(run_id)
    assert len(captured) == 1  # held whole
    assert {r.fqn: r for r in held.records()} == _stored_records(run_id)
    assert _stored_records(run_id)[fqn].error == "partly"
    assert [e["kind"] for e in seen if e.get("run") == run_id] == ["note"]


def test_a_wide_run_executed_here_reads_no_instance_row_back_nor_builds_its_tree_again(
    user, monkeypatch
):
    """Each execution of a run this process writes takes the run as it left it: no
    instance row is read back and no tree built from every record, however wide the run
    (an execution of a 200-branch fan-out read and built all 205 instances, several times)."""
    from engine.core.ltm.tree import RecordTree
    from engine.ltm import store

    rows_read: list[int] = []
    read_rows = store._rows
    monkeypatch.setattr(
        store, "_rows", lambda rows: rows_read.append(len(r := read_rows(rows))) or r
    )
    built: list[int] = []

    class Counted(RecordTree):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(store, "RecordTree", Counted)

    run_id = api.start_ltm("flou_join", user, {"size": 48})

    assert LtmRun.objects.get(pk=run_id).state == "complete"
    assert LtmExecution.objects.filter(run_id=run_id).count() == 99
    assert sum(rows_read) == 0 and len(built) <= 1


def test_a_commit_checks_only_what_it_changes_of_what_is_stored(user, monkeypatch):
    """A record written as it is stored (a join's list of hundreds, at every arrival) is not
    walked again; one changed is, and what no database would store is still refused."""
    from dataclasses import replace

    from engine.ltm import store

    run_id = api.start_ltm("flou_join", user, {"size": 3})
    snap = store.read(run_id)
    gather = store.row_record(snap.run, snap.rows["flou_join.gather"])
    assert len(gather.state["got"]) == 3
    checked: list[str] = []
    ensure_json = store.ensure_json
    monkeypatch.setattr(store, "ensure_json", lambda value, what, **kw: checked.append(what))

    store.check_json(store.Write(records=[replace(gather, status="queued")]), snap)
    assert checked == []
    store.check_json(store.Write(records=[gather]))  # (no snapshot: everything)
    assert checked == ["the state of flou_join.gather", "the params of flou_join.gather"]

    monkeypatch.setattr(store, "ensure_json", ensure_json)
    wrong = replace(gather, state={**gather.state, "got": [*gather.state["got"], float("nan")]})
    with pytest.raises(ValueError, match="the state of flou_join.gather"):
        store.check_json(store.Write(records=[wrong]), snap)
    # Equal is not stored alike: 1 and True and 1.0 are each written as they are.
    for stored, value in [({"a": 1}, {"a": True}), ({"a": 1}, {"a": 1.0}), ([1], [1.0])]:
        assert not store._same(stored, value) and not store._same_walk(stored, value)
    assert not store._same({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert store._same(json.loads('{"k": [{"n": 1}]}'), {"k": [{"n": 1}]})


def test_a_write_whose_execution_is_no_longer_as_read_is_dropped_whole(user):
    """A claim (or a commit) checks its execution in the update itself (`Write.expect`):
    claimed by another worker, or killed, since it was read, the whole write rolls back."""
    from dataclasses import replace

    from engine.ltm import store

    run_id = api.start_ltm("flou_join", user, {"size": 3})
    execution = LtmExecution.objects.filter(run_id=run_id, status="done").first()
    before = LtmRun.objects.get(pk=run_id)
    events = LtmEvent.objects.filter(run_id=run_id).count()
    fqn = execution.fqn

    def build(snap: store.Snapshot) -> store.Write:
        record = store.row_record(snap.run, snap.rows[fqn])
        return store.Write(
            records=[replace(record, error="lost")],
            events=[{"kind": "note", "fqn": fqn, "data": {}}],
            execution_changes=[(execution.pk, {"status": "claimed"})],
            expect={"status": "queued", "attempts": execution.attempts},  # it is done
        )

    assert store.commit(run_id, build) is None
    after = LtmRun.objects.get(pk=run_id)
    assert (after.version, after.seq) == (before.version, before.seq)
    assert LtmEvent.objects.filter(run_id=run_id).count() == events
    assert LtmExecution.objects.get(pk=execution.pk).status == "done"
    assert store.read(run_id).rows[fqn].error == ""  # nor held
    assert LtmInstance.objects.get(run_id=run_id, fqn=fqn).error == ""

    expected = {"status": "done", "attempts": execution.attempts}
    assert store.commit(run_id, lambda snap: replace(build(snap), expect=expected)) is not None
    assert LtmInstance.objects.get(run_id=run_id, fqn=fqn).error == "lost"


def test_a_class_registered_again_under_the_runs_name_is_what_its_next_execution_uses(user):
    """A run held by this process keeps its tree; a fixed class registered since under the
    same name (what a test, or a code fix in one process, does) still executes and plans the
    run's next states: the tree of the old class is not taken for it."""
    from engine.core.ltm.node import LTM
    from engine.core.ltm.registry import register, unregister

    class Step(LTM):
        name = "step"

        def run(self, **payload: Any) -> None:
            raise RuntimeError("a bug")

    class Swapped(LTM):
        name = "swapped_ltm"
        init = [Step]

    class FixedStep(LTM):
        name = "step"

        def run(self, **payload: Any) -> None:
            self.update_state({"fixed": True})

    class SwappedFixed(LTM):
        name = "swapped_ltm"
        init = [FixedStep]

    register(Swapped)
    try:
        run_id = api.start_ltm("swapped_ltm", user)
        assert LtmRun.objects.get(pk=run_id).state == "failed"
    finally:
        unregister(Swapped)
    register(SwappedFixed)
    try:
        api.retry_ltm(run_id, user)
    finally:
        unregister(SwappedFixed)
    assert LtmRun.objects.get(pk=run_id).state == "complete"
    assert LtmInstance.objects.get(run_id=run_id, fqn="swapped_ltm.step").state == {"fixed": True}


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite's write transaction holds the whole database from its start: there is no "
    "row to lock; the scale-out pass (tests/test_scaleout.py) runs this on PostgreSQL",
)
def test_a_commit_that_lost_its_compare_and_set_locks_the_run_as_it_reads_it_again(user):
    """Two workers of one run used to lose to each other's writes until a commit gave up
    ("keeps changing") and left its execution claimed: a try after a lost compare-and-set
    now holds the run's row from its read to its write."""
    import threading
    from dataclasses import replace

    from django.db import OperationalError

    from engine.ltm import store

    run_id = api.start_ltm("my_ltm", user)
    stale = store.read(run_id)
    LtmRun.objects.filter(pk=run_id).update(version=stale.run.version + 1)  # a write elsewhere
    blocked: list[bool] = []

    def another_writer() -> None:
        try:
            with connection.cursor() as cursor:  # (this thread's own connection)
                cursor.execute("SET lock_timeout = '300ms'")
                cursor.execute("UPDATE engine_ltmrun SET error = 'x' WHERE id = %s", [run_id])
            blocked.append(False)
        except OperationalError:
            blocked.append(True)
        finally:
            connection.close()

    def build(snap: store.Snapshot) -> store.Write:
        if snap.run.version != stale.run.version:  # the second try, on what is stored
            writer = threading.Thread(target=another_writer)
            writer.start()
            writer.join()
        record = store.row_record(snap.run, next(iter(snap.rows.values())))
        return store.Write(records=[replace(record, error="written")])

    assert store.commit(run_id, build, known=stale) is not None
    assert blocked == [True]
    assert LtmRun.objects.get(pk=run_id).error != "x"


def test_a_queued_execution_is_read_once_before_its_claim(user):
    """A worker's task reads its execution's row in one statement (its status with the rest):
    before the claim writes anything, the row is read once."""
    from django.test.utils import CaptureQueriesContext
    from huey.contrib.djhuey import HUEY

    from engine.ltm.executor import execute_execution

    HUEY.immediate = False
    try:
        run_id = api.start_ltm("my_ltm", user)
    finally:
        HUEY.immediate = True
        HUEY.storage.flush_all()
    queued = LtmExecution.objects.get(run_id=run_id, status="queued")

    with CaptureQueriesContext(connection) as captured:
        execute_execution(queued.pk)

    sql = [query["sql"] for query in captured]
    # (on PostgreSQL a write may be one statement of data-modifying CTEs: `WITH w AS (UPDATE`)
    first_write = next(
        i for i, q in enumerate(sql) if q.startswith(("UPDATE", "INSERT", "WITH w AS (UPDATE"))
    )
    reads = [q for q in sql[:first_write] if '"engine_ltmexecution"' in q]
    assert len(reads) == 1, reads
    assert LtmRun.objects.get(pk=run_id).state == "complete"


def test_an_append_by_an_execution_no_longer_claimed_is_refused_and_writes_nothing(user):
    """The append's insert asks whether its execution is still the claim (one statement):
    an execution since discarded (here: done) is refused with a clear error, even where its
    call is bad in itself, and the run is left as it was; the claimed one appends."""
    from engine.ltm.executor import append

    run_id = api.start_ltm("flou_join", user, {"size": 3})
    done = LtmAppend.objects.filter(execution__run_id=run_id).order_by("pk").first()
    execution = done.execution
    before = LtmRun.objects.get(pk=run_id)
    appends = LtmAppend.objects.count()

    with pytest.raises(FlowStateError, match="was discarded"):
        append(execution, done.target, done.key, "late", 99)
    with pytest.raises(FlowStateError, match="was discarded"):
        append(execution, done.target, "no such list", "late", 99)
    after = LtmRun.objects.get(pk=run_id)
    assert (after.version, after.seq) == (before.version, before.seq)
    assert LtmAppend.objects.count() == appends

    LtmExecution.objects.filter(pk=execution.pk).update(status="claimed")
    execution.refresh_from_db()
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        values, _ = append(execution, done.target, done.key, "late", 99)
    assert values[-1] == "late" and LtmAppend.objects.count() == appends + 1
    reads = [q["sql"] for q in captured if q["sql"].startswith("SELECT")]
    assert not [q for q in reads if '"engine_ltmexecution"' in q.split(" WHERE ")[0]], reads
    assert append(execution, done.target, done.key, "again", 99)[0] == values  # done before
