"""The engine's service API with Huey in immediate mode: each outcome, input, re-check,
offloaded steps and the manual overrides."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from engine import api
from engine.api import FlowStateError, StaleFlowError
from engine.models import FlowEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


def kinds(flow):
    return list(FlowEvent.objects.filter(flow=flow).values_list("kind", flat=True))


def test_results_are_stored_and_flow_completes(routine, user):
    flow = api.start_flow(routine("t_echo", "t_result_fields", "t_result_none", "t_tuple_ok"), user)
    assert flow.state == "complete"
    assert flow.results == [
        {"position": 0, "params": {}, "seen": 0},
        {"a": 1, "b": "two"},
        None,
        30,
    ]
    assert flow.position == 3
    assert flow.finished is not None
    assert kinds(flow) == [
        "flow.created",
        "flow.running",
        "step.completed",
        "step.completed",
        "step.completed",
        "step.completed",
        "flow.complete",
    ]
    seqs = list(FlowEvent.objects.filter(flow=flow).values_list("seq", flat=True))
    assert seqs == list(range(1, 8))


def test_task_sees_earlier_results_params_and_data(user):
    routine = api.create_routine(
        "params",
        ["t_echo", {"script": "t_echo", "params": {"x": 1}, "label": "second"}],
        owner=user,
    )
    flow = api.start_flow(routine, user, data={"k": "v"})
    assert flow.results[1] == {"position": 1, "params": {"x": 1}, "seen": 1}
    assert flow.steps[1]["name"] == "second"
    assert flow.data == {"k": "v"}


def test_wait_then_push_input_completes(routine, user):
    flow = api.start_flow(routine("t_echo", "t_wait", "t_echo"), user)
    assert (flow.state, flow.position, flow.wait_reason) == ("waiting", 1, "need an answer")
    flow = api.push_input(flow, {"answer": 42}, user)
    assert flow.state == "complete"
    assert flow.results[1] == {"got": {"answer": 42}}
    assert flow.wait_reason == ""
    event = FlowEvent.objects.get(flow=flow, kind="input.pushed")
    assert event.actor == user and event.data["input"] == {"answer": 42}


def test_input_to_a_flow_that_is_not_waiting_is_an_error(routine, user):
    flow = api.start_flow(routine("t_echo"), user)
    with pytest.raises(FlowStateError, match="not.*waiting|only be pushed to a waiting"):
        api.push_input(flow, {"x": 1}, user)


def test_input_must_be_json(routine, user):
    flow = api.start_flow(routine("t_wait"), user)
    with pytest.raises(ValueError, match="JSON"):
        api.push_input(flow, {"x": object()}, user)
    flow.refresh_from_db()
    assert flow.state == "waiting"


def test_check_resumes_a_waiting_flow(routine, user, tmp_path):
    flag = tmp_path / "flag"
    flow = api.start_flow(routine("t_checked", "t_echo"), user, data={"flag_file": str(flag)})
    assert flow.state == "waiting"
    assert api.recheck_waiting() == 0
    flow.refresh_from_db()
    assert flow.state == "waiting"
    flag.write_text("go")
    assert api.recheck_waiting() == 1
    flow.refresh_from_db()
    assert flow.state == "complete"
    assert flow.results[0] == "picked up"


def test_kill_signal_ends_flow_and_later_steps_never_run(routine, user):
    flow = api.start_flow(routine("t_echo", "t_kill", "t_echo"), user)
    assert flow.state == "killed"
    assert flow.error == "Smoke signals preferred."
    assert flow.position == 1
    assert flow.results == [{"position": 0, "params": {}, "seen": 0}, None, None]


def test_done_completes_early(routine, user):
    flow = api.start_flow(routine("t_done", "t_echo"), user)
    assert flow.state == "complete"
    assert flow.results == ["early", None]


def test_success_false_fails_flow_with_value_as_error(routine, user):
    flow = api.start_flow(routine("t_fail", "t_echo"), user)
    assert flow.state == "failed"
    assert flow.error == "it broke"
    assert flow.results == [None, None]


def test_uncaught_exception_fails_flow_with_traceback(routine, user):
    flow = api.start_flow(routine("t_raise"), user)
    assert flow.state == "failed"
    assert flow.error == "RuntimeError: boom"
    assert "Traceback" in flow.traceback and "boom" in flow.traceback


def test_retry_after_failure(routine, user):
    flow = api.start_flow(routine("t_flaky", "t_echo"), user)
    assert flow.state == "failed"
    flow = api.retry(flow, user)
    assert flow.state == "complete"
    assert flow.results[0] == {"attempt": 2}
    assert "manual.retry" in kinds(flow)


def test_retry_refused_unless_failed(routine, user):
    flow = api.start_flow(routine("t_wait"), user)
    with pytest.raises(FlowStateError, match="only a failed or killed flow can be retried"):
        api.retry(flow, user)


def test_non_blocking_step_is_offloaded_and_resumes(routine, user):
    flow = api.start_flow(routine("t_echo", "t_offloaded", "t_echo"), user)
    assert flow.state == "complete"
    assert flow.results[1] == {"offloaded": 1}
    completed = FlowEvent.objects.get(flow=flow, kind="step.completed", data__step=0)
    assert completed.data["offloaded"]["step"] == 1 and completed.data["offloaded"]["job"]
    assert flow.job_id == ""


def test_first_step_offloaded_by_the_claim(routine, user):
    flow = api.start_flow(routine("t_offloaded", "t_offloaded"), user)
    assert flow.state == "complete"
    assert flow.results == [{"offloaded": 0}, {"offloaded": 1}]
    assert kinds(flow)[:3] == ["flow.created", "flow.running", "step.offloaded"]


def test_move_to_back_and_forward(routine, user):
    flow = api.start_flow(routine("t_echo", "t_wait", "t_echo", "t_echo"), user)
    assert flow.state == "waiting"
    flow = api.move_to(flow, 3, user, reason="skip ahead")
    assert flow.state == "complete"
    assert flow.results[3] == {"position": 3, "params": {}, "seen": 3}
    flow = api.move_to(flow, 1, user, reason="again")
    assert (flow.state, flow.position) == ("waiting", 1)
    moves = FlowEvent.objects.filter(flow=flow, kind="manual.move").order_by("seq")
    assert [(e.data["from"], e.data["to"], e.actor_id) for e in moves] == [
        (1, 3, user.pk),
        (3, 1, user.pk),
    ]


def test_move_to_out_of_range_is_refused(routine, user):
    flow = api.start_flow(routine("t_wait"), user)
    for bad in (-1, 1, 7):
        with pytest.raises(FlowStateError, match="out of range"):
            api.move_to(flow, bad, user)
    flow.refresh_from_db()
    assert flow.state == "waiting"


def test_skip_and_kill_and_resume(routine, user):
    flow = api.start_flow(routine("t_wait", "t_wait"), user)
    flow = api.skip(flow, user)
    assert (flow.state, flow.position) == ("waiting", 1)
    flow = api.kill_flow(flow, user, reason="no longer needed")
    assert flow.state == "killed" and flow.error == "no longer needed"
    with pytest.raises(FlowStateError, match="already ended"):
        api.kill_flow(flow, user)
    flow = api.resume(flow, user)
    assert (flow.state, flow.position) == ("waiting", 1)
    flow = api.skip(flow, user)
    assert flow.state == "complete"
    assert kinds(flow).count("manual.skip") == 2


def test_stale_version_is_refused(routine, user):
    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    seen = flow.version
    api.push_input(flow, {"a": 1}, user)
    with pytest.raises(StaleFlowError, match="changed since you loaded it"):
        api.kill_flow(flow, user, version=seen)


def test_another_user_cannot_act(routine, user, other_user):
    flow = api.start_flow(routine("t_wait"), user)
    for action in (
        lambda: api.push_input(flow, {}, other_user),
        lambda: api.kill_flow(flow, other_user),
        lambda: api.move_to(flow, 0, other_user),
        lambda: api.resume(flow, other_user),
    ):
        with pytest.raises(PermissionDenied):
            action()
    assert list(api.visible_flows(other_user)) == []


def test_staff_can_operate_any_flow(routine, user, make_user):
    admin = make_user("root", is_staff=True)
    flow = api.start_flow(routine("t_wait"), user)
    assert api.kill_flow(flow, admin, reason="ops").state == "killed"
    assert FlowEvent.objects.get(flow=flow, kind="manual.kill").actor == admin


def test_flow_pins_routine_steps(routine, user):
    r = routine("t_wait", "t_echo")
    flow = api.start_flow(r, user)
    r.steps.all().delete()
    r.version += 1
    r.save()
    flow = api.push_input(flow, "x", user)
    assert flow.state == "complete" and len(flow.results) == 2


def test_non_json_result_is_pickled_signed_and_tamper_checked(routine, user):
    from engine.flows.codec import TamperedResult

    flow = api.start_flow(routine("t_object"), user)
    assert flow.results == [{1, 2, 3}]
    assert api.results_for_display(flow) == ["{1, 2, 3}"]
    stored = flow.stored_results[0]
    stored["__flowstudio_pickle__"] = stored["__flowstudio_pickle__"][:-3] + "abc"
    flow.stored_results = [stored]
    with pytest.raises(TamperedResult):
        flow.results  # noqa: B018


def test_create_routine_refuses_unknown_scripts(user):
    for bad in ("os.system", "no_such_script", "engine.api.kill_flow"):
        with pytest.raises(ValueError, match="not a registered Task script"):
            api.create_routine("bad", ["t_echo", bad], owner=user)
