"""Stuck or slow: the thread holding each flow (engine.leases.Held), the heartbeat that lists
them (engine.liveness.beat, one UPDATE), who holds a running flow and what the housekeeping
will do with a flow in each state, and when (engine.flows.health)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from engine import api, config, liveness
from engine.flows import health
from engine.flows import lease as flow_lease
from engine.flows.status import FlowState
from engine.housekeeping import Housekeeper
from engine.leases import Held
from engine.models import Flow, Worker

# --- which thread holds what ----------------------------------------------------------------


def test_held_names_the_thread_holding_each_key_and_since_when():
    held = Held()
    before = timezone.now()
    inside = threading.Event()
    release = threading.Event()

    def work() -> None:
        with held.hold(7):
            inside.set()
            release.wait(30)

    worker = threading.Thread(target=work, name="worker-7")
    worker.start()
    assert inside.wait(30)
    with held.hold(8):
        threads = held.threads()
        assert set(threads) == {"7", "8"} and held.ids() == [7, 8]
        assert threads["7"]["thread"] == "worker-7"
        assert threads["8"]["thread"] == threading.current_thread().name
        since = parse_datetime(threads["7"]["since"])
        assert since is not None and before <= since <= timezone.now()
        # Held twice (a blocking loop and an offloaded tail): the latest hold is named.
        with held.hold(7):
            assert held.threads()["7"]["thread"] == threading.current_thread().name
        assert held.threads()["7"]["thread"] == "worker-7"
    release.set()
    worker.join(30)
    assert held.threads() == {} and held.ids() == []


@pytest.mark.django_db(transaction=True)
def test_a_beat_records_the_threads_in_one_update(django_assert_num_queries):
    liveness.beat([], {})  # registers this process (an UPDATE that finds nothing, an INSERT)
    threads = {"12": {"thread": "huey-1", "since": timezone.now().isoformat()}}
    with django_assert_num_queries(1):
        liveness.beat([12], threads)
    me = Worker.objects.get(pk=liveness.worker_id())
    assert me.held == [12] and me.threads == threads
    liveness.beat([])
    me.refresh_from_db()
    assert me.held == [] and me.threads == {}


@pytest.mark.django_db(transaction=True)
def test_the_housekeeping_beat_lists_the_thread_of_each_flow_held_here():
    housekeeper = Housekeeper()
    housekeeper.due = lambda duty, every: False  # type: ignore[method-assign]
    with flow_lease.holding(41):
        housekeeper.tick()
    me = Worker.objects.get(pk=liveness.worker_id())
    assert me.held == [41]
    assert me.threads["41"]["thread"] == threading.current_thread().name
    assert parse_datetime(me.threads["41"]["since"]) <= timezone.now()


# --- who holds a flow -------------------------------------------------------------------------


def _flow(user, script: str = "t_wait", **changes):
    """A flow at step 2, of `script`, with `changes` written to its row (its step 1 waits,
    inline: `script` itself is never performed here)."""
    routine = api.create_routine("health", ["t_wait", script], owner=user)
    flow = api.start_flow(routine, user)
    Flow.objects.filter(pk=flow.pk).update(position=1, **changes)
    flow.refresh_from_db()
    return flow


def _worker(flow_id: int, *, ago: float = 0.0, thread: str = "huey-worker-2") -> Worker:
    since = timezone.now() - timedelta(seconds=30)
    return Worker.objects.create(
        id="box:4242:ab12cd34",
        host="box",
        pid=4242,
        beat=timezone.now() - timedelta(seconds=ago),
        held=[flow_id],
        threads={str(flow_id): {"thread": thread, "since": since.isoformat()}},
    )


@pytest.mark.django_db(transaction=True)
def test_the_holder_of_a_running_flow_is_its_worker_and_thread(user):
    flow = _flow(user, state=FlowState.RUNNING, worker="box:4242:ab12cd34")
    row = _worker(flow.pk)
    who = health.holder(flow)
    assert who is not None
    assert (who["worker"], who["host"], who["pid"]) == (row.pk, "box", 4242)
    assert who["thread"] == "huey-worker-2" and who["holds"] and who["alive"]
    assert who["since"] == parse_datetime(row.threads[str(flow.pk)]["since"])
    assert who["beat"] == row.beat and 0 <= who["age"] < 60


@pytest.mark.django_db(transaction=True)
def test_a_holder_silent_for_longer_than_the_timeout_is_not_alive(user, settings):
    flow = _flow(user, state=FlowState.RUNNING, worker="box:4242:ab12cd34")
    # (a second more than the hour: the database's clock has millisecond precision on
    # SQLite, so "an hour ago" can come out a few microseconds short of it)
    _worker(flow.pk, ago=3601)
    who = health.holder(flow)
    assert who is not None and not who["alive"] and who["age"] >= 3600


@pytest.mark.django_db(transaction=True)
def test_nobody_holds_a_flow_that_does_not_run_or_whose_worker_is_gone(user):
    waiting = _flow(user, worker="box:4242:ab12cd34")
    _worker(waiting.pk)
    assert waiting.state == FlowState.WAITING and health.holder(waiting) is None
    gone = _flow(user, state=FlowState.RUNNING, worker="gone:1:x")
    assert health.holder(gone) is None
    unnamed = _flow(user, state=FlowState.RUNNING, worker="")
    assert health.holder(unnamed) is None


@pytest.mark.django_db(transaction=True)
def test_a_thread_missing_from_the_last_beat_is_none(user):
    flow = _flow(user, state=FlowState.RUNNING, worker="box:4242:ab12cd34")
    Worker.objects.create(id="box:4242:ab12cd34", host="box", pid=4242, held=[], threads={})
    who = health.holder(flow)
    assert who is not None and who["thread"] is None and who["since"] is None
    assert not who["holds"]


# --- what the housekeeping will do ------------------------------------------------------------


def _setting(name: str) -> str:
    return f"{config.seconds(name):g} s"


def _texts(items) -> str:
    return " | ".join(item["what"] for item in items)


@pytest.mark.django_db(transaction=True)
def test_a_finished_flow_has_nothing_planned(user):
    routine = api.create_routine("done", ["t_echo"], owner=user)
    flow = api.start_flow(routine, user)
    flow.refresh_from_db()
    assert flow.state == FlowState.COMPLETE
    assert health.plan(flow) == [{"at": None, "what": "Nothing: the flow has finished."}]


@pytest.mark.django_db(transaction=True)
def test_a_pending_flow_is_queued_again_if_not_started_by_its_queue_deadline(user):
    now = timezone.now()
    due = now + timedelta(minutes=10)
    flow = _flow(user, state=FlowState.PENDING, lease_until=due)
    items = health.plan(flow, now)
    assert items[0] == {
        "at": None,
        "what": "Queued to run step 2 (T wait): a worker takes it up when one is free.",
    }
    assert items[1]["at"] == due and "queues it again" in items[1]["what"]
    late = health.plan(flow, due + timedelta(seconds=1))
    assert late[1]["at"] is None
    assert f"the next sweep (every {_setting('SWEEP_SECONDS')}) queues it" in late[1]["what"]


@pytest.mark.django_db(transaction=True)
def test_a_retrying_flow_says_which_attempt_comes_when(user):
    routine = api.create_routine("retry", ["t_ui_needs_ok"], owner=user)
    flow = api.start_flow(routine, user)
    flow.refresh_from_db()
    assert flow.state == FlowState.RETRYING and flow.retry_at is not None
    items = health.plan(flow, timezone.now())
    assert items == [
        {
            "at": flow.retry_at,
            "what": "attempt 2 of 4 of step 1 (T ui needs ok) is queued to run (an operator "
            "may retry now or give up instead).",
        }
    ]
    due = health.plan(flow, flow.retry_at + timedelta(seconds=1))
    assert due[0]["at"] is None
    assert due[0]["what"].startswith("Attempt 2 of 4 of step 1 (T ui needs ok) is due")


@pytest.mark.django_db(transaction=True)
def test_a_waiting_flow_names_its_deadline_reminder_and_recheck(user):
    now = timezone.now()
    deadline, remind = now + timedelta(hours=2), now + timedelta(hours=1)
    flow = _flow(user, "t_checked", deadline=deadline, remind_at=remind)
    items = health.plan(flow, now)
    assert items[0]["at"] is None
    assert f"check() runs every {_setting('RECHECK_SECONDS')}" in items[0]["what"]
    assert [item["at"] for item in items[1:]] == [remind, deadline]
    assert "reminded" in items[1]["what"]
    assert "the flow fails as timed out" in items[2]["what"]
    timed = _flow(user, "t_times_out", deadline=deadline)
    assert "on_timeout() decides" in _texts(health.plan(timed, now))
    passed = health.plan(timed, deadline + timedelta(seconds=1))
    assert "Its deadline has passed" in _texts(passed)
    plain = _flow(user, "t_wait")
    assert _texts(health.plan(plain, now)) == (
        "Nothing: it waits for input (or an operator) with no deadline."
    )


@pytest.mark.django_db(transaction=True)
def test_a_running_flow_held_by_a_live_worker(user):
    now = timezone.now()
    limit = now + timedelta(seconds=3600)
    flow = _flow(
        user,
        "t_ui_hold",
        state=FlowState.RUNNING,
        worker="box:4242:ab12cd34",
        step_deadline=limit,
        lease_until=now + timedelta(seconds=60),
    )
    _worker(flow.pk)
    items = health.plan(flow, now)
    text = _texts(items)
    assert "Held by worker box (process 4242, thread huey-worker-2)" in text
    assert "its lease is renewed while it beats" in text
    timeout = _setting("WORKER_TIMEOUT_SECONDS")
    assert f"If that worker stops beating for {timeout}, the step is performed again" in text
    assert items[-1]["at"] == limit
    assert '"took longer than 3600 s"' in items[-1]["what"]
    assert "attempt 2 of 2 follows at once" in items[-1]["what"]
    # on its last attempt, a time limit fails the flow
    Flow.objects.filter(pk=flow.pk).update(attempt=2)
    flow.refresh_from_db()
    assert "no attempt is left, so the flow fails" in health.plan(flow, now)[-1]["what"]
    past = health.plan(flow, limit + timedelta(seconds=1))
    assert past[-1]["at"] is None and "Past its time limit" in past[-1]["what"]


@pytest.mark.django_db(transaction=True)
def test_a_running_flow_whose_worker_went_silent_or_never_beat(user):
    now = timezone.now()
    flow = _flow(
        user,
        "t_once",  # not rerunnable: an interrupted step fails
        state=FlowState.RUNNING,
        worker="box:4242:ab12cd34",
        lease_until=now + timedelta(seconds=60),
    )
    _worker(flow.pk, ago=600)
    text = _texts(health.plan(flow, now))
    assert f"last beat 600 s ago, more than {_setting('WORKER_TIMEOUT_SECONDS')}" in text
    assert "failed as interrupted (its script must not run twice)" in text
    Worker.objects.all().delete()
    items = health.plan(flow, now)
    assert items[-1]["at"] == flow.lease_until
    assert "its lease runs out unless a worker renews it" in items[-1]["what"]
    expired = health.plan(flow, flow.lease_until + timedelta(seconds=1))
    assert "Its lease has run out" in _texts(expired)


@pytest.mark.django_db(transaction=True)
def test_the_door_exports_the_holder_and_the_plan(user):
    flow = _flow(user)
    assert api.flow_holder(flow) is None
    assert api.housekeeping_plan(flow)[0]["what"].startswith("Nothing")
