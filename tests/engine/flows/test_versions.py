"""Routine versions (engine.flows.versions): a version written by every save with the steps'
identities kept across edits, the side-by-side diff of any two, and moving a flow onto another
version of its routine (the step it goes on at matched by identity, its results kept or
dropped), with every refusal clear and changing nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied

from engine import api
from engine.api import FlowStateError, NoSuchVersion, StaleFlowError
from engine.models import Flow, FlowEvent, Routine, RoutineVersion
from tests.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


def steps_of(routine: Routine, number: int | None = None) -> list[dict[str, Any]]:
    """The steps of a version of `routine` (its latest by default), as the builder posts
    them back: with their keys."""
    routine.refresh_from_db()
    row = RoutineVersion.objects.get(routine=routine, number=number or routine.version)
    return [dict(step) for step in row.steps]


def edit(routine: Routine, user, steps: list[Any], name: str | None = None, **extra) -> Routine:
    return api.update_routine(routine, name or routine.name, steps, user, **extra)


def step(script: str, label: str = "", **params) -> dict[str, Any]:
    return {"script": script, "label": label, "params": params}


def frozen(flow: Flow) -> tuple:
    """What a refused action must leave as it was."""
    flow = Flow.objects.get(pk=flow.pk)
    return (
        flow.version,
        flow.state,
        flow.position,
        flow.routine_version,
        flow.steps,
        flow.stored_results,
        FlowEvent.objects.filter(flow=flow).count(),
    )


# --- versions written on create and update ------------------------------------------------------


def test_a_version_is_written_on_create_and_on_each_update_with_keys_kept(user):
    routine = api.create_routine("r", [step("t_echo", "First"), "t_wait"], owner=user)
    v1 = steps_of(routine)
    assert [s["script"] for s in v1] == ["t_echo", "t_wait"]
    assert all(s["key"] for s in v1) and v1[0]["key"] != v1[1]["key"]
    # An edit as the builder posts it: the kept steps carry their keys, a new one has none.
    edit(routine, user, [v1[0], step("t_echo", "Inserted"), {**v1[1], "label": "Answer"}])
    v2 = steps_of(routine)
    assert [s["key"] for s in v2][0::2] == [v1[0]["key"], v1[1]["key"]]
    assert v2[1]["key"] not in {v1[0]["key"], v1[1]["key"]} and v2[1]["key"]
    assert v2[2]["label"] == "Answer"
    versions = list(api.routine_versions(routine))
    assert [(v.number, len(v.steps), v.author) for v in versions] == [(2, 3, user), (1, 2, user)]
    assert RoutineVersion.objects.get(routine=routine, number=1).steps == v1  # kept for good
    assert [s.key for s in routine.steps.order_by("order")] == [s["key"] for s in v2]


# --- the diff ------------------------------------------------------------------------------------


def test_diff_says_added_removed_moved_and_changed(user):
    routine = api.create_routine(
        "Onboarding",
        [step("t_echo", "A"), step("t_wait", "B"), step("t_echo", "C"), step("t_echo", "D")],
        owner=user,
        description="first",
    )
    a, b, c, d = steps_of(routine)
    edit(
        routine,
        user,
        [
            b,
            {**a, "params": {"x": 1}},
            step("t_echo", "X"),
            {**d, "label": "D2", "overrides": {"retries": 2}},
        ],
        name="Onboarding 2",
        description="second",
    )
    diff = api.version_diff(routine, 1, 2)
    rows = [
        (r.left and r.left.name, r.right and r.right.name, r.kind, list(r.changes))
        for r in diff.rows
    ]
    assert rows == [
        ("B", "B", "changed", ["moved"]),
        ("A", "A", "changed", ["params"]),
        ("C", None, "removed", ["removed"]),  # where it was, before what came there
        (None, "X", "added", ["added"]),
        ("D", "D2", "changed", ["label", "overrides"]),
    ]
    assert diff.rows[1].params_changed == ("x",)
    assert (diff.rows[0].left.position, diff.rows[0].right.position) == (1, 0)
    assert diff.name == ("Onboarding", "Onboarding 2")
    assert diff.description == ("first", "second")
    assert diff.changed
    assert diff.summary() == {
        "added": ["X"],
        "removed": ["C"],
        "moved": ["B"],
        "changed": ["A", "D2"],
    }
    back = api.version_diff(routine, 2, 1)  # either way round
    assert [r.kind for r in back.rows].count("added") == 1
    assert [r.name for r in back.rows if r.kind == "removed"] == ["X"]
    same = api.version_diff(routine, 2, 2)
    assert not same.changed and {r.kind for r in same.rows} == {"same"}
    as_json = diff.as_dict()
    assert as_json["rows"][3]["right"]["name"] == "X" and as_json["rows"][3]["left"] is None


def test_a_step_inserted_before_the_others_shifts_them_without_moving_them(user):
    routine = api.create_routine("r", ["t_echo", "t_wait", "t_echo"], owner=user)
    edit(routine, user, [step("t_echo", "New"), *steps_of(routine)])
    kinds = [(r.kind, list(r.changes)) for r in api.version_diff(routine, 1, 2).rows]
    assert kinds == [("added", ["added"]), ("same", []), ("same", []), ("same", [])]


def test_a_replaced_step_shows_as_removed_then_added_in_its_place(user):
    routine = api.create_routine(
        "r", [step("t_echo", "A"), step("t_wait", "B"), "t_echo"], owner=user
    )
    a, b, c = steps_of(routine)
    edit(routine, user, [a, step("t_wait", "B2"), c])
    rows = [(r.name, r.kind) for r in api.version_diff(routine, 1, 2).rows]
    assert rows == [("A", "same"), ("B", "removed"), ("B2", "added"), ("T echo", "same")]


def test_steps_without_keys_are_aligned_by_position(user):
    """Versions recorded before steps had identities compare step by step by position."""
    routine = api.create_routine("r", [step("t_echo", "A"), step("t_wait", "B")], owner=user)
    edit(routine, user, [step("t_echo", "A"), step("t_echo", "B2"), step("t_echo", "C")])
    for number in (1, 2):
        row = RoutineVersion.objects.get(routine=routine, number=number)
        row.steps = [{**s, "key": ""} for s in row.steps]
        row.save()
    rows = [(r.kind, list(r.changes)) for r in api.version_diff(routine, 1, 2).rows]
    assert rows == [("same", []), ("changed", ["label", "script"]), ("added", ["added"])]


def test_diff_of_a_version_that_does_not_exist_names_the_versions(user):
    routine = api.create_routine("r", ["t_echo"], owner=user)
    edit(routine, user, ["t_wait"])
    with pytest.raises(NoSuchVersion, match="no version 7; its versions are 1 and 2"):
        api.version_diff(routine, 1, 7)
    with pytest.raises(ValueError, match="version number"):
        api.version_diff(routine, True, 1)


# --- moving a flow onto another version ----------------------------------------------------------


def test_a_step_inserted_before_the_current_one_shifts_the_position(user):
    routine = api.create_routine("r", [step("t_echo", "A"), step("t_wait", "B")], owner=user)
    flow = api.start_flow(routine, user)
    assert (flow.state, flow.position) == ("waiting", 1)
    a, b = steps_of(routine)
    edit(routine, user, [step("t_echo", "Before"), a, b, step("t_echo", "After")])
    assert api.map_position(flow, 2) == 2
    moved = api.change_version(flow, 2, user, reason="new process")
    assert (moved.routine_version, moved.state, moved.position) == (2, "waiting", 2)
    assert [s["name"] for s in moved.steps] == ["Before", "A", "B", "After"]
    assert [s.get("key") for s in moved.steps] == [s["key"] for s in steps_of(routine)]
    assert moved.steps == routine.snapshot()  # the shape a flow started on v2 pins
    # A's result went with it, to its new place; "Before" never ran.
    assert moved.results[:2] == [None, {"position": 0, "params": {}, "seen": 0}]
    event = FlowEvent.objects.get(flow=flow, kind="manual.change_version")
    assert event.actor == user and event.message == "new process"
    data = event.data
    assert (data["from_version"], data["to_version"], data["from"], data["to"]) == (1, 2, 1, 2)
    assert data["mapped"] is True and data["reason"] == "new process"
    assert data["kept"] == [[0, 1]] and data["dropped"] == []
    assert data["diff"] == {"added": ["Before", "After"], "removed": [], "moved": [], "changed": []}
    # It goes on from there on v2's steps.
    done = api.push_input(moved, {"answer": "yes"}, user)
    assert (done.state, done.results[3]["position"]) == ("complete", 3)


def test_the_current_step_removed_needs_a_position(user):
    routine = api.create_routine(
        "r", [step("t_echo", "A"), step("t_wait", "B"), step("t_echo", "C")], owner=user
    )
    flow = api.start_flow(routine, user)
    a, b, c = steps_of(routine)
    edit(routine, user, [a, step("t_wait", "B new"), c])
    assert api.map_position(flow, 2) is None
    before = frozen(flow)
    with pytest.raises(FlowStateError, match=r"step 2 \(B\) of the flow is not in version 2"):
        api.change_version(flow, 2, user)
    assert frozen(flow) == before
    moved = api.change_version(flow, 2, user, position=1, reason="B was replaced")
    assert (moved.routine_version, moved.position, moved.state) == (2, 1, "waiting")
    assert moved.current_step["name"] == "B new"
    assert FlowEvent.objects.get(flow=flow, kind="manual.change_version").data["mapped"] is False


def test_results_of_steps_the_target_lacks_are_dropped_and_recorded(user):
    routine = api.create_routine(
        "r", [step("t_echo", "A"), step("t_echo", "Gone"), step("t_fail", "F")], owner=user
    )
    flow = api.start_flow(routine, user)
    assert (flow.state, flow.position) == ("failed", 2)
    a, gone, f = steps_of(routine)
    edit(routine, user, [a, {**f, "script": "t_echo", "label": "F fixed"}])
    moved = api.change_version(flow, 2, user, reason="fixed")
    assert (moved.state, moved.position, moved.routine_version) == ("complete", 1, 2)
    assert moved.results[0] == {"position": 0, "params": {}, "seen": 0}
    assert moved.results[1] == {"position": 1, "params": {}, "seen": 1}
    data = FlowEvent.objects.get(flow=flow, kind="manual.change_version").data
    assert data["kept"] == [[0, 0]]
    assert data["dropped"] == [
        {
            "step": 1,
            "key": gone["key"],
            "name": "Gone",
            "result": {"position": 1, "params": {}, "seen": 1},
        }
    ]
    assert data["diff"]["removed"] == ["Gone"] and data["diff"]["changed"] == ["F fixed"]


def test_a_flow_started_before_steps_had_keys_goes_by_its_versions_record(user):
    routine = api.create_routine("r", ["t_echo", "t_wait"], owner=user)
    flow = api.start_flow(routine, user)
    Flow.objects.filter(pk=flow.pk).update(
        steps=[{k: v for k, v in s.items() if k != "key"} for s in flow.steps]
    )
    flow.refresh_from_db()
    edit(routine, user, [step("t_echo", "New"), *steps_of(routine)])
    assert api.map_position(flow, 2) == 2
    assert api.change_version(flow, 2, user).position == 2


def test_a_killed_or_pending_flow_may_move_and_an_operator_may_move_anyones(user, make_user):
    routine = api.create_routine("r", ["t_wait"], owner=user)
    edit(routine, user, steps_of(routine) + ["t_echo"])
    flow = api.start_flow(routine, user)
    Flow.objects.filter(pk=flow.pk).update(routine_version=1, steps=flow.steps[:1])
    api.kill_flow(flow, user, reason="stop")
    boss = make_user("boss", is_staff=True)
    moved = api.change_version(flow, 2, boss, reason="by the operator")
    assert (moved.state, moved.routine_version, moved.length) == ("waiting", 2, 2)
    assert FlowEvent.objects.get(flow=flow, kind="manual.change_version").actor == boss
    Flow.objects.filter(pk=flow.pk).update(state="pending")
    back = api.change_version(flow, 1, user)
    assert (back.routine_version, back.length) == (1, 1)


def test_refusals_are_clear_and_change_nothing(user, other_user):
    routine = api.create_routine("r", [step("t_echo", "A"), step("t_wait", "B")], owner=user)
    flow = api.start_flow(routine, user)
    edit(routine, user, steps_of(routine))
    before = frozen(flow)

    def refused(error, match, **kwargs):
        call = {"flow": flow, "version_number": 2, "user": user, **kwargs}
        with pytest.raises(error, match=match):
            api.change_version(
                call.pop("flow"), call.pop("version_number"), call.pop("user"), **call
            )
        assert frozen(flow) == before, kwargs

    refused(NoSuchVersion, "no version 9; its versions are 1 and 2", version_number=9)
    refused(ValueError, "version number", version_number="2")
    refused(ValueError, "position must be", position=True)
    refused(FlowStateError, "out of range: version 2 has steps 0 to 1", position=2)
    refused(FlowStateError, "out of range", position=-1)
    refused(FlowStateError, "already on version 1$", version_number=1)
    refused(FlowStateError, "already on version 1; .*move the flow", version_number=1, position=0)
    refused(PermissionDenied, "may not act", user=other_user)
    refused(StaleFlowError, "changed since you loaded it", version=flow.version - 1)
    for state in ("running", "complete", "retrying"):
        Flow.objects.filter(pk=flow.pk).update(state=state)
        before = frozen(flow)
        refused(FlowStateError, f"is {state} at step 2.*only a pending, waiting, failed or killed")
    Flow.objects.filter(pk=flow.pk).update(state="waiting")
    before = frozen(flow)
    RoutineVersion.objects.filter(routine=routine, number=2).update(
        steps=[{**s, "script": "no_such_script"} for s in steps_of(routine)]
    )
    refused(FlowStateError, r"version 2 uses unregistered scripts: \['no_such_script'\]")


def test_plan_version_move_says_what_would_happen(user):
    routine = api.create_routine("r", [step("t_echo", "A"), step("t_wait", "B")], owner=user)
    flow = api.start_flow(routine, user)
    a, b = steps_of(routine)
    edit(routine, user, [b, step("t_echo", "Z")])
    plan = api.plan_version_move(flow, 2)
    assert (plan.mapped, plan.position, plan.problem) == (0, 0, "")
    assert [d["name"] for d in plan.dropped] == ["A"] and plan.kept == []
    assert [r.kind for r in plan.diff.rows] == ["removed", "same", "added"]
    assert frozen(flow)[0] == flow.version  # nothing written


@pytest.mark.consumer
def test_a_failed_flow_moved_onto_v2_completes_on_its_steps(consumer, user):
    routine = api.create_routine(
        "Invoices",
        [step("t_echo", "Fetch"), step("t_fail", "Send"), step("t_echo", "Log")],
        owner=user,
    )
    flow = api.start_flow(routine, user)
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "failed"), consumer.logs()
    fetch, send, log = steps_of(routine)
    edit(routine, user, [fetch, step("t_echo", "Send again"), log, step("t_offloaded", "Archive")])
    api.change_version(flow, 2, user, position=1, reason="the sender is fixed in v2")
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "complete"), consumer.logs()
    flow.refresh_from_db()
    assert flow.routine_version == 2 and flow.position == 3
    assert [s["name"] for s in flow.steps] == ["Fetch", "Send again", "Log", "Archive"]
    assert flow.results[0] == {"position": 0, "params": {}, "seen": 0}  # kept from v1
    assert flow.results[1]["position"] == 1 and flow.results[3] == {"offloaded": 3}
    kinds = list(FlowEvent.objects.filter(flow=flow).order_by("seq").values_list("kind", flat=True))
    assert kinds.index("manual.change_version") < len(kinds) - 1
    assert kinds[-1] == "flow.complete"
