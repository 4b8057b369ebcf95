"""Automatic retries with backoff, time limits and idempotency keys, inline (Huey in immediate
mode: each queued run happens at once in this process)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from engine import api
from engine.core.errors import FlowStateError
from engine.core.flows.retry import RetryPolicy, policy_for, setting_problem
from engine.core.flows.script import ScriptDefinitionError, Task
from engine.flows.routines import RoutineStepError
from engine.flows.runner import fire_retries
from engine.models import Flow, FlowEvent
from tests import catalog

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_attempts():
    catalog.ATTEMPTS.clear()
    yield
    catalog.ATTEMPTS.clear()


def start(user, *steps, data=None):
    routine = api.create_routine("retries", list(steps), owner=user)
    return Flow.objects.get(pk=api.start_flow(routine, user, data).pk)


def kinds(flow):
    return list(FlowEvent.objects.filter(flow=flow).order_by("seq").values_list("kind", flat=True))


def attempts_of(flow):
    return [(attempt, key) for pk, _, attempt, key in catalog.ATTEMPTS if pk == flow.pk]


def test_a_failing_step_is_retried_at_once_until_it_succeeds(user):
    flow = start(user, {"script": "t_retried", "params": {"fail_until": 2}}, "t_echo")
    assert flow.state == "complete"
    assert flow.results[0]["attempt"] == 3
    seen = attempts_of(flow)
    assert [attempt for attempt, _ in seen] == [1, 2, 3]
    # One visit of the step: one idempotency key for all its attempts.
    assert len({key for _, key in seen}) == 1
    assert flow.results[0]["key"] == seen[0][1]
    failed = FlowEvent.objects.filter(flow=flow, kind="step.attempt_failed").order_by("seq")
    assert [(e.data["attempt"], e.data["attempts"], e.data["retry"]) for e in failed] == [
        (1, 4, "now"),
        (2, 4, "now"),
    ]
    assert "ValueError: broken (attempt 1)" in failed[0].message
    assert "flow.failed" not in kinds(flow)


def test_a_false_return_is_a_failure_that_is_retried(user):
    flow = start(user, {"script": "t_retried", "params": {"fail_until": 1, "how": "false"}})
    assert flow.state == "complete"
    failed = FlowEvent.objects.get(flow=flow, kind="step.attempt_failed")
    assert failed.data["error"] == "not yet (attempt 1)"


def test_kill_is_never_retried(user):
    flow = start(user, {"script": "t_retried", "params": {"how": "kill"}})
    assert flow.state == "killed"
    assert flow.error == "no point retrying"
    assert [attempt for attempt, _ in attempts_of(flow)] == [1]
    assert "step.attempt_failed" not in kinds(flow)


def test_attempts_run_out_and_the_flow_fails_with_the_last_error(user):
    flow = start(user, {"script": "t_retried", "params": {"fail_until": 99}})
    assert flow.state == "failed"
    assert [attempt for attempt, _ in attempts_of(flow)] == [1, 2, 3, 4]
    assert flow.error == "ValueError: broken (attempt 4)"
    assert kinds(flow).count("step.attempt_failed") == 3
    assert kinds(flow)[-1] == "flow.failed"


def test_retry_on_retries_only_the_exception_types_it_names(user):
    other = start(user, {"script": "t_retried_connection", "params": {"fail_until": 1}})
    assert other.state == "failed"  # a ValueError is not a ConnectionError
    assert [attempt for attempt, _ in attempts_of(other)] == [1]
    named = start(
        user, {"script": "t_retried_connection", "params": {"fail_until": 1, "how": "connection"}}
    )
    assert named.state == "complete"
    assert [attempt for attempt, _ in attempts_of(named)] == [1, 2]
    # A (False, value) return is a failure retry_on does not filter.
    false = start(
        user, {"script": "t_retried_connection", "params": {"fail_until": 1, "how": "false"}}
    )
    assert false.state == "complete"


def test_a_delayed_retry_waits_for_its_due_time_with_backoff(user):
    began = timezone.now()
    with time_machine.travel(began, tick=False) as clock:
        flow = start(user, {"script": "t_retried_later", "params": {"fail_until": 2}})
        assert flow.state == "retrying"
        assert flow.attempt == 2
        assert flow.retry_at == began + timedelta(seconds=60)
        assert flow.error == "ValueError: broken (attempt 1)"
        assert api.run_housekeeping()["retries"] == 0  # not due yet
        assert Flow.objects.get(pk=flow.pk).state == "retrying"

        clock.move_to(began + timedelta(seconds=61))
        assert api.run_housekeeping()["retries"] == 1
        flow.refresh_from_db()
        # The second attempt failed too: the next delay is twice the first.
        assert flow.state == "retrying"
        assert flow.attempt == 3
        assert flow.retry_at == began + timedelta(seconds=61 + 120)
        assert fire_retries() == 0  # exactly once: nothing is due any more

        clock.move_to(began + timedelta(seconds=61 + 121))
        assert fire_retries() == 1
        flow.refresh_from_db()
    assert flow.state == "complete"
    assert [attempt for attempt, _ in attempts_of(flow)] == [1, 2, 3]
    retrying = FlowEvent.objects.filter(flow=flow, kind="step.retrying").order_by("seq")
    assert [e.message for e in retrying] == ["attempt 2 of 3", "attempt 3 of 3"]


def test_retry_now_and_give_up(user):
    flow = start(user, {"script": "t_retried_later", "params": {"fail_until": 1}})
    assert flow.state == "retrying"
    api.retry(flow, user, reason="the service is back")
    flow.refresh_from_db()
    assert flow.state == "complete"
    assert flow.results[0]["attempt"] == 2
    event = FlowEvent.objects.get(flow=flow, kind="manual.retry")
    assert event.actor_id == user.pk and event.message == "the service is back"

    gives_up = start(user, {"script": "t_retried_later", "params": {"fail_until": 9}})
    api.give_up(gives_up, user, reason="the provider is down for the day")
    gives_up.refresh_from_db()
    assert gives_up.state == "failed"
    assert gives_up.retry_at is None
    assert gives_up.error == "ValueError: broken (attempt 1)"
    with pytest.raises(FlowStateError, match="only a flow waiting to retry"):
        api.give_up(gives_up, user)
    # Nothing is due any more once it gave up.
    with time_machine.travel(timezone.now() + timedelta(hours=1)):
        assert fire_retries() == 0


def test_a_routine_step_overrides_the_scripts_retry_settings(user):
    never = start(
        user, {"script": "t_retried", "params": {"fail_until": 1}, "overrides": {"retries": 0}}
    )
    assert never.state == "failed"
    assert never.steps[0]["overrides"] == {"retries": 0}
    later = start(
        user,
        {"script": "t_retried", "params": {"fail_until": 1}, "overrides": {"retry_delay": 5}},
    )
    assert later.state == "retrying"


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"retries": -1}, "retries must be between 0 and 100"),
        ({"retries": 1.5}, "retries must be a whole number"),
        ({"retry_backoff": 0.5}, "retry_backoff must be between 1 and 10"),
        ({"retry_jitter": "lots"}, "retry_jitter must be a number"),
        ({"time_limit": 0}, "time_limit must be between"),
        ({"retry_on": "Exception"}, "'retry_on' is not a retry setting"),
        ([1], "must be a JSON object"),
    ],
)
def test_a_retry_setting_out_of_range_is_refused_and_nothing_is_written(user, overrides, problem):
    from engine.models import Routine

    with pytest.raises(RoutineStepError, match=problem):
        api.create_routine("bad", [{"script": "t_retried", "overrides": overrides}], owner=user)
    assert not Routine.objects.filter(name="bad").exists()


def test_a_script_with_settings_out_of_range_is_refused_when_defined():
    with pytest.raises(ScriptDefinitionError, match="retry_delay must be between"):

        class Negative(Task):
            name = "t_never_registered"
            retry_delay = -5

    with pytest.raises(ScriptDefinitionError, match="retry_on must be exception types"):

        class NotExceptions(Task):
            name = "t_never_registered_either"
            retry_on = ("ValueError",)


def test_backoff_is_capped_and_jittered():
    policy = RetryPolicy(retries=10, retry_delay=10, retry_backoff=3, retry_max_delay=100)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [10, 30, 90, 100]
    jittered = RetryPolicy(retries=3, retry_delay=10, retry_jitter=0.5)
    assert jittered.delay(1, rand=lambda: 0.0) == 5
    assert jittered.delay(1, rand=lambda: 1.0) == 15
    assert RetryPolicy(retries=3).delay(1) == 0  # no delay: at once
    assert setting_problem("retries", True) == "retries must be a number, got True"
    assert policy_for(catalog.Flaky, {"retries": 1}).retries == 1


def test_the_idempotency_key_is_new_on_each_visit_of_a_step(user):
    flow = start(user, {"script": "t_retried", "params": {"fail_until": 1}}, "t_echo")
    first_visit = {key for _, key in attempts_of(flow)}
    assert len(first_visit) == 1
    # Moved back to the step: a new visit, a new key, attempts from 1.
    api.move_to(flow, 0, user, reason="again")
    flow.refresh_from_db()
    seen = attempts_of(flow)
    assert [attempt for attempt, _ in seen] == [1, 2, 1, 2]
    second_visit = {key for _, key in seen[2:]}
    assert len(second_visit) == 1 and second_visit != first_visit
    assert flow.results[0]["key"] == seen[-1][1]


def test_a_manual_retry_of_a_failed_step_keeps_its_key_and_counts_attempts_afresh(user):
    flow = start(user, {"script": "t_retried", "params": {"fail_until": 4}})
    assert flow.state == "failed"
    # Rerun with an edit of the step's params: the same visit, attempts from 1 again.
    api.retry(flow, user, reason="fixed the limit", params={"fail_until": 0})
    flow.refresh_from_db()
    assert flow.state == "complete"
    seen = attempts_of(flow)
    assert [attempt for attempt, _ in seen] == [1, 2, 3, 4, 1]
    assert len({key for _, key in seen}) == 1
    event = FlowEvent.objects.get(flow=flow, kind="manual.retry")
    assert event.data["edits"]["params"] == {
        "step": 0,
        "changes": [{"path": "fail_until", "op": "changed", "old": 4, "new": 0}],
    }
    assert "step 1 params edited:\nfail_until: 4 → 0" in event.message


def test_a_step_over_its_time_limit_fails_and_its_outcome_is_discarded(user):
    flow = start(user, {"script": "t_slow", "params": {"sleep": 0.7}})
    assert flow.state == "failed"
    assert flow.error.startswith("took longer than 0.5 s")
    assert flow.results == [None]
    assert "step.completed" not in kinds(flow)


def test_retries_apply_to_a_time_limit(user):
    flow = start(
        user,
        {
            "script": "t_slow",
            "params": {"sleep": 0.7, "slow_until": 1},
            "overrides": {"retries": 2},
        },
    )
    assert flow.state == "complete"
    assert flow.results[0] == {"attempt": 2}
    failed = FlowEvent.objects.get(flow=flow, kind="step.attempt_failed")
    assert failed.data["error"].startswith("took longer than 0.5 s")


def test_an_offloaded_step_over_its_time_limit_fails_too(user):
    flow = start(user, {"script": "t_slow_offloaded", "params": {"sleep": 0.7}})
    assert flow.state == "failed"
    assert flow.error.startswith("took longer than 0.5 s")


def test_housekeeping_fails_a_running_step_past_its_time_limit(user):
    """A step that hangs (its worker never commits) is failed by housekeeping at its
    deadline; the late commit of the hung attempt finds the flow changed."""
    from engine.flows import runner

    flow = start(user, {"script": "t_wait"})
    # As if a worker claimed a step with a 1 s limit and then hung.
    Flow.objects.filter(pk=flow.pk).update(
        state="running",
        step_deadline=timezone.now() - timedelta(seconds=1),
        steps=[{**flow.steps[0], "overrides": {"time_limit": 1}}],
    )
    hung = runner.load(flow.pk)
    assert api.run_housekeeping()["time_limits"] == 1
    flow.refresh_from_db()
    assert flow.state == "failed"
    assert flow.error.startswith("took longer than 1 s")
    # The hung attempt's outcome arrives late: discarded, never recorded.
    from engine.core.flows import outcome as core

    late = core.Outcome(core.Kind.ADVANCE, value="late")
    assert runner.commit_outcome(hung, late, expect_state="running") is None
    flow.refresh_from_db()
    assert flow.state == "failed" and flow.results == [None]


def test_a_rerun_with_edited_data_records_the_diff_and_refuses_bad_edits(user):
    flow = start(user, "t_wait", data={"amount": 10, "currency": "eur", "note": "x"})
    assert flow.state == "waiting"
    with pytest.raises(ValueError, match="must be a JSON object"):
        api.resume(flow, user, data=["not", "an", "object"])
    with pytest.raises(ValueError, match="must be a JSON object"):
        api.move_to(flow, 0, user, params="{}")
    flow.refresh_from_db()
    assert flow.state == "waiting" and flow.data["amount"] == 10  # nothing written
    assert "manual.resume" not in kinds(flow)

    api.resume(flow, user, reason="amount fixed", data={"amount": 12, "currency": "eur", "vat": 2})
    flow.refresh_from_db()
    assert flow.data == {"amount": 12, "currency": "eur", "vat": 2}
    event = FlowEvent.objects.get(flow=flow, kind="manual.resume")
    assert event.data["edits"]["data"] == [
        {"path": "amount", "op": "changed", "old": 10, "new": 12},
        {"path": "note", "op": "removed", "old": "x"},
        {"path": "vat", "op": "added", "new": 2},
    ]
    assert event.message == (
        'amount fixed\ndata edited:\namount: 10 → 12\nnote: removed (was "x")\nvat: added 2'
    )
    # An edit that changes nothing is no edit.
    api.resume(flow, user, data={"amount": 12, "currency": "eur", "vat": 2})
    last = FlowEvent.objects.filter(flow=flow, kind="manual.resume").order_by("-seq").first()
    assert "edits" not in last.data
