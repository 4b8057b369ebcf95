"""The flows slice's service (engine.flows.service) with Huey in immediate mode: input to a
waiting flow, the manual overrides, versions, and who may act."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test.utils import CaptureQueriesContext

from engine import api
from engine.api import FlowStateError, StaleFlowError
from engine.models import Flow, FlowEvent
from tests.engine.flows.test_runner import kinds

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


def test_wait_then_push_input_completes(routine, user):
    flow = api.start_flow(routine("t_echo", "t_wait", "t_echo"), user)
    assert (flow.state, flow.position, flow.wait_reason) == ("waiting", 1, "need an answer")
    flow = api.push_input(flow, {"answer": 42}, user)
    assert flow.state == "complete"
    assert flow.results[1] == {"got": {"answer": 42}}
    assert flow.wait_reason == ""
    event = FlowEvent.objects.get(flow=flow, kind="input.pushed")
    assert event.actor == user and event.data["input"] == {"answer": 42}


def test_a_flow_object_given_to_an_action_is_taken_as_read(routine, user):
    """A request's view has just read the flow (to check the caller may see it): the action
    writes from that object, with no second read before its write and none after."""
    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    flow.assignees.all()  # (anything prefetched or cached goes with the refresh)
    with CaptureQueriesContext(connection) as queries:
        answered = api.push_input(flow, {"answer": 1}, user)
    sql = [query["sql"] for query in queries.captured_queries]
    # Nor read back after (its run, inline here, writes through the same object)
    assert [text for text in sql if 'FROM "engine_flow"' in text] == []
    assert answered.state == "complete"
    # The caller's object is as the flow is now, like after refresh_from_db().
    assert (flow.state, flow.version) == ("complete", answered.version)
    assert flow.results == answered.results
    assert flow.results[0] == {"got": {"answer": 1}}
    assert flow.version == Flow.objects.get(pk=flow.pk).version


def test_a_stale_flow_object_loses_and_the_action_is_decided_on_the_flow_as_it_is(routine, user):
    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    stale = Flow.objects.get(pk=flow.pk)  # waiting, as a page read it
    api.push_input(flow, {"answer": 1}, user)  # someone else answered meanwhile
    with pytest.raises(FlowStateError, match="is complete at step 2"):
        api.push_input(stale, {"answer": 2}, user)
    assert list(
        FlowEvent.objects.filter(flow=flow, kind="input.pushed").values_list(
            "data__input", flat=True
        )
    ) == [{"answer": 1}]
    # ...and the other way round: an object older than the wait is refused as it was read,
    # then accepted as the flow is now.
    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    older = Flow.objects.get(pk=flow.pk)
    older.state, older.version = "running", older.version - 1
    answered = api.push_input(older, {"answer": 3}, user)
    assert answered.state == older.state == "complete"
    assert answered.results[0] == {"got": {"answer": 3}}


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


def test_retry_after_failure(routine, user):
    flow = api.start_flow(routine("t_flaky", "t_echo"), user)
    assert flow.state == "failed"
    flow = api.retry(flow, user)
    assert flow.state == "complete"
    assert flow.results[0] == {"attempt": 2}
    assert "manual.retry" in kinds(flow)


def test_retry_refused_unless_failed(routine, user):
    flow = api.start_flow(routine("t_wait"), user)
    with pytest.raises(
        FlowStateError, match="only a failed, killed or retrying flow can be retried"
    ):
        api.retry(flow, user)


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


def test_a_start_pins_the_steps_as_stored_now_however_they_were_changed(routine, user, monkeypatch):
    """A start makes the flow's steps of the routine's stored rows only when they differ
    from those it last read: a change through a new version, or to a step's or its task's
    row directly (the admin), is in the next flow; each flow's steps are its own."""
    from engine.flows import store

    made = []
    convert = store._steps.convert
    monkeypatch.setattr(store._steps, "convert", lambda db, row: made.append(1) or convert(db, row))
    r = routine("t_echo", "t_echo")
    first = api.start_flow(r, user)
    assert len(made) == 2
    first.steps[0]["params"]["changed"] = True  # (a flow's own list: the next is unchanged)
    second = api.start_flow(r, user)
    assert len(made) == 2  # the same rows: the steps made of them before
    assert second.steps == Flow.objects.get(pk=first.pk).steps == r.snapshot()
    assert "changed" not in second.steps[0]["params"]

    step = r.steps.order_by("order").first()
    step.params = {"greeting": "hi"}
    step.save()  # an edit that leaves the routine's version as it was
    assert api.start_flow(r, user).steps[0]["params"] == {"greeting": "hi"}
    task = step.task
    task.params = {"extra": 1}
    task.save()
    assert api.start_flow(r, user).steps[0]["params"] == {"extra": 1, "greeting": "hi"}

    api.update_routine(r, "renamed", ["t_wait"], user)
    third = api.start_flow(r, user)
    assert [s["script"] for s in third.steps] == ["t_wait"] and third.steps == r.snapshot()
