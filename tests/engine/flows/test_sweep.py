"""The lease sweep on a real (SQLite-backed) Huey queue, with no consumer: the test takes each
task off the queue and runs it itself, so it can stand between the steps."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from engine import api
from engine.flows.sweep import sweep
from engine.models import Flow, FlowEvent


@pytest.fixture
def queue(transactional_db):
    """Huey's real queue instead of immediate mode; `run_next()` runs the oldest task."""
    HUEY.immediate = False
    HUEY.storage.flush_all()

    class Queue:
        def run_next(self) -> object:
            task = HUEY.dequeue()
            assert task is not None, "the queue is empty"
            HUEY.execute(task)
            return task

        def run_all(self) -> int:
            count = 0
            while HUEY.pending_count():
                self.run_next()
                count += 1
            return count

    try:
        yield Queue()
    finally:
        HUEY.storage.flush_all()
        HUEY.immediate = True


def expire(flow: Flow) -> None:
    Flow.objects.filter(pk=flow.pk).update(lease_until=timezone.now() - timedelta(seconds=1))


def test_a_late_job_still_queued_keeps_its_flow_and_still_runs(queue, user):
    flow = api.start_flow(api.create_routine("o", ["t_offloaded", "t_echo"], owner=user), user)
    queue.run_next()  # run_flow: claims the flow and queues the offloaded step's job
    flow.refresh_from_db()
    assert flow.state == "running" and flow.job_id and HUEY.pending_count() == 1
    expire(flow)  # the job waited in the queue longer than its lease
    assert sweep() == 0
    late = Flow.objects.get(pk=flow.pk)
    assert late.version == flow.version, "the job would find its flow changed and do nothing"
    assert late.lease_until > timezone.now() and late.job_id == flow.job_id
    queue.run_all()  # the job, then run_flow queued by its post-execute hook
    done = Flow.objects.get(pk=flow.pk)
    assert done.state == "complete" and done.results == [{"offloaded": 0}, done.results[1]]
    assert not FlowEvent.objects.filter(flow=flow, kind="flow.requeued").exists()


def test_a_lost_job_is_handed_on_and_its_step_runs_again(queue, user):
    flow = api.start_flow(api.create_routine("o", ["t_offloaded"], owner=user), user)
    queue.run_next()
    HUEY.storage.flush_queue()  # its worker took the job and died
    expire(flow)
    assert sweep() == 1
    requeued = Flow.objects.get(pk=flow.pk)
    assert requeued.state == "pending" and requeued.job_id == ""
    assert FlowEvent.objects.filter(flow=flow, kind="flow.requeued").count() == 1
    queue.run_all()
    assert Flow.objects.get(pk=flow.pk).state == "complete"


def test_an_interrupted_step_that_must_not_run_twice_fails_its_flow(queue, user):
    routine = api.create_routine("once", ["t_once"], owner=user)
    flow = api.start_flow(routine, user)
    Flow.objects.filter(pk=flow.pk).update(state="running", started_position=0)
    HUEY.storage.flush_queue()  # the worker that started it died with it
    expire(flow)
    assert sweep() == 1
    failed = Flow.objects.get(pk=flow.pk)
    assert failed.state == "failed" and failed.error.startswith("interrupted")


def test_a_pending_flow_whose_task_was_lost_is_queued_again(queue, user):
    flow = api.start_flow(api.create_routine("e", ["t_echo"], owner=user), user)
    HUEY.storage.flush_queue()
    expire(flow)
    assert sweep() == 1 and HUEY.pending_count() == 1
    queue.run_all()
    assert Flow.objects.get(pk=flow.pk).state == "complete"


def test_live_leases_are_left_alone(queue, user):
    flow = api.start_flow(api.create_routine("o", ["t_offloaded"], owner=user), user)
    queue.run_next()
    before = Flow.objects.get(pk=flow.pk)
    assert sweep() == 0
    after = Flow.objects.get(pk=flow.pk)
    assert (after.version, after.lease_until) == (before.version, before.lease_until)
