"""Schedules on real consumer processes: a due schedule is fired by the consumers'
housekeeping exactly once, however many consumers run (the scale-out pass runs three): one
run, one flow, which completes, and nothing more on the beats that follow."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from engine import api
from engine.models import Flow, Schedule, ScheduleRun, Worker
from tests.conftest import wait_until

pytestmark = [pytest.mark.consumer, pytest.mark.bothmodes]


def beaten_since(moment) -> bool:
    """Whether every consumer beat after `moment` (a beat comes before its round's duties)."""
    workers = list(Worker.objects.values_list("beat", flat=True))
    return bool(workers) and all(beat > moment for beat in workers)


def test_due_schedules_fire_exactly_once_on_the_consumers(consumer, user):
    routine = api.create_routine("scheduled", ["t_echo"], owner=user)
    # Yearly, so that the next due time after the catch-up is far away: any second run
    # would be a due time fired twice.
    schedules = [
        api.create_schedule(routine, user, "0 0 1 1 *", data={"n": n}, name=f"s{n}")
        for n in range(4)
    ]
    overdue = timezone.now() - timedelta(minutes=5)
    Schedule.objects.filter(pk__in=[s.pk for s in schedules]).update(next_run=overdue)

    def all_done() -> bool:
        runs = ScheduleRun.objects.filter(schedule__in=schedules)
        done = Flow.objects.filter(routine=routine, state="complete").count()
        return runs.count() >= len(schedules) and done >= len(schedules)

    assert wait_until(all_done, timeout=120), consumer.logs()[-3000:]
    # Let every consumer go round its housekeeping at least once more.
    for _ in range(2):
        mark = timezone.now()
        assert wait_until(lambda mark=mark: beaten_since(mark), timeout=60), consumer.logs()[-3000:]

    performed = consumer.performed()
    for schedule in schedules:
        runs = list(ScheduleRun.objects.filter(schedule=schedule))
        assert len(runs) == 1, runs
        (run,) = runs
        assert (run.due, run.missed, run.error) == (overdue, 0, "")
        flow = Flow.objects.get(pk=run.flow_id)
        assert flow.state == "complete" and flow.owner_id == user.pk
        assert flow.data == schedule.data
        assert performed[(flow.pk, 0, "t_echo")] == 1
        schedule.refresh_from_db()
        assert schedule.next_run > timezone.now()
        assert schedule.last_run == overdue
    assert Flow.objects.filter(routine=routine).count() == len(schedules)
