"""LTM runs stored by Django and executed by Huey in immediate mode: the seed's examples,
statuses, run-to-completion, failures and retries, operator controls, history, diagrams."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied

from engine import api
from engine.core.errors import FlowStateError
from engine.core.ltm.node import LTM
from engine.core.ltm.registry import register, unregister
from engine.core.ltm.runtime import get_default_runtime, set_default_runtime
from engine.ltm.executor import DjangoRuntime
from engine.ltm.registry import discover
from engine.models import LtmAppend, LtmEvent, LtmExecution, LtmInstance, LtmRun
from tests import ltm_catalog as catalog
from tests.conftest import ROOT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


# -- machines of this module ----------------------------------------------------------------


class Probe(LTM):
    """Stores its payload and what the database holds of it while it runs."""

    def run(self, **payload: Any) -> None:
        self.update_state({"payload": payload})
        self.root.update_state({"seen": True})
        row = LtmInstance.objects.get(run_id=self.id, fqn=self.fqn)
        run = LtmRun.objects.get(pk=self.id)
        self.update_state(
            {"stored_inside": dict(row.state), "global_inside": dict(run.global_state)}
        )
        self.update_state({"status_inside": row.status})


class Flaky(LTM):
    failures = 1  # how many executions raise before one succeeds

    def run(self, **payload: Any) -> None:
        self.update_state({"tried": True})
        if Flaky.failures > 0:
            Flaky.failures -= 1
            raise RuntimeError("flaky")
        self.update_state({"payload": payload})


class Fine(LTM):
    def run(self, **payload: Any) -> None:
        self.update_state({"fine": True})


class FlakyLtm(LTM):
    init = [Flaky, Fine]


class NotJson(LTM):
    def run(self, **payload: Any) -> None:
        self.update_state({"bad": object()})


class NotJsonLtm(LTM):
    init = [NotJson]


class Target(LTM):
    pass


class Reached(LTM):
    pass


class Racer(LTM):
    """Queues 'finish', then an operator fires it first: planned later, it moves nothing."""

    operator: Any = None

    def run(self, **payload: Any) -> None:
        self.transition("finish")
        api.fire_transition(self.id, "finish", Racer.operator)


class RaceLtm(LTM):
    init = [Target, Racer]
    transitions = [{"from": Target, "label": "finish", "to": Reached}]


class AppendTwice(LTM):
    def run(self, **payload: Any) -> None:
        runtime = self.runtime
        assert isinstance(runtime, DjangoRuntime)
        first = runtime.atomic_state_append(self.root, "items", "a", 0)
        again = runtime.atomic_state_append(self.root, "items", "a", 0)
        self.update_state({"first": first, "again": again})


class AppendLtm(LTM):
    init = [AppendTwice]

    def run(self, **payload: Any) -> None:
        self.update_state({"items": []})


class Stopper(LTM):
    """Kills its own run while it executes: what it queued is discarded."""

    operator: Any = None

    def run(self, **payload: Any) -> None:
        self.update_state({"after_kill": True})
        api.kill_ltm(self.id, Stopper.operator, reason="stop")


class StopLtm(LTM):
    init = [Stopper, Fine]


LOCAL_ROOTS = [Probe, FlakyLtm, NotJsonLtm, RaceLtm, AppendLtm, StopLtm]


@pytest.fixture(autouse=True)
def django_runtime():
    """The registry and default runtime as the engine sets them at start-up (other test
    modules may have changed them)."""
    previous = get_default_runtime()
    discover()
    for cls in LOCAL_ROOTS:
        register(cls)
    set_default_runtime(DjangoRuntime())
    yield
    set_default_runtime(previous)
    for cls in LOCAL_ROOTS:
        unregister(cls)


def statuses(run_id: str) -> dict[str, str]:
    return {fqn: i.status for fqn, i in api.load_ltm(run_id).instances.items()}


def kinds(run_id: str, fqn: str | None = None) -> list[str]:
    events = LtmEvent.objects.filter(run_id=run_id).order_by("seq")
    return [e.kind for e in events if fqn is None or e.fqn == fqn]


# -- the seed's example ---------------------------------------------------------------------


def test_seed_example_through_django(user, capsys):
    run_id = api.start_ltm("my_ltm", user)

    assert capsys.readouterr().out.splitlines() == ["state_value", "global_value", "end"]
    root = api.load_ltm(run_id)
    assert root.state == {"global_key": "global_value"}
    assert root.status == "active"
    assert root.instances["my_ltm.my_state"].state == {"internal_state_key": "state_value"}
    assert statuses(run_id) == {
        "my_ltm": "active",
        "my_ltm.my_state": "completed",
        "my_ltm.end_state": "active",
    }
    run = LtmRun.objects.get(pk=run_id)
    assert run.owner == user and run.state == "complete" and run.finished is not None
    assert set(LtmExecution.objects.filter(run=run).values_list("status", flat=True)) == {"done"}


def test_my_ltm_start_from_code_runs_under_django(capsys, make_user):
    root = catalog.MyLtm()
    run_id = root.start()

    assert root.id == run_id and isinstance(root.runtime, DjangoRuntime)
    assert capsys.readouterr().out.splitlines() == ["state_value", "global_value", "end"]
    assert root.status == "active" and root.state == {"global_key": "global_value"}
    assert root.child("end_state").status == "active"
    run = LtmRun.objects.get(pk=run_id)
    assert run.owner is None and run.state == "complete"
    assert api.load_ltm(run_id).state == {"global_key": "global_value"}
    assert list(api.visible_ltm_runs(make_user("someone"))) == []
    assert list(api.visible_ltm_runs(make_user("admin", is_staff=True))) == [run]


def test_app_start_up_installs_the_django_runtime_and_registers_roots():
    code = (
        "import django; django.setup()\n"
        "from engine.core.ltm.registry import ltm_registry\n"
        "from engine.core.ltm.runtime import get_default_runtime\n"
        "print(type(get_default_runtime()).__name__)\n"
        "print(sorted(ltm_registry()))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    runtime, names = done.stdout.splitlines()
    assert runtime == "DjangoRuntime"
    for name in ("my_ltm", "fan_out", "deep", "broadcast", "order_process"):
        assert f"'{name}'" in names
    assert "'my_state'" not in names and "'level1'" not in names  # children are not roots


# -- statuses, payload, run to completion ------------------------------------------------------


def test_statuses_move_init_queued_active_completed(user):
    run_id = api.start_ltm("my_ltm", user)

    changes = [
        e.data["to"]
        for e in LtmEvent.objects.filter(run_id=run_id, kind="status", fqn="my_ltm.my_state")
    ]
    assert changes == ["queued", "active", "completed"]
    assert statuses(run_id)["my_ltm.my_state"] == "completed"
    states = [e.data["to"] for e in LtmEvent.objects.filter(run_id=run_id, kind="run.state")]
    assert states == ["running", "complete"]


def test_payload_reaches_run_and_nothing_is_written_before_it_returns(user):
    run_id = api.start_ltm("probe", user, {"answer": 42})

    root = api.load_ltm(run_id)
    assert root.state["payload"] == {"answer": 42}
    assert root.state["stored_inside"] == {} and root.state["global_inside"] == {}
    assert root.state["status_inside"] == "active"  # claimed and shown before run() ran
    assert root.state["seen"] is True


def test_a_raise_writes_nothing_records_the_error_and_the_state_can_be_retried(user):
    Flaky.failures = 1
    run_id = api.start_ltm("flaky_ltm", user)

    root = api.load_ltm(run_id)
    flaky = root.instances["flaky_ltm.flaky"]
    assert flaky.status == "failed" and flaky.state == {}
    assert "RuntimeError: flaky" in (flaky.error or "")
    assert root.instances["flaky_ltm.fine"].state == {"fine": True}  # the other branch ran
    run = root.run
    assert run.state == "failed" and "flaky_ltm.flaky failed: RuntimeError: flaky" in run.error
    error = LtmEvent.objects.get(run_id=run_id, kind="error")
    assert error.fqn == "flaky_ltm.flaky" and "RuntimeError: flaky" in error.data["error"]

    api.retry_ltm(run_id, user)

    root = api.load_ltm(run_id)
    assert root.instances["flaky_ltm.flaky"].status == "active"
    assert root.instances["flaky_ltm.flaky"].state == {"tried": True, "payload": {}}
    assert root.run.state == "complete" and root.run.error == ""
    retry = LtmEvent.objects.get(run_id=run_id, kind="manual.retry")
    assert retry.actor == user and retry.data == {"states": ["flaky_ltm.flaky"]}
    with pytest.raises(FlowStateError, match="no failed state"):
        api.retry_ltm(run_id, user)


def test_a_catalog_failure_discards_updates_and_transitions(user):
    run_id = api.start_ltm("failing_ltm", user)

    root = api.load_ltm(run_id)
    assert root.state == {} and "failing_ltm.aftermath" not in root.instances
    assert root.instances["failing_ltm.explode"].status == "failed"
    assert kinds(run_id, "failing_ltm.explode") == ["status", "status", "status", "error"]
    changes = LtmEvent.objects.filter(run_id=run_id, kind="status", fqn="failing_ltm.explode")
    assert [e.data["to"] for e in changes] == ["queued", "active", "failed"]


def test_a_state_that_is_not_json_fails_its_execution_clearly(user):
    run_id = api.start_ltm("not_json_ltm", user)

    state = api.load_ltm(run_id).instances["not_json_ltm.not_json"]
    assert state.status == "failed" and state.state == {}
    assert "the state of not_json_ltm.not_json must be JSON-serialisable" in (state.error or "")


def test_atomic_append_is_idempotent_per_execution_and_call(user):
    run_id = api.start_ltm("append_ltm", user)

    root = api.load_ltm(run_id)
    assert root.state["items"] == ["a"]
    assert root.instances["append_ltm.append_twice"].state == {"first": ["a"], "again": ["a"]}
    assert LtmAppend.objects.filter(execution__run_id=run_id).count() == 1
    assert kinds(run_id).count("state.appended") == 1


# -- transitions --------------------------------------------------------------------------------


def test_a_namespaced_transition_moves_two_sibling_machines_and_leaves_a_third(user):
    run_id = api.start_ltm("broadcast", user)

    found = statuses(run_id)
    assert found["broadcast.sub_a.done"] == found["broadcast.sub_b.done"] == "active"
    assert found["broadcast.sub_a.waiting"] == found["broadcast.sub_b.waiting"] == "completed"
    assert found["broadcast.sub_c.waiting"] == "active"
    assert "broadcast.sub_c.done" not in found
    moved = LtmEvent.objects.filter(run_id=run_id, kind="transition", data__label="go")
    assert sorted(e.fqn for e in moved) == ["broadcast.sub_a", "broadcast.sub_b"]
    assert {e.data["namespace"] for e in moved} == {"global"}


def test_a_transition_that_moves_nothing_by_the_time_it_is_planned_is_recorded(user):
    Racer.operator = user
    run_id = api.start_ltm("race_ltm", user)

    skipped = LtmEvent.objects.get(run_id=run_id, kind="transition.skipped")
    assert skipped.fqn == "race_ltm.racer" and skipped.data["label"] == "finish"
    assert kinds(run_id).count("transition") == 1  # the operator's
    assert statuses(run_id)["race_ltm.reached"] == "active"


def test_sub_machines_nested_three_deep(user):
    run_id = api.start_ltm("deep", user)

    root = api.load_ltm(run_id)
    assert root.state == {"reached": "deep.level1.level2.level2_done"}
    assert root.instances["deep.level1.level2.level3"].status == "completed"
    assert root.instances["deep.level1.level2.level3.leaf"].status == "completed"
    assert root.instances["deep.level1"].status == "active"


def test_parameterised_instances_fork_and_join(user):
    run_id = api.start_ltm("fan_out", user, {"size": 8})

    root = api.load_ltm(run_id)
    work = root.instances["fan_out.batch.work_3"]
    assert work.params == {"n": 3} and work.status == "completed"
    assert sorted(root.instances["fan_out.batch"].state["results"]) == [n * 10 for n in range(8)]
    assert root.state["total"] == 280
    assert LtmInstance.objects.get(run_id=run_id, fqn="fan_out.batch.work_7").params == {"n": 7}


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


# -- history and diagrams ------------------------------------------------------------------------


def test_events_are_numbered_one_to_n_and_carry_what_happened(user):
    run_id = api.start_ltm("my_ltm", user)

    events = list(LtmEvent.objects.filter(run_id=run_id).order_by("seq"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert LtmRun.objects.get(pk=run_id).seq == len(events)
    assert events[0].kind == "run.created" and events[0].actor == user
    transition = next(e for e in events if e.kind == "transition")
    assert transition.data["label"] == "my_transition" and transition.data["payload"] == {}
    updates = [e.data["update"] for e in events if e.kind == "state.updated"]
    assert updates == [{"internal_state_key": "state_value"}, {"global_key": "global_value"}]
    assert events[-1].kind == "run.state" and events[-1].state == "complete"


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


def test_live_events_are_published_after_commit(user):
    from engine import events as engine_events

    seen: list[dict[str, Any]] = []
    engine_events.connect(seen.extend)
    try:
        run_id = api.start_ltm("my_ltm", user)
    finally:
        engine_events.disconnect(seen.extend)
    mine = [e for e in seen if e.get("type") == "ltm.event" and e["run"] == run_id]
    assert [e["seq"] for e in mine] == list(range(1, len(mine) + 1))
    assert mine[-1]["state"] == "complete" and mine[0]["owner"] == user.pk
    json.dumps(mine)  # what a channel layer carries


# -- the studio's demo machines -----------------------------------------------------------------


def test_the_demo_order_process_forks_joins_ships_and_waits_for_confirmation(user):
    run_id = api.start_ltm("order_process", user, {"order": "A-1"})

    root = api.load_ltm(run_id)
    assert sorted(root.state["checks"]) == ["fraud", "payment", "stock"]
    assert root.state["tracking"] == "TRK-A-1"
    assert root.instances["order_process.ship"].status == "completed"
    assert root.instances["order_process.await_confirmation"].status == "active"

    api.fire_transition(run_id, "confirm", user, {"by": "courier"})

    root = api.load_ltm(run_id)
    assert root.state["delivered"] is True and root.state["confirmation"] == {"by": "courier"}


def test_the_demo_file_import_runs_one_state_per_file(user):
    run_id = api.start_ltm("file_import", user, {"files": [7, 8]})

    root = api.load_ltm(run_id)
    assert root.state["summary"] == "2 files imported"
    assert root.instances["file_import.import_7"].params == {"file_id": 7}
