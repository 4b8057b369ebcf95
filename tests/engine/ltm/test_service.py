"""The LTM slice's service (engine.ltm.service) with Huey in immediate mode: operator
controls, who may act, starting, and a loaded run as a read-only view with its diagram."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from django.core.exceptions import PermissionDenied

from engine import api
from engine.core.errors import FlowStateError
from engine.models import LtmEvent, LtmExecution, LtmInstance, LtmRun
from tests import ltm_catalog as catalog
from tests.engine.ltm.support import (
    Flaky,
    Stopper,
    django_runtime,  # noqa: F401  (autouse fixture)
    kinds,
    statuses,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


# -- operator controls --------------------------------------------------------------------------


def test_fire_transition_in_a_machine_namespace_records_the_operator(user):
    run_id = api.start_ltm("broadcast", user)

    run = api.fire_transition(run_id, "go", user, {"why": "manual"}, "broadcast.sub_c")

    assert run.state == "complete"
    assert statuses(run_id)["broadcast.sub_c.done"] == "active"
    fired = LtmEvent.objects.get(run_id=run_id, kind="manual.transition")
    assert fired.actor == user and fired.data["payload"] == {"why": "manual"}
    moved = LtmEvent.objects.filter(run_id=run_id, kind="transition").last()
    assert moved.actor == user and moved.data["to"] == ["broadcast.sub_c.done"]
    with pytest.raises(FlowStateError, match="moves nothing"):
        api.fire_transition(run_id, "go", user, namespace="broadcast.sub_c")


def test_kill_and_what_a_killed_run_refuses(user):
    run_id = api.start_ltm("broadcast", user)

    run = api.kill_ltm(run_id, user, reason="enough")

    assert run.state == "killed" and run.error == "enough" and run.finished is not None
    kill = LtmEvent.objects.get(run_id=run_id, kind="manual.kill")
    assert kill.actor == user and kill.data["reason"] == "enough"
    with pytest.raises(FlowStateError, match="killed"):
        api.fire_transition(run_id, "go", user, namespace="broadcast.sub_c")
    with pytest.raises(FlowStateError, match="killed"):
        api.kill_ltm(run_id, user)
    with pytest.raises(FlowStateError, match="killed"):
        api.retry_ltm(run_id, user)


def test_a_kill_discards_the_executing_run_and_what_is_queued(user):
    Stopper.operator = user
    run_id = api.start_ltm("stop_ltm", user)

    root = api.load_ltm(run_id)
    assert root.run.state == "killed" and root.run.error == "stop"
    assert root.instances["stop_ltm.stopper"].state == {}
    assert root.instances["stop_ltm.fine"].state == {} and "fine" not in root.state
    executions = LtmExecution.objects.filter(run_id=run_id).exclude(fqn="stop_ltm")
    assert sorted(e.status for e in executions) == ["stale", "stale"]
    assert kinds(run_id)[-2:] == ["manual.kill", "run.state"]


def test_only_the_owner_staff_or_operators_may_act(user, other_user, make_user):
    run_id = api.start_ltm("broadcast", user)

    for action in (
        lambda: api.fire_transition(run_id, "go", other_user, namespace="broadcast.sub_c"),
        lambda: api.kill_ltm(run_id, other_user),
        lambda: api.retry_ltm(run_id, other_user),
        lambda: api.load_ltm(run_id, user=other_user),
    ):
        with pytest.raises(PermissionDenied):
            action()
    assert list(api.visible_ltm_runs(other_user)) == []
    staff = make_user("staff", is_staff=True)
    assert api.fire_transition(run_id, "go", staff, namespace="broadcast.sub_c").state
    assert api.load_ltm(run_id, user=user).run.owner == user


def test_starting_is_for_signed_in_users_and_known_names(user):
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(PermissionDenied):
        api.start_ltm("my_ltm", AnonymousUser())
    with pytest.raises(ValueError, match="unknown LTM 'nope'; known: .*my_ltm"):
        api.start_ltm("nope", user)
    with pytest.raises(ValueError, match="JSON"):
        api.start_ltm("probe", user, {"when": object()})
    assert not LtmRun.objects.exists()


def test_a_loaded_run_is_a_read_only_view(user):
    run_id = api.start_ltm("fan_out", user, {"size": 2})

    view = api.load_ltm(run_id)

    assert view.run.id == run_id and view.run.name == "fan_out" and view.run.state == "complete"
    assert view.run.owner == user and view.id == run_id
    assert view.status == "active" and view.state["total"] == 10
    assert list(view.instances)[:2] == ["fan_out", "fan_out.batch"]  # parents first
    work = view.instances["fan_out.batch.work_1"]
    assert (work.name, work.status, work.params, work.error) == (
        "work_1",
        "completed",
        {"n": 1},
        None,
    )
    assert callable(catalog.FanOut.run) and not hasattr(view, "transition")
    for change in (
        lambda: setattr(view, "run", None),
        lambda: setattr(view.run, "state", "killed"),
        lambda: setattr(work, "status", "queued"),
    ):
        with pytest.raises(AttributeError):  # FrozenInstanceError
            change()
    for change in (
        lambda: view.state.__setitem__("total", 0),
        lambda: work.params.__setitem__("n", 9),
        lambda: view.instances.__setitem__("fan_out.x", work),
        lambda: view.instances.pop("fan_out.batch"),
    ):
        with pytest.raises((TypeError, AttributeError)):
            change()
    view.instances["fan_out.batch"].state["results"].append("mine")  # a copy of what is stored
    batch = LtmInstance.objects.get(run_id=run_id, fqn="fan_out.batch")
    assert sorted(api.load_ltm(run_id).instances["fan_out.batch"].state["results"]) == [0, 10]
    assert sorted(batch.state["results"]) == [0, 10]
    assert api.load_ltm(run_id).state == LtmRun.objects.get(pk=run_id).global_state


# -- diagrams -----------------------------------------------------------------------------------


def test_the_graph_of_a_loaded_run(user):
    Flaky.failures = 1
    run_id = api.start_ltm("flaky_ltm", user)

    graph = api.load_ltm(run_id).graph()

    assert graph.title == "flaky_ltm" and graph.status == "active"
    assert graph.node("flaky_ltm.flaky").status == "failed"
    assert graph.node("flaky_ltm.fine").status == "active"
    dot = api.load_ltm(run_id).to_dot()
    assert '"flaky_ltm.flaky" [label="flaky", fillcolor="#ffcdd2"' in dot
    assert "cluster___legend" in dot and '"failed"' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' is not installed")
def test_the_run_diagram_renders_as_svg_with_dot(user):
    run_id = api.start_ltm("fan_out", user, {"size": 3})

    svg = subprocess.run(
        ["dot", "-Tsvg"],
        input=api.load_ltm(run_id).to_dot(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "work_2" in svg and "#c8e6c9" in svg  # a completed worker, coloured
