"""The time machine of LTM runs (engine.ltm.timemachine through engine.api): a run as it was
after any event, rolled back to it, or copied from it; Huey in immediate mode.

The truth `ltm_at` is held to is what `load_ltm` answered right after each write committed:
an event sink reads the run as each batch of events is published."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.test import override_settings

from engine import api
from engine import events as engine_events
from engine.core.errors import FlowStateError, StaleFlowError
from engine.core.ltm.node import LTM
from engine.ltm.executor import DjangoRuntime
from engine.models import LtmCheckpoint, LtmEvent, LtmExecution, LtmRun
from tests.engine.ltm.support import django_runtime, statuses  # noqa: F401  (autouse fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


def picture(view) -> dict[str, Any]:
    """What a view says of a run: the global state, each state's status, data and error."""
    return {
        "state": dict(view.state),
        "run": view.run.state,
        "instances": {
            fqn: (i.status, dict(i.state), i.error, i.entry) for fqn, i in view.instances.items()
        },
    }


@pytest.fixture
def truth():
    """seq -> the picture of `load_ltm` when the write ending at that seq had committed."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}

    def sink(batch):
        for event in batch:
            if event.get("type") == "ltm.event":
                run_id = event["run"]
        last = max(e["seq"] for e in batch if e.get("type") == "ltm.event")
        seen[(run_id, last)] = picture(api.load_ltm(run_id))

    engine_events.connect(sink)
    yield seen
    engine_events.disconnect(sink)


def writes_of(truth, run_id):
    return sorted(seq for (run, seq) in truth if run == run_id)


def check_every_event(truth, run_id, user):
    """ltm_at(seq) for every seq of the run equals what the run was after that seq's write."""
    run = LtmRun.objects.get(pk=run_id)
    ends = writes_of(truth, run_id)
    assert ends and ends[-1] == run.seq
    for seq in range(1, run.seq + 1):
        end = next(e for e in ends if e >= seq)
        assert picture(api.ltm_at(run_id, seq, user)) == truth[(run_id, end)], seq
    return ends


@pytest.mark.parametrize("every", [1, 3, 100])
def test_ltm_at_shows_the_run_as_committed_after_every_event(user, truth, every):
    with override_settings(FLOWSTUDIO={**_flowstudio(), "LTM_CHECKPOINT_EVERY": every}):
        run_id = api.start_ltm("flou_join", user, {"size": 4})
        ends = check_every_event(truth, run_id, user)

    assert len(ends) > 10
    view = api.ltm_at(run_id, ends[0], user)
    assert view.run.state == "pending" and view.status == "queued"
    gather = [api.ltm_at(run_id, seq, user) for seq in ends]
    counts = [
        len(v.instances["flou_join.gather"].state.get("got", []))
        for v in gather
        if "flou_join.gather" in v.instances
    ]
    assert counts[-1] == 4 and sorted(set(counts)) == [0, 1, 2, 3, 4]  # the list as it grew
    # A snapshot when a write crosses a multiple of `every` (one write may cross several).
    last = LtmRun.objects.get(pk=run_id).seq
    kept = list(LtmCheckpoint.objects.filter(run_id=run_id).values_list("seq", flat=True))
    assert len(kept) <= last // every and (kept or every > last)
    assert all(seq in ends for seq in kept)  # always at the end of a write
    longest = max(b - a for a, b in zip([0, *ends], ends, strict=False))
    assert all(b - a < every + longest for a, b in zip([0, *kept], [*kept, last], strict=False))


def _flowstudio():
    from django.conf import settings

    return dict(settings.FLOWSTUDIO)


def test_ltm_at_draws_the_diagram_as_it_was(user):
    run_id = api.start_ltm("flou_pairs", user)
    start = LtmRun.objects.get(pk=run_id).seq
    api.fire_transition(run_id, "next_{k}", user, params=[{"k": "1"}])

    then = api.ltm_at(run_id, start, user)

    assert "second_1" not in then.to_dot()
    assert "second_1" in api.load_ltm(run_id).to_dot()
    assert then.run.seq == start and then.state == {}


def test_a_seq_outside_the_history_is_a_clear_error_and_a_foreign_run_is_refused(user, other_user):
    run_id = api.start_ltm("flou_pairs", user)
    last = LtmRun.objects.get(pk=run_id).seq

    for bad in (0, last + 1, -1, "x", 2.5, True, None):
        with pytest.raises(ValueError, match=f"1 to {last}"):
            api.ltm_at(run_id, bad, user)
        with pytest.raises(ValueError, match=f"1 to {last}"):
            api.rollback_ltm(run_id, bad, user, "why")
        if bad is not None:  # a copy's seq defaults to the latest
            with pytest.raises(ValueError, match=f"1 to {last}"):
                api.copy_ltm(run_id, user, bad)
    for call in (
        lambda: api.ltm_at(run_id, 1, other_user),
        lambda: api.rollback_ltm(run_id, 1, other_user, "why"),
        lambda: api.copy_ltm(run_id, other_user),
    ):
        with pytest.raises(PermissionDenied):
            call()
    with pytest.raises(LtmRun.DoesNotExist):
        api.ltm_at("not-a-uuid", 1, user)
    assert LtmRun.objects.count() == 1 and LtmRun.objects.get(pk=run_id).seq == last


def test_rollback_restores_statuses_and_state_and_the_run_goes_on_from_there(user, truth):
    run_id = api.start_ltm("flou_pairs", user)
    started = LtmRun.objects.get(pk=run_id).seq
    api.fire_transition(run_id, "next_{k}", user, params=[{"k": "1"}])
    api.fire_transition(run_id, "next_{k}", user, params=[{"k": "2"}])
    before = picture(api.load_ltm(run_id))
    before_seq = LtmRun.objects.get(pk=run_id).seq

    api.rollback_ltm(run_id, started, user, "second thoughts")

    now = picture(api.load_ltm(run_id))
    assert now == truth[(run_id, started)]
    assert "flou_pairs.second_1" not in now["instances"]  # states made since are gone
    event = LtmEvent.objects.filter(run_id=run_id, kind="rollback").get()
    assert event.actor == user
    assert event.data["reason"] == "second thoughts" and event.data["to"] == started
    assert event.data["from"] == before_seq
    # It goes on from there: the transitions can be fired again.
    api.fire_transition(run_id, "next_{k}", user, params=[{"k": "2"}])
    assert statuses(run_id)["flou_pairs.second_2"] == "active"
    assert "flou_pairs.second_1" not in statuses(run_id)

    # Nothing was erased: the rollback itself is rolled back to the run as it was before it.
    api.rollback_ltm(run_id, before_seq, user, "undo the rollback")
    assert picture(api.load_ltm(run_id)) == before
    assert LtmEvent.objects.filter(run_id=run_id, kind="rollback").count() == 2
    check_every_event(truth, run_id, user)


def test_rollback_into_a_join_restores_the_list_and_requeues_what_was_queued_then(user):
    run_id = api.start_ltm("flou_join", user, {"size": 4})
    appended = list(LtmEvent.objects.filter(run_id=run_id, kind="state.appended").order_by("seq"))
    two = appended[1].seq
    then = api.ltm_at(run_id, two, user)
    assert len(then.instances["flou_join.gather"].state["got"]) == 2
    queued_then = LtmExecution.objects.filter(run_id=run_id, queued_seq__lte=two).exclude(
        closed_seq__lte=two
    )
    assert queued_then.count() >= 2  # the other arrivals were still to come

    api.rollback_ltm(run_id, two, user, "replay the join")

    # Immediate mode: what was queued then ran again at once, and the join filled up exactly.
    view = api.load_ltm(run_id)
    assert view.run.state == "complete", view.run.error
    got = view.instances["flou_join.gather"].state["got"]
    assert sorted(int(item["k"]) for item in got) == [1, 2, 3, 4]
    assert view.instances["flou_join.finished"].status == "active"
    rollback = LtmEvent.objects.get(run_id=run_id, kind="rollback")
    assert rollback.data["requeued"]


def test_rollback_is_refused_for_a_killed_run_and_when_nothing_would_change(user):
    run_id = api.start_ltm("flou_pairs", user)
    last = LtmRun.objects.get(pk=run_id).seq
    with pytest.raises(FlowStateError, match="nothing to roll back"):
        api.rollback_ltm(run_id, last, user, "no-op")
    with pytest.raises(ValueError, match="reason"):
        api.rollback_ltm(run_id, 1, user, "  ")
    api.kill_ltm(run_id, user, "stop")
    killed = LtmRun.objects.get(pk=run_id)

    with pytest.raises(FlowStateError, match="killed"):
        api.rollback_ltm(run_id, 1, user, "revive")

    after = LtmRun.objects.get(pk=run_id)
    assert (after.seq, after.version, after.state) == (killed.seq, killed.version, "killed")


def test_a_rollback_of_a_run_that_moved_on_since_the_caller_looked_is_a_conflict(user):
    run_id = api.start_ltm("flou_pairs", user)
    seen = LtmRun.objects.get(pk=run_id).seq
    api.fire_transition(run_id, "next_{k}", user, params=[{"k": "1"}])
    moved = LtmRun.objects.get(pk=run_id)

    with pytest.raises(StaleFlowError, match="moved on"):
        api.rollback_ltm(run_id, 1, user, "late", expected_seq=seen)

    assert LtmRun.objects.get(pk=run_id).version == moved.version


def test_a_running_execution_must_be_confirmed_discarded(user):
    run_id = api.start_ltm("flou_pairs", user)
    api.fire_transition(run_id, "next_{k}", user, params=[{"k": "1"}])
    # As if a worker were executing second_1 now.
    execution = LtmExecution.objects.filter(run_id=run_id, fqn="flou_pairs.second_1").get()
    LtmExecution.objects.filter(pk=execution.pk).update(status="claimed", closed_seq=None)
    version = LtmRun.objects.get(pk=run_id).version

    with pytest.raises(FlowStateError, match="second_1 is executing"):
        api.rollback_ltm(run_id, 1, user, "undo")
    assert LtmRun.objects.get(pk=run_id).version == version

    api.rollback_ltm(run_id, 1, user, "undo", discard_running=True)
    execution.refresh_from_db()
    assert execution.status == "stale"
    event = LtmEvent.objects.get(run_id=run_id, kind="rollback")
    assert event.data["discarded"] == ["flou_pairs.second_1"]


def test_copy_makes_an_independent_run_of_the_user_from_any_point(user, make_user):
    operator = make_user("olga", is_staff=True)
    run_id = api.start_ltm("flou_pairs", user)
    started = LtmRun.objects.get(pk=run_id).seq
    api.fire_transition(run_id, "next_{k}", user, params=[{"k": "1"}])
    source_before = picture(api.load_ltm(run_id))
    executions_before = LtmExecution.objects.count()

    copy_id = api.copy_ltm(run_id, operator, started)

    copy = LtmRun.objects.get(pk=copy_id)
    assert copy.owner == operator and copy.name == "flou_pairs" and copy_id != run_id
    assert (
        picture(api.load_ltm(copy_id))["instances"]
        == picture(api.ltm_at(run_id, started, user))["instances"]
    )
    assert LtmExecution.objects.count() == executions_before  # nothing ran again
    assert picture(api.load_ltm(run_id)) == source_before  # the source is untouched
    copied = LtmEvent.objects.get(run_id=copy_id, kind="run.copied")
    assert copied.data["from_run"] == run_id and copied.data["from_seq"] == started
    assert copied.actor == operator
    # Independent: moving the copy leaves the source as it is.
    api.fire_transition(copy_id, "next_{k}", operator, params=[{"k": "2"}])
    assert statuses(copy_id)["flou_pairs.second_2"] == "active"
    assert "flou_pairs.second_2" not in statuses(run_id)
    assert api.copy_ltm(run_id, user) != copy_id  # the latest point by default


def test_a_copy_from_inside_a_join_finishes_it_by_itself(user):
    run_id = api.start_ltm("flou_join", user, {"size": 4})
    first = LtmEvent.objects.filter(run_id=run_id, kind="state.appended").order_by("seq")[0]

    copy_id = api.copy_ltm(run_id, user, first.seq)

    view = api.load_ltm(copy_id)
    assert view.run.state == "complete", view.run.error
    got = view.instances["flou_join.gather"].state["got"]
    assert sorted(int(item["k"]) for item in got) == [1, 2, 3, 4]
    copied = Counter(e.status for e in LtmExecution.objects.filter(run_id=copy_id))
    assert copied == {"done": sum(copied.values())} and sum(copied.values()) >= 3


def test_a_root_class_defined_again_in_a_loop_starts_runs_of_the_latest_definition(user):
    seen = []
    for n in range(3):

        class Looped(LTM):
            name = "looped_root"
            marker = n

            def run(self, **payload: Any) -> None:
                self.update_state({"marker": type(self).marker})

        with pytest.warns(RuntimeWarning) if n else _nothing():
            run_id = Looped(runtime=DjangoRuntime(owner=user)).start()
        seen.append(api.load_ltm(run_id).state["marker"])
    assert seen == [0, 1, 2]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_rollback_racing_another_write_is_a_conflict_and_writes_nothing(user, monkeypatch):
    from django.db.models import F

    from engine.ltm import timemachine

    run_id = api.start_ltm("flou_pairs", user)
    start = LtmRun.objects.get(pk=run_id).seq
    api.fire_transition(run_id, "next_{k}", user, params=[{"k": "1"}])
    before = LtmRun.objects.get(pk=run_id)
    real = timemachine.moment

    def raced(run, seq):  # another writer commits between the rollback's read and its write
        LtmRun.objects.filter(pk=run.pk).update(version=F("version") + 1)
        return real(run, seq)

    monkeypatch.setattr(timemachine, "moment", raced)

    with pytest.raises(StaleFlowError, match="changed meanwhile"):
        api.rollback_ltm(run_id, start, user, "racing")

    after = LtmRun.objects.get(pk=run_id)
    assert after.seq == before.seq and after.version == before.version + 1
    assert not LtmEvent.objects.filter(run_id=run_id, kind="rollback").exists()


def test_a_rollback_that_rewrites_much_of_the_run_is_checkpointed(user, truth):
    """Besides every LTM_CHECKPOINT_EVERY events, a write that changes at least
    max(20, half the run's) records keeps a snapshot: `ltm_at` after a series of rollbacks
    replays none of them."""
    with override_settings(FLOWSTUDIO={**_flowstudio(), "LTM_CHECKPOINT_EVERY": 10_000}):
        run_id = api.start_ltm("flou_join", user, {"size": 30})
        forked = set(LtmCheckpoint.objects.filter(run_id=run_id).values_list("seq", flat=True))
        assert len(forked) == 1  # the fork created 30 of its 34 instances

        api.rollback_ltm(run_id, min(forked), user, "run the branches again")  # 30 changed

        rollback = LtmEvent.objects.get(run_id=run_id, kind="rollback")
        end = LtmEvent.objects.filter(run_id=run_id, seq__gte=rollback.seq, change__isnull=False)
        kept = set(LtmCheckpoint.objects.filter(run_id=run_id).values_list("seq", flat=True))
        assert kept - forked == {end.order_by("seq")[0].seq}
        check_every_event(truth, run_id, user)


def test_a_write_stores_only_the_records_that_changed_and_changes_of_type_too(user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from engine.ltm import store

    run_id = api.start_ltm("flou_pairs", user)
    snap = store.read(run_id)
    records = snap.records()
    with CaptureQueriesContext(connection) as queries:
        store._write_records(snap, records)  # as stored: nothing to write
    assert not [q for q in queries if q["sql"].startswith("UPDATE")]

    first = next(r for r in records if "." in r.fqn)
    changed = [replace(first, state={"n": 1, "x": [1]}), replace(first, state={"n": True})]
    for record in changed:
        store._write_records(snap, [record])  # (no version bumped: the store's rows, then)
        store.committed.clear()
        again = store.read(run_id).rows[first.fqn]
        assert again.state == record.state
        assert [type(v) for v in again.state.values()] == [type(v) for v in record.state.values()]


@pytest.mark.parametrize("every", [1, 100])
def test_a_joins_arrivals_keep_the_value_they_brought_not_the_list(user, truth, every):
    """An arrival's append is kept in the history as the value it appended, and the changes
    of the join's status carry its status, not its state: the history grows by a constant
    per arrival, not by the list, and every event still shows the run as it was."""
    with override_settings(FLOWSTUDIO={**_flowstudio(), "LTM_CHECKPOINT_EVERY": every}):
        run_id = api.start_ltm("flou_join", user, {"size": 6})
        check_every_event(truth, run_id, user)
        root_run = api.start_ltm("slow_fan_out", user, {"size": 3, "sleep": 0})  # the root's
        check_every_event(truth, root_run, user)

    changes = LtmEvent.objects.filter(run_id=run_id).exclude(change=None)
    appended = [c.change for c in changes.filter(kind="state.appended")]
    assert len(appended) == 6
    assert all(c["records"] == [] and len(c["appended"]) == 1 for c in appended)
    assert sorted(c["appended"][0]["value"]["k"] for c in appended) == list("123456")
    for change in changes.values_list("change", flat=True):
        for record in change["records"]:
            if record["fqn"] == "flou_join.gather":
                assert record.get("state", {}).get("got", []) == [], change  # never the list
    roots = LtmEvent.objects.filter(run_id=root_run, kind="state.appended")
    assert sorted(e.change["appended"][0]["fqn"] for e in roots) == ["slow_fan_out"] * 6
    assert api.load_ltm(root_run).state["finished"] and api.load_ltm(run_id).run.state == "complete"
