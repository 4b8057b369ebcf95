"""Retries, time limits and idempotency keys on real consumer processes (in the scale-out
pass: PostgreSQL, Redis-backed Huey and 3 consumers)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from engine import api
from engine.models import Flow, FlowEvent
from tests.catalog import attempts_logged
from tests.conftest import wait_until

pytestmark = [pytest.mark.consumer, pytest.mark.bothmodes]


def state_of(flow) -> str:
    return Flow.objects.get(pk=flow.pk).state


def test_a_due_retry_survives_a_consumer_restart_and_fires_once(consumer, user):
    step = {
        "script": "t_retried",
        "params": {"fail_until": 1},
        "overrides": {"retry_delay": 2, "retry_jitter": 0},
    }
    flow = api.start_flow(api.create_routine("restart", [step], owner=user), user)
    assert wait_until(lambda: state_of(flow) == "retrying"), consumer.logs()[-3000:]
    # Everything is down while the retry falls due: at once (a graceful stop of three busy
    # consumers can outlast the 2 s delay, and the retry would fire before it).
    consumer.kill9()
    retry_at = Flow.objects.get(pk=flow.pk).retry_at
    assert retry_at is not None
    assert wait_until(lambda: timezone.now() > retry_at)
    assert state_of(flow) == "retrying"  # nothing ran it while no consumer was up
    consumer.start()
    assert wait_until(lambda: state_of(flow) == "complete"), consumer.logs()[-3000:]
    mine = [row for row in attempts_logged(consumer.env["TEST_PERFORM_LOG"]) if row[0] == flow.pk]
    assert [attempt for _, _, attempt, _ in mine] == [1, 2]
    assert len({key for *_, key in mine}) == 1
    assert FlowEvent.objects.filter(flow=flow, kind="step.retrying").count() == 1
    assert FlowEvent.objects.filter(flow=flow, kind="step.attempt_failed").count() == 1


def test_housekeeping_fails_hung_steps_at_their_time_limit_and_discards_them(consumer, user):
    """A blocking and an offloaded step that sleep far past a 1 s limit are failed by the
    consumers' housekeeping (the message without "it took": not the step's own late check),
    and what they return when they wake is never recorded."""
    flows = []
    for script in ("t_slow", "t_slow_offloaded"):
        step = {"script": script, "params": {"sleep": 5}, "overrides": {"time_limit": 1}}
        routine = api.create_routine(f"hung {script}", [step, "t_echo"], owner=user)
        flows.append(api.start_flow(routine, user))
    for flow in flows:
        assert wait_until(lambda flow=flow: state_of(flow) == "failed"), consumer.logs()[-3000:]
        failed = Flow.objects.get(pk=flow.pk)
        assert failed.error == "took longer than 1 s; its outcome is discarded"
        assert failed.step_deadline is None
    # The sleepers wake and try to commit: the flows stay failed with no result.
    logged = consumer.env["TEST_PERFORM_LOG"]
    assert wait_until(lambda: len(attempts_logged(logged)) >= 2)
    ids = [flow.pk for flow in flows]
    assert wait_until(
        lambda: (
            "outcome is discarded" in consumer.logs() or "changed while step" in consumer.logs()
        ),
        timeout=60,
    ), consumer.logs()[-3000:]
    for flow in Flow.objects.filter(pk__in=ids):
        assert flow.state == "failed" and flow.results == [None, None]
    assert not FlowEvent.objects.filter(flow_id__in=ids, kind="step.completed").exists()


@pytest.mark.crash
def test_a_step_performed_again_after_a_crash_keeps_its_idempotency_key(consumer, user):
    step = {"script": "t_slow", "params": {"sleep": 3}, "overrides": {"time_limit": None}}
    flow = api.start_flow(api.create_routine("crash key", [step], owner=user), user)
    logged = consumer.env["TEST_PERFORM_LOG"]
    assert wait_until(lambda: any(row[0] == flow.pk for row in attempts_logged(logged)))
    consumer.kill9()
    consumer.start()
    assert wait_until(lambda: state_of(flow) == "complete", timeout=120), consumer.logs()[-3000:]
    mine = [row for row in attempts_logged(logged) if row[0] == flow.pk]
    assert len(mine) >= 2  # performed again after the crash
    assert {(attempt, key) for _, _, attempt, key in mine} == {(1, mine[0][3])}
    assert Flow.objects.get(pk=flow.pk).results[0] == {"attempt": 1}
