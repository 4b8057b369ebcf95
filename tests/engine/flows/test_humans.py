"""Human steps (engine.flows.humans through engine.api): typed input validated with the
script's form, decisions, assignees and groups, deadlines fired by housekeeping, and
notifications (in-app and by e-mail); Huey in immediate mode."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import override_settings
from django.utils import timezone

from engine import api, wait
from engine.core.errors import FlowStateError
from engine.models import Flow, FlowAssignee, FlowEvent, Notification

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]

LOCMEM = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def approvers(make_user):
    group = Group.objects.create(name="approvers")
    ann = make_user("ann", email="ann@example.com")
    ann.groups.add(group)
    ben = make_user("ben", email="ben@example.com")
    ben.groups.add(group)
    return group, ann, ben


def start(user, script, params=None, data=None):
    routine = api.create_routine("human", [script], owner=user)
    if params:
        step = routine.steps.get()
        step.params = params
        step.save()
    return api.start_flow(routine, user, data or {})


# -- typed input --------------------------------------------------------------------------


def test_typed_input_is_validated_with_the_form_and_stored_as_clean_json(user):
    flow = start(user, "t_form")
    assert flow.state == "waiting"

    with pytest.raises(ValidationError) as bad:
        api.push_input(flow, {"amount": "-3", "size": "xl", "quantity": 0}, user)
    errors = bad.value.message_dict
    assert set(errors) == {"amount", "size", "quantity"}
    flow.refresh_from_db()
    assert flow.state == "waiting" and flow.input is None and not flow.has_input
    assert not FlowEvent.objects.filter(flow=flow, kind="input.pushed").exists()

    good = {"approved": True, "amount": "12.50", "ship_on": "2026-12-24", "size": "l"}
    flow = api.push_input(flow, {**good, "quantity": 3}, user)

    assert flow.state == "complete"
    assert flow.results[0] == {
        "approved": True,
        "amount": "12.50",
        "ship_on": "2026-12-24",
        "size": "l",
        "quantity": 3,
    }


def test_input_that_is_not_an_object_is_refused_for_a_form_step(user):
    flow = start(user, "t_form")
    for bad in ([1, 2], "yes", 3, None):
        with pytest.raises(ValidationError):
            api.push_input(flow, bad, user)
    flow.refresh_from_db()
    assert flow.state == "waiting"


def test_input_fields_stay_a_shorthand(user):
    flow = start(user, "t_wait")
    flow = api.push_input(flow, {"answer": 42}, user)
    assert flow.state == "complete"


def test_the_json_schema_of_a_script_form():
    schema = api.script_schema("t_form")
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["approved"]["type"] == "boolean"
    assert props["amount"] == {"type": ["number", "string"], "format": "decimal", "minimum": 0}
    assert props["ship_on"] == {"type": "string", "format": "date"}
    assert props["size"]["enum"] == ["s", "l"]
    assert props["quantity"]["minimum"] == 1 and props["quantity"]["maximum"] == 99
    assert props["approved"]["description"] == "Tick to approve"
    assert sorted(schema["required"]) == ["amount", "quantity", "size"]
    decision = api.script_schema("t_approve")
    assert decision["x-decision"] is True and decision["properties"]["decision"]["enum"] == [
        "approve",
        "reject",
    ]


# -- decisions ------------------------------------------------------------------------------


def test_rejecting_needs_a_reason_and_the_decision_is_in_the_timeline(user):
    flow = start(user, "t_approve")

    with pytest.raises(ValidationError) as bad:
        api.push_input(flow, {"decision": "reject", "comment": " "}, user)
    assert "comment" in bad.value.message_dict

    flow = api.push_input(flow, {"decision": "reject", "comment": "too dear"}, user)

    assert flow.state == "killed" and flow.error == "rejected: too dear"
    event = FlowEvent.objects.get(flow=flow, kind="input.pushed")
    assert event.actor == user and event.data["decision"] == "reject"
    assert event.message == "too dear"


# -- assignees ------------------------------------------------------------------------------


def test_an_assigned_wait_is_answered_by_its_group_not_by_the_owner(user, approvers, make_user):
    group, ann, ben = approvers
    stranger = make_user("sam")
    flow = start(user, "t_approve", {"assign_to": "approvers"})

    assert set(FlowAssignee.objects.filter(flow=flow).values_list("group_id", flat=True)) == {
        group.pk
    }
    assert not api.may_answer(user, flow)  # no self-approval
    assert api.may_answer(ann, flow) and api.may_answer(ben, flow)
    assert api.can_see_flow(ann, flow) and not api.can_see_flow(stranger, flow)
    assert api.available_actions(flow, ann) == ["input"]  # answer, never override
    assert "input" not in api.available_actions(flow, user)
    for who in (user, stranger):
        with pytest.raises(PermissionDenied):
            api.push_input(flow, {"decision": "approve"}, who)
    with pytest.raises(PermissionDenied):
        api.kill_flow(flow, ann, "not mine to kill")
    assert [f.pk for f in api.waiting_for(ann)] == [flow.pk]
    assert list(api.waiting_for(user)) == []

    flow = api.push_input(flow, {"decision": "approve", "amount": "5"}, ann)

    assert flow.state == "complete"
    assert not api.can_see_flow(ann, flow)  # no longer waiting for her
    assert not FlowAssignee.objects.filter(flow=flow).exists()


def test_assign_to_users_groups_objects_and_lists(user, approvers, make_user):
    group, ann, ben = approvers
    carl = make_user("carl")
    flow = start(user, "t_approve", {"assign_to": ["approvers"]})
    assert api.may_answer(ann, flow)

    routine = api.create_routine("direct", ["t_echo"], owner=user)
    flow2 = api.start_flow(routine, user)
    from engine.flows import humans

    assert humans.resolve_assignees([carl, group, "approvers"]) == ([carl.pk], [group.pk])
    with pytest.raises(ValueError, match="no group is named 'nobody'"):
        humans.resolve_assignees(["nobody"])
    with pytest.raises(ValueError, match="takes users, groups or group names"):
        humans.resolve_assignees([42])
    assert flow2.state == "complete"
    assert wait("x", assign_to=carl).assign_to == (carl,)
    assert wait("x", timeout=timedelta(minutes=2)).timeout == 120
    with pytest.raises(ValueError):
        wait("x", timeout=0)


def test_a_wait_assigned_to_an_unknown_group_fails_the_flow_clearly(user):
    flow = start(user, "t_approve", {"assign_to": "no-such-group"})
    assert flow.state == "failed" and "no group is named 'no-such-group'" in flow.error


def test_waiting_for_me_lists_soonest_deadline_first(user, approvers):
    group, ann, ben = approvers
    later = start(user, "t_approve", {"assign_to": "approvers", "timeout": 3600})
    none = start(user, "t_approve", {"assign_to": "approvers"})
    sooner = start(user, "t_approve", {"assign_to": "approvers", "timeout": 60})
    own = start(ann, "t_form")  # ann's own wait, nobody assigned

    mine = [f.pk for f in api.waiting_for(ann)]
    assert mine[:2] == [sooner.pk, later.pk] and set(mine[2:]) == {none.pk, own.pk}
    assert {f.pk for f in api.waiting_for(ben)} == {sooner.pk, later.pk, none.pk}


# -- deadlines ------------------------------------------------------------------------------


def test_a_deadline_fires_on_timeout_once_and_the_flow_moves_on(user):
    flow = start(user, "t_times_out", {"timeout": 30})
    assert flow.deadline is not None
    assert api.run_housekeeping()["deadlines"] == 0  # not yet

    with time_machine.travel(flow.deadline + timedelta(seconds=1), tick=False):
        done = api.run_housekeeping()
        again = api.run_housekeeping()

    assert done["deadlines"] == 1 and again["deadlines"] == 0
    flow.refresh_from_db()
    assert flow.state == "complete" and flow.results == ["timed out"]
    assert FlowEvent.objects.filter(flow=flow, kind="step.timed_out").count() == 1


@pytest.mark.parametrize(
    ("then", "state"), [("kill", "killed"), ("wait", "waiting"), ("result", "complete")]
)
def test_on_timeout_returns_what_perform_may(user, then, state):
    flow = start(user, "t_times_out", {"timeout": 30, "on_timeout": then})
    first = flow.deadline

    with time_machine.travel(first + timedelta(seconds=1), tick=False):
        api.run_housekeeping()

    flow.refresh_from_db()
    assert flow.state == state
    if then == "wait":
        assert flow.deadline > first and flow.wait_number == 2  # a new wait, a new deadline
    if then == "kill":
        assert flow.error == "nobody answered"


def test_without_on_timeout_the_flow_fails_as_timed_out_and_can_be_resumed(user):
    flow = start(user, "t_plain_deadline", {"timeout": 5})

    with time_machine.travel(flow.deadline + timedelta(seconds=1), tick=False):
        api.run_housekeeping()

    flow.refresh_from_db()
    assert flow.state == "failed" and flow.error.startswith("timed out")
    assert "deadline" in flow.error
    flow = api.resume(flow, user)
    assert flow.state == "waiting" and flow.deadline is not None


def test_input_before_the_deadline_wins(user):
    flow = start(user, "t_times_out", {"timeout": 30})
    api.push_input(flow, {"answer": "in time"}, user)

    with time_machine.travel(timezone.now() + timedelta(minutes=5), tick=False):
        assert api.run_housekeeping()["deadlines"] == 0

    flow.refresh_from_db()
    assert flow.state == "complete" and flow.deadline is None
    assert not FlowEvent.objects.filter(flow=flow, kind="step.timed_out").exists()


# -- notifications --------------------------------------------------------------------------


@override_settings(EMAIL_BACKEND=LOCMEM)
def test_each_assignee_is_told_once_per_wait_in_app_and_by_email(user, approvers):
    group, ann, ben = approvers
    flow = start(user, "t_approve", {"assign_to": "approvers", "timeout": 3600})

    assert api.unread_count(ann) == 1 and api.unread_count(ben) == 1
    assert api.unread_count(user) == 0  # assigned to others: the owner is not told
    api.run_housekeeping()
    api.run_housekeeping()  # re-checks and passes do not tell anyone again
    assert sorted(m.to[0] for m in mail.outbox) == ["ann@example.com", "ben@example.com"]
    assert f"/flows/{flow.pk}/" in mail.outbox[0].body
    assert Notification.objects.filter(flow=flow).count() == 2

    api.push_input(flow, {"decision": "approve"}, ben)

    assert api.unread_count(ann) == 0 and api.unread_count(ben) == 0  # cleared when answered
    assert len(mail.outbox) == 2


def test_a_waits_assignees_are_read_with_the_flow_for_its_version(user, approvers, make_user):
    """`read_flow` reads the wait's assignees in its one statement; they answer for the
    flow at the version read, and are read again once the flow is written."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from engine.flows import humans

    group, ann, ben = approvers
    carl = make_user("carl")
    flow = start(user, "t_approve", {"assign_to": "approvers"})
    FlowAssignee.objects.create(flow=flow, user=carl)
    read = api.read_flow(flow.pk)
    assert read is not None
    with CaptureQueriesContext(connection) as captured:
        assert humans.assignees_of(read) == ({carl.pk}, {group.pk})
        assert api.may_answer(carl, read) and api.may_answer(ann, read)
        assert not api.may_answer(user, read)
    assert not [q["sql"] for q in captured if "engine_flowassignee" in q["sql"]]
    read.version += 1  # as after a write: what was read no longer answers for it
    with CaptureQueriesContext(connection) as captured:
        assert humans.assignees_of(read) == ({carl.pk}, {group.pk})
    assert len(captured) == 1
    nobody = start(user, "t_approve")
    assert humans.assignees_of(api.read_flow(nobody.pk)) == (set(), set())


def test_an_answer_clears_the_wait_in_its_write_and_tells_whom_it_had_told(user, approvers):
    """The answer's write clears the wait's notifications and deletes its assignees with the
    flow's update and event (on PostgreSQL in the one statement, committing by itself, whose
    losing compare-and-set clears nothing), then tells the studio whose notifications went."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from engine import events as engine_events

    group, ann, ben = approvers
    flow = start(user, "t_approve", {"assign_to": "approvers"})
    stale = Flow.objects.get(pk=flow.pk)
    stale.version -= 1  # read before the wait began: its write must lose
    from engine.flows import store

    assert not store.write_flow(stale, {"state": "pending"}, expect_state="waiting")
    assert Notification.objects.filter(flow=flow, cleared__isnull=True).count() == 2
    assert FlowAssignee.objects.filter(flow=flow).count() == 1

    published: list[dict] = []
    in_transaction: list[bool] = []

    def note(execute, sql, params, many, context):
        in_transaction.append(connection.in_atomic_block)
        return execute(sql, params, many, context)

    engine_events.connect(published.extend)
    try:
        with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(note):
            api.push_input(flow, {"decision": "approve"}, ben)
    finally:
        engine_events.disconnect(published.extend)
    sql = [q["sql"] for q in captured]
    if connection.vendor == "postgresql":
        # the answer (then the run's own writes: Huey runs inline here), committing by
        # itself: no BEGIN and COMMIT around it
        answer = next(i for i, text in enumerate(sql) if not text.startswith("SELECT"))
        assert sql[answer].startswith("WITH f AS (UPDATE") and "DELETE FROM" in sql[answer], sql
        assert not in_transaction[answer]
        writes = [text for text in sql if text.startswith(("UPDATE", "DELETE", "INSERT"))]
        assert not writes
    assert Notification.objects.filter(flow=flow, cleared__isnull=True).count() == 0
    assert not FlowAssignee.objects.filter(flow=flow).exists()
    told = [event for event in published if event.get("type") == "notifications"]
    assert told == [{"type": "notifications", "users": sorted([ann.pk, ben.pk]), "flow": flow.pk}]
    kinds = [event.get("kind") for event in published]
    assert kinds.index("input.pushed") > published.index(told[0])  # as before: told first


@override_settings(EMAIL_BACKEND=LOCMEM)
def test_the_owner_is_told_when_nobody_is_assigned_and_a_reminder_comes_once(make_user):
    owner = make_user("olive", email="olive@example.com")
    flow = start(owner, "t_approve", {"timeout": 60})  # remind_before = 1 s

    api.run_housekeeping()
    assert [m.to for m in mail.outbox] == [["olive@example.com"]]
    with time_machine.travel(flow.deadline - timedelta(milliseconds=500), tick=False):
        api.run_housekeeping()
        api.run_housekeeping()

    reminders = Notification.objects.filter(flow=flow, kind="reminder")
    assert reminders.count() == 1
    assert len(mail.outbox) == 2 and "Deadline soon" in mail.outbox[1].subject


@override_settings(EMAIL_BACKEND=LOCMEM)
def test_a_notification_answered_before_its_email_is_not_emailed(user, approvers):
    group, ann, ben = approvers
    flow = start(user, "t_approve", {"assign_to": "approvers"})
    api.push_input(flow, {"decision": "approve"}, ann)

    api.run_housekeeping()

    assert mail.outbox == []
    assert set(Notification.objects.values_list("email_error", flat=True)) == {
        "the wait was over before the e-mail went out"
    }


def test_input_to_a_flow_that_is_not_waiting_is_an_error(user):
    flow = start(user, "t_echo")
    with pytest.raises(FlowStateError):
        api.push_input(flow, {"x": 1}, user)
    assert Flow.objects.get(pk=flow.pk).state == "complete"


def test_any_json_value_for_any_field_is_a_validation_error_not_a_crash(user):
    flow = start(user, "t_form")
    for value in (123, True, [1], {"a": 1}, 1.5, "x" * 10_000):
        for field in ("amount", "ship_on", "size", "quantity", "approved"):
            data = {"amount": "1", "size": "s", "quantity": 1, field: value}
            try:
                api.push_input(flow, data, user)
            except ValidationError:
                continue
            flow.refresh_from_db()
            assert flow.state == "complete", (field, value)  # accepted: a valid value
            flow = start(user, "t_form")
