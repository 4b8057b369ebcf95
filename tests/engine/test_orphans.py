"""Work whose queued task a dying consumer took from the queue before claiming it: found by
two checks a worker timeout apart and queued again. On a real (SQLite-backed) Huey queue with
no consumer: `HUEY.dequeue()` without executing is exactly what a consumer killed at that
moment leaves behind."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from engine import api
from engine.models import Flow, FlowEvent, LtmExecution, LtmRun, Worker
from engine.orphans import OrphanWatch
from tests.engine.flows.test_sweep import queue  # noqa: F401  (the fixture)

PATIENCE = 0.2


@pytest.fixture(autouse=True)
def short_timeout(settings):
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "WORKER_TIMEOUT_SECONDS": PATIENCE}


def twice(watch: OrphanWatch) -> tuple[int, int]:
    first = watch.check()
    time.sleep(PATIENCE * 1.5)
    return first, watch.check()


def test_a_run_taken_from_the_queue_and_lost_is_queued_again(queue, user):  # noqa: F811
    flow = api.start_flow(api.create_routine("e", ["t_echo", "t_echo"], owner=user), user)
    assert HUEY.dequeue() is not None  # taken by a consumer that died at once
    assert twice(OrphanWatch()) == (0, 1)
    assert queue.run_all() == 1
    flow.refresh_from_db()
    assert flow.state == "complete"
    assert FlowEvent.objects.filter(flow=flow, kind="step.completed").count() == 2


def test_a_run_still_in_the_queue_is_left_alone(queue, user):  # noqa: F811
    api.start_flow(api.create_routine("e", ["t_echo"], owner=user), user)
    assert twice(OrphanWatch()) == (0, 0)
    assert HUEY.pending_count() == 1


def test_an_offloaded_job_taken_and_lost_is_handed_on(queue, user):  # noqa: F811
    flow = api.start_flow(api.create_routine("o", ["t_offloaded", "t_echo"], owner=user), user)
    queue.run_next()  # the claim, which queues the offloaded job
    assert Flow.objects.get(pk=flow.pk).job_id
    assert HUEY.dequeue() is not None  # the job, lost
    assert twice(OrphanWatch()) == (0, 1)
    handed = FlowEvent.objects.get(flow=flow, kind="flow.requeued")
    assert handed.data["why"] == "its queued job was lost"
    queue.run_all()
    flow.refresh_from_db()
    assert flow.state == "complete" and flow.results[0] == {"offloaded": 0}


def test_an_offloaded_job_a_live_worker_performs_is_left_alone(queue, user):  # noqa: F811
    flow = api.start_flow(api.create_routine("o", ["t_offloaded"], owner=user), user)
    queue.run_next()
    assert HUEY.dequeue() is not None  # taken by a live worker, still performing it
    Worker.objects.create(id="busy", host="h", pid=1, beat=timezone.now(), held=[flow.pk])
    watch = OrphanWatch()
    assert watch.check() == 0
    for _ in range(2):
        time.sleep(PATIENCE * 0.6)
        Worker.objects.filter(pk="busy").update(beat=timezone.now())
        assert watch.check() == 0
    assert not FlowEvent.objects.filter(flow=flow, kind="flow.requeued").exists()


def test_work_that_moves_on_between_checks_is_not_touched(queue, user):  # noqa: F811
    flow = api.start_flow(api.create_routine("w", ["t_wait", "t_echo"], owner=user), user)
    assert HUEY.dequeue() is not None
    watch = OrphanWatch()
    assert watch.check() == 0
    api.kill_flow(flow, user, "no longer needed")  # an operator acts meanwhile
    time.sleep(PATIENCE * 1.5)
    assert watch.check() == 0
    assert Flow.objects.get(pk=flow.pk).state == "killed"


def test_a_queued_ltm_execution_taken_and_lost_is_sent_again(queue, user):  # noqa: F811
    run_id = api.start_ltm("my_ltm", user, {})
    assert LtmExecution.objects.filter(run_id=run_id, status="queued").count() == 1
    assert HUEY.dequeue() is not None
    assert twice(OrphanWatch()) == (0, 1)
    queue.run_all()
    # the root ran after all, and its state after it: the machine went on to its end state
    assert LtmRun.objects.get(pk=run_id).global_state == {"global_key": "global_value"}
    assert not LtmExecution.objects.filter(run_id=run_id, status="queued").exists()
    assert LtmExecution.objects.filter(run_id=run_id, status="done").count() >= 2


def test_work_lost_again_after_it_moved_is_found_by_its_new_mark(queue, user):  # noqa: F811
    flow = api.start_flow(api.create_routine("w", ["t_echo"], owner=user), user)
    assert HUEY.dequeue() is not None
    watch = OrphanWatch()
    assert watch.check() == 0
    api.kill_flow(flow, user)
    api.retry(flow, user)  # pending again, with a new version, and its run lost again
    assert HUEY.dequeue() is not None
    assert twice(watch) == (0, 1)
