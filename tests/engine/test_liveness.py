"""Liveness of consumer processes: heartbeats, and the work of a worker whose beat stopped
handed on at once (not when its lease runs out)."""

from __future__ import annotations

import statistics
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from engine import api, liveness
from engine.flows.status import FlowState
from engine.housekeeping import Housekeeper
from engine.models import Flow, FlowEvent, FlowResult, LtmEvent, LtmExecution, LtmRun, Worker
from tests.conftest import wait_until


def _tick() -> None:
    """One round of housekeeping, its periodic duties (sweeps, re-checks) left out."""
    housekeeper = Housekeeper()
    housekeeper.due = lambda duty, every: False  # type: ignore[method-assign]
    housekeeper.tick()


@pytest.mark.django_db
def test_a_beat_registers_this_process_and_keeps_it_alive():
    _tick()
    me = Worker.objects.get()
    assert me.pk == liveness.worker_id() and me.pid > 0
    first = me.beat
    time.sleep(0.01)
    liveness.beat([])
    me.refresh_from_db()
    assert me.beat > first
    assert liveness.dead_workers() == []


@pytest.mark.django_db
def test_only_workers_silent_for_longer_than_the_timeout_are_dead(settings):
    now = timezone.now()
    Worker.objects.create(id="gone", host="h", pid=1, beat=now - timedelta(seconds=30))
    Worker.objects.create(id="quiet", host="h", pid=2, beat=now - timedelta(seconds=1))
    assert liveness.dead_workers() == ["gone"]
    # a worker never takes itself for dead, however long it paused
    Worker.objects.create(id=liveness.worker_id(), host="h", pid=3, beat=now - timedelta(1))
    assert liveness.dead_workers() == ["gone"]


@pytest.mark.django_db
def test_every_write_of_a_flow_names_the_process_in_charge(routine, user):
    flow = api.start_flow(routine("t_wait"), user)
    assert flow.worker == liveness.worker_id()
    assert Flow.objects.get(pk=flow.pk).worker == liveness.worker_id()


@pytest.mark.django_db(transaction=True)
def test_a_dead_workers_running_flow_is_handed_on_at_once_despite_a_long_lease(routine, user):
    flow = api.start_flow(routine("t_echo", "t_echo"), user)  # runs inline (immediate mode)
    assert Flow.objects.get(pk=flow.pk).state == "complete"
    # The same flow as a killed worker left it: running step 1, its lease far in the future.
    Worker.objects.create(id="dead", host="h", pid=1, beat=timezone.now() - timedelta(60))
    Flow.objects.filter(pk=flow.pk).update(
        state=FlowState.RUNNING,
        position=1,
        lease_until=timezone.now() + timedelta(hours=1),
        worker="dead",
        finished=None,
    )
    FlowResult.objects.filter(flow=flow, position__gte=1).delete()
    live = Flow.objects.create(
        routine=flow.routine,
        routine_version=1,
        steps=flow.steps,
        owner=user,
        state=FlowState.RUNNING,
        lease_until=timezone.now() + timedelta(hours=1),
        worker="someone-alive",
    )
    api.sweep()
    assert Flow.objects.get(pk=flow.pk).state == "running"  # the lease alone says: wait

    _tick()

    flow.refresh_from_db()
    assert flow.state == "complete" and len(flow.results) == 2
    requeued = FlowEvent.objects.get(flow=flow, kind="flow.requeued")
    assert requeued.data["why"] == "its worker stopped"
    after = FlowEvent.objects.filter(flow=flow, seq__gt=requeued.seq, kind="step.completed")
    assert [event.data["step"] for event in after] == [1]  # performed again, recorded once
    assert not Worker.objects.filter(pk="dead").exists()
    assert Flow.objects.get(pk=live.pk).state == "running"  # another worker's: left alone


@pytest.mark.django_db(transaction=True)
def test_a_dead_workers_claimed_ltm_execution_is_queued_again_at_once(user):
    run_id = api.start_ltm("my_ltm", user, {})  # immediate mode: it runs to its end inline
    execution = LtmExecution.objects.filter(run_id=run_id).order_by("id").last()
    Worker.objects.create(id="dead", host="h", pid=1, beat=timezone.now() - timedelta(60))
    LtmExecution.objects.filter(pk=execution.pk).update(
        status="claimed", worker="dead", lease_until=timezone.now() + timedelta(hours=1)
    )
    LtmRun.objects.filter(pk=run_id).update(state="running")

    _tick()

    requeued = LtmEvent.objects.filter(run_id=run_id, kind="execution.requeued").get()
    assert requeued.data["reason"] == "its worker stopped"
    assert LtmExecution.objects.get(pk=execution.pk).status != "claimed"


@pytest.mark.django_db(transaction=True)
def test_a_clean_stop_signs_the_worker_off():
    keeper = Housekeeper()
    keeper.heartbeat = 0.01
    keeper.start()
    assert wait_until(lambda: Worker.objects.filter(pk=liveness.worker_id()).exists(), 10)
    keeper.stop()
    keeper.join(10)
    assert not Worker.objects.filter(pk=liveness.worker_id()).exists()


# -- on real consumer processes ------------------------------------------------------------


def _worker_of(pid: int) -> str:
    assert wait_until(lambda: Worker.objects.filter(pid=pid).exists(), timeout=30)
    return Worker.objects.get(pid=pid).pk


@pytest.mark.consumer
@pytest.mark.crash
@pytest.mark.parametrize("script", ["t_sleep", "t_offloaded"])
def test_a_step_held_by_a_killed_consumer_resumes_on_another_long_before_its_lease(
    engine_queue, user, script
):
    consumer = engine_queue
    # A lease of ten minutes: only the heartbeat can hand the step on in this test's time.
    consumer.env["FLOW_LEASE_SECONDS"] = "600"
    # Two consumers of two threads each, four flows whose step 1 takes a while: each
    # consumer runs two of them at once.
    doomed, survivor = consumer.start_one(), consumer.start_one()
    doomed_id, survivor_id = _worker_of(doomed.pid), _worker_of(survivor.pid)
    steps = ["t_echo", {"script": script, "params": {"sleep": 3}}, "t_echo"]
    routine = api.create_routine("heartbeat", steps, owner=user)
    ids = [api.start_flow(routine, user).pk for _ in range(4)]

    def performed_by_doomed() -> list[int]:
        # in charge, and performing step 1 (an offloaded job is taken before it performs)
        held = Flow.objects.filter(pk__in=ids, state="running", worker=doomed_id, position=1)
        performed = consumer.performed()
        return [pk for pk in held.values_list("pk", flat=True) if (pk, 1, script) in performed]

    assert wait_until(lambda: bool(performed_by_doomed()))
    victims = performed_by_doomed()
    consumer.kill9(doomed)
    killed = timezone.now()

    assert wait_until(
        lambda: Flow.objects.filter(pk__in=ids, state="complete").count() == len(ids), 120
    ), consumer.logs()[-4000:]
    resumed = [
        (
            FlowEvent.objects.filter(flow_id=pk, created__gt=killed).order_by("seq").first().created
            - killed
        ).total_seconds()
        for pk in victims
    ]
    for pk in victims:
        handed = FlowEvent.objects.get(flow_id=pk, kind="flow.requeued")
        assert handed.data["why"] == "its worker stopped"
        assert FlowEvent.objects.filter(flow_id=pk, kind="step.completed").count() == 3
        assert Flow.objects.get(pk=pk).worker != doomed_id
    assert not Worker.objects.filter(pk=doomed_id).exists()
    assert Worker.objects.filter(pk=survivor_id).exists()
    print(
        f"\n{script}: {len(victims)} step(s) held by a consumer killed with SIGKILL resumed on "
        f"another after {statistics.median(resumed):.1f} s (median), {max(resumed):.1f} s (max); "
        f"lease 600 s, heartbeat {liveness.heartbeat_seconds()} s, "
        f"timeout {liveness.timeout().total_seconds()} s"
    )
