"""Labeled Transition Models, pure core: definitions, runs in the InMemoryRuntime, and the
seams (execute / plan / records) the persistence layer builds on. No Django involved."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from typing import Any

import pytest

from engine.core.ltm.definition import InvalidDefinition, InvalidTransition, LTMDefinitionWarning
from engine.core.ltm.node import LTM
from engine.core.ltm.planner import plan, plan_transition
from engine.core.ltm.records import Effects, InstanceRecord, TransitionCall
from engine.core.ltm.registry import ltm_registry, register, root_classes, unregister
from engine.core.ltm.runtime import InMemoryRuntime, set_default_runtime
from tests import ltm_catalog as catalog
from tests.conftest import ROOT


def run(cls: type[LTM], **payload: Any) -> tuple[LTM, InMemoryRuntime]:
    runtime = InMemoryRuntime()
    root = cls(runtime=runtime)
    root.start(**payload)
    return root, runtime


def statuses(root: LTM) -> dict[str, str]:
    return {instance.fqn: instance.status for instance in root.walk()}


def status_changes(runtime: InMemoryRuntime, root: LTM, fqn: str) -> list[str]:
    events = runtime.runs[root.id or ""].events
    return [e["data"]["to"] for e in events if e["kind"] == "status" and e["fqn"] == fqn]


# -- the seed README ----------------------------------------------------------------------


def test_seed_example_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    root, runtime = run(catalog.MyLtm)

    assert capsys.readouterr().out.splitlines() == ["state_value", "global_value", "end"]
    assert statuses(root) == {
        "my_ltm": "active",
        "my_ltm.my_state": "completed",
        "my_ltm.end_state": "active",
    }
    assert root.state == {"global_key": "global_value"}
    assert root.child("my_state").state == {"internal_state_key": "state_value"}
    assert catalog.EndState.name == "end_state"


def test_the_default_runtime_is_in_memory(capsys: pytest.CaptureFixture[str]) -> None:
    set_default_runtime(None)
    root = catalog.MyLtm()
    run_id = root.start()

    assert root.id == run_id
    assert isinstance(root.runtime, InMemoryRuntime)
    assert root.child("end_state").id == run_id
    assert "end" in capsys.readouterr().out


def test_statuses_go_init_queued_active_completed() -> None:
    root, runtime = run(catalog.MyLtm)

    assert status_changes(runtime, root, "my_ltm.my_state") == ["queued", "active", "completed"]
    first = runtime.runs[root.id or ""].events[0]
    assert first == {"kind": "status", "fqn": "my_ltm", "data": {"from": "init", "to": "queued"}}
    assert catalog.MyLtm().status == "init"


# -- payload, state, and what is stored when ----------------------------------------------


class Probe(LTM):
    """Looks at its own state and at the stored records while it runs."""

    def run(self, **payload: Any) -> None:
        self.update_state({"payload": payload})
        runtime = self.runtime
        assert isinstance(runtime, InMemoryRuntime)
        stored = runtime.records(self.id or "")[self.fqn].state
        self.update_state(
            {
                "status_inside": self.status,
                "seen_in_memory": "payload" in self.state,
                "seen_stored": "payload" in stored,
            }
        )


def test_payload_reaches_run_and_updates_are_stored_when_it_returns() -> None:
    root, runtime = run(Probe, answer=42)

    assert root.state == {
        "payload": {"answer": 42},
        "status_inside": "active",
        "seen_in_memory": True,
        "seen_stored": False,
    }
    assert runtime.records(root.id or "")["probe"].state["seen_stored"] is False
    assert runtime.load(root.id or "").state["payload"] == {"answer": 42}


def test_state_is_a_read_only_view() -> None:
    root = catalog.MyLtm()
    with pytest.raises(TypeError):
        root.state["x"] = 1  # type: ignore[index]


def test_update_state_before_start_sets_the_initial_state_and_after_is_refused() -> None:
    root = catalog.MyLtm(runtime=InMemoryRuntime())
    root.update_state([{"a": 1}, {"b": 2}])
    root.start()

    assert root.state["a"] == 1 and root.state["b"] == 2
    with pytest.raises(RuntimeError, match="outside run"):
        root.update_state({"c": 3})


def test_a_run_that_raises_changes_nothing_and_records_the_error() -> None:
    root, runtime = run(catalog.FailingLtm)

    explode = root.child("explode")
    assert explode.status == "failed"
    assert explode.error is not None and "ValueError: boom" in explode.error
    assert explode.state == {}
    assert root.state == {}
    assert "aftermath" not in root.children
    events = [e for e in runtime.runs[root.id or ""].events if e["fqn"] == explode.fqn]
    assert [e["kind"] for e in events] == ["status", "status", "error"]
    assert status_changes(runtime, root, explode.fqn) == ["queued", "failed"]


def test_execute_rolls_back_in_memory_changes_when_run_raises() -> None:
    tree = catalog.FailingLtm.from_records([], run_id="r1")
    explode = tree.child("explode")

    effects = explode.execute({})

    assert effects.updates == [] and effects.transitions == []
    assert effects.error is not None and "boom" in effects.error
    assert explode.state == {} and tree.state == {} and explode.status == "init"


# -- transitions --------------------------------------------------------------------------


def test_a_namespaced_transition_moves_two_sibling_machines_and_leaves_a_third() -> None:
    root, _ = run(catalog.Broadcast)

    assert statuses(root) == {
        "broadcast": "active",
        "broadcast.sub_a": "active",
        "broadcast.sub_a.waiting": "completed",
        "broadcast.sub_a.done": "active",
        "broadcast.sub_b": "active",
        "broadcast.sub_b.waiting": "completed",
        "broadcast.sub_b.done": "active",
        "broadcast.sub_c": "active",
        "broadcast.sub_c.waiting": "active",
        "broadcast.kick": "completed",
        "broadcast.announce": "active",
    }


def test_an_operator_fires_a_transition_in_a_machine_namespace() -> None:
    root, runtime = run(catalog.Broadcast)

    result = runtime.fire(root.id or "", "go", namespace="broadcast.sub_c")

    assert [e["data"]["to"] for e in result.events if e["kind"] == "transition"] == [
        ["broadcast.sub_c.done"]
    ]
    assert runtime.load(root.id or "").find("broadcast.sub_c.done").status == "active"


def test_a_transition_that_moves_nothing_is_skipped_when_planned_later() -> None:
    root, runtime = run(catalog.MyLtm)

    result = runtime.fire(root.id or "", "my_transition")

    assert result.records_changed == [] and result.executions == []
    assert [call.label for call in result.skipped_transitions] == ["my_transition"]
    assert result.events[0]["kind"] == "transition.skipped"


class Refuser(LTM):
    def run(self, **payload: Any) -> None:
        try:
            self.transition("nowhere")
        except InvalidTransition as exc:
            self.update_state({"refused": str(exc)})
        self.transition("nowhere")


class RefusingLtm(LTM):
    init = [Refuser]
    transitions = [{"from": Refuser, "label": "somewhere", "to": catalog.EndState}]


def test_invalid_transition_when_a_label_moves_nothing() -> None:
    root, _ = run(RefusingLtm)

    refuser = root.child("refuser")
    assert refuser.status == "failed"
    assert refuser.error is not None and "InvalidTransition" in refuser.error
    assert "'nowhere' in namespace 'refusing_ltm' moves nothing" in refuser.error


def test_a_plain_fork_queues_every_target_with_the_payload() -> None:
    root, _ = run(catalog.ForkLtm)

    assert root.child("left").state == {"payload": {"side": "both"}}
    assert root.child("right").state == {"payload": {"side": "both"}}
    assert root.child("begin").status == "completed"


def test_fork_into_eight_parameterised_states_joined_when_the_list_is_full() -> None:
    root, runtime = run(catalog.FanOut)

    batch = root.child("batch")
    workers = [child for child in batch.children.values() if isinstance(child, catalog.Work)]
    assert [w.name for w in workers] == [f"work_{n}" for n in range(8)]
    assert workers[3].fqn == "fan_out.batch.work_3" and workers[3].params == {"n": 3}
    assert {w.status for w in workers} == {"completed"}
    assert sorted(batch.state["results"]) == [n * 10 for n in range(8)]
    assert batch.child("collect").status == "active"
    assert root.state["total"] == 280
    assert runtime.runs[root.id or ""].executed.count("fan_out.batch.collect") == 1


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_the_join_holds_in_any_execution_order(seed: int) -> None:
    runtime = InMemoryRuntime(shuffle_seed=seed)
    root = catalog.FanOut(runtime=runtime)
    root.start(size=6)

    executed = runtime.runs[root.id or ""].executed
    workers = [fqn for fqn in executed if ".work_" in fqn]
    assert len(workers) == 6 and executed[-1] == "fan_out.batch.collect"
    assert root.state["total"] == sum(n * 10 for n in range(6))
    assert sorted(root.find(w).state["saw"] for w in workers) == list(range(1, 7))


def test_sub_machines_nested_three_deep() -> None:
    root, _ = run(catalog.Deep)

    assert root.state == {"reached": "deep.level1.level2.level2_done"}
    assert root.find("deep.level1.level2.level3").status == "completed"
    assert root.find("deep.level1.level2.level3.leaf_done").status == "completed"
    assert root.find("deep.level1.level2.level3.leaf").status == "completed"
    assert root.find("deep.level1").status == "active"


def test_a_loop_re_initialises_states_and_forward_references_resolve() -> None:
    root, runtime = run(catalog.PingPong, rounds=3)

    assert root.state["count"] == 3
    assert root.child("ping").state == {"visits": 1}
    assert root.child("stopped").status == "active"
    executed = runtime.runs[root.id or ""].executed
    assert executed.count("ping_pong.ping") == 3 and executed.count("ping_pong.pong") == 2


# -- start, atomic appends ----------------------------------------------------------------


def test_a_second_start_is_refused() -> None:
    root, _ = run(catalog.MyLtm)
    with pytest.raises(RuntimeError, match="already started"):
        root.start()


def test_start_on_a_child_is_refused() -> None:
    root = catalog.MyLtm()
    with pytest.raises(RuntimeError, match="root machine"):
        root.child("my_state").start()


class Twice(LTM):
    def run(self, **payload: Any) -> None:
        runtime = self.runtime
        assert runtime is not None
        first = runtime.atomic_state_append(self.parent or self, "items", "a", 0)
        retried = runtime.atomic_state_append(self.parent or self, "items", "a", 0)
        self.update_state({"first": first, "retried": retried})


class TwiceLtm(LTM):
    init = [Twice]

    def run(self, **payload: Any) -> None:
        self.update_state({"items": []})


def test_atomic_append_is_idempotent_per_call_index() -> None:
    root, _ = run(TwiceLtm)

    assert root.state["items"] == ["a"]
    assert root.child("twice").state == {"first": ["a"], "retried": ["a"]}


class AppendToNothing(LTM):
    def run(self, **payload: Any) -> None:
        self.root.atomic_state_append("missing", 1)


class AppendToNothingLtm(LTM):
    init = [AppendToNothing]


def test_atomic_append_needs_an_existing_list() -> None:
    root, _ = run(AppendToNothingLtm)

    child = root.child("append_to_nothing")
    assert child.status == "failed" and "must be set to a list first" in (child.error or "")


def test_atomic_append_outside_run_is_refused() -> None:
    with pytest.raises(RuntimeError, match="inside run"):
        catalog.MyLtm().atomic_state_append("x", 1)


def test_transition_outside_run_is_refused() -> None:
    with pytest.raises(RuntimeError, match="for run"):
        catalog.MyLtm().transition("my_transition")


# -- the seams: records, execute, plan ----------------------------------------------------


def test_records_round_trip_through_from_records() -> None:
    root, runtime = run(catalog.FanOut, size=3)
    records = root.records()

    rebuilt = catalog.FanOut.from_records(records, {"size": 99}, run_id="run-x")

    assert rebuilt.records()[1:] == records[1:]
    assert rebuilt.state == {"size": 99} and rebuilt.id == "run-x"
    work = next(r for r in records if r.name == "work_2")
    assert work == InstanceRecord(
        fqn="fan_out.batch.work_2",
        name="work_2",
        declared_name="work_{n}",
        status="completed",
        state={"saw": 3},
        params={"n": 2},
    )
    with pytest.raises(RuntimeError, match="already started"):
        rebuilt.start()


def test_records_that_do_not_fit_the_definition_are_refused() -> None:
    bad = InstanceRecord("my_ltm.ghost", "ghost", "ghost", "active")
    with pytest.raises(ValueError, match="does not fit"):
        catalog.MyLtm.from_records([bad])
    with pytest.raises(ValueError, match="does not fit"):
        plan(catalog.MyLtm, [bad], "my_ltm", Effects())


def test_execute_then_plan_is_what_a_worker_does() -> None:
    records = [  # as if the root's own execution were planned already
        InstanceRecord("my_ltm", "my_ltm", "my_ltm", "active"),
        InstanceRecord("my_ltm.my_state", "my_state", "my_state", "queued"),
    ]
    tree = catalog.MyLtm.from_records(records, run_id="r1")
    state = tree.child("my_state")
    assert tree.status == "active" and state.status == "queued"

    effects = state.execute({})
    assert tree.state == {} and state.status == "queued"  # execute left the tree as it was
    assert effects == Effects(
        updates=[
            ("my_ltm.my_state", {"internal_state_key": "state_value"}),
            ("my_ltm", {"global_key": "global_value"}),
        ],
        transitions=[TransitionCall("my_ltm.my_state", "my_transition", {}, None, "my_ltm")],
    )

    given = copy.deepcopy(records)
    result = plan(catalog.MyLtm, records, "my_ltm.my_state", effects)

    assert records == given  # the planner changes nothing it is given
    assert {r.fqn: r.status for r in result.records_changed} == {
        "my_ltm": "active",
        "my_ltm.my_state": "completed",
        "my_ltm.end_state": "queued",
    }
    assert result.executions == [("my_ltm.end_state", {})]
    assert [e["kind"] for e in result.events] == [
        "status",
        "state.updated",
        "state.updated",
        "transition",
        "status",
        "status",
    ]
    assert result.skipped_transitions == []


def test_plan_records_a_failed_execution() -> None:
    result = plan(catalog.MyLtm, [], "my_ltm.my_state", Effects(error="Traceback: boom"))

    (record,) = result.records_changed
    assert record.status == "failed" and record.error == "Traceback: boom"
    assert result.executions == []
    assert result.events[-1] == {
        "kind": "error",
        "fqn": "my_ltm.my_state",
        "data": {"error": "Traceback: boom"},
    }


SPLIT_ACTIVE = [InstanceRecord("fan_out.batch.split", "split", "split", "active")]


def test_plan_transition_needs_params_for_parameterised_targets() -> None:
    without = plan_transition(catalog.FanOut, SPLIT_ACTIVE, "split", namespace="fan_out.batch")
    assert "needs params" in without.events[0]["data"]["reason"]

    result = plan_transition(
        catalog.FanOut, SPLIT_ACTIVE, "split", params=[{"n": 7}], namespace="fan_out.batch"
    )
    assert result.executions == [("fan_out.batch.work_7", {})]
    work = {r.fqn: r for r in result.records_changed}["fan_out.batch.work_7"]
    assert work.params == {"n": 7}


def test_params_that_make_a_bad_name_are_refused() -> None:
    result = plan_transition(
        catalog.FanOut, SPLIT_ACTIVE, "split", params=[{"n": "a.b"}], namespace="fan_out.batch"
    )
    assert result.skipped_transitions and result.executions == []


def test_runaway_loops_are_stopped() -> None:
    runtime = InMemoryRuntime(max_executions=10)
    with pytest.raises(RuntimeError, match="more than 10 executions"):
        catalog.PingPong(runtime=runtime).start(rounds=100)


# -- definitions --------------------------------------------------------------------------


def test_names_default_to_the_snake_cased_class_name() -> None:
    class MyLTM2(LTM):
        pass

    class HTTPServerState(LTM):
        pass

    assert MyLTM2.name == "my_ltm2"
    assert HTTPServerState.name == "http_server_state"


@pytest.mark.parametrize("name", ["BadName", "1abc", "has-dash", "x.y", "", "x_{Bad}", "x_{"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidDefinition, match="Culprit: name"):
        type("Culprit", (LTM,), {"name": name})


@pytest.mark.parametrize("method", ["execute", "records", "apply_records"])
def test_a_state_may_not_define_what_the_engine_calls(method: str) -> None:
    with pytest.raises(InvalidDefinition, match=f"Culprit: {method} belong to the engine"):
        type("Culprit", (LTM,), {method: lambda self: None})


def test_placeholders_are_allowed_in_names() -> None:
    assert catalog.Work.placeholders == ("n",)
    with pytest.raises(TypeError, match="not a root"):
        catalog.Work()


def test_duplicate_child_names_are_refused() -> None:
    class First(LTM):
        name = "same"

    class Second(LTM):
        name = "same"

    with pytest.raises(InvalidDefinition, match="Machine: two child states are named 'same'"):

        class Machine(LTM):
            init = [First]
            transitions = [{"from": First, "label": "next", "to": Second}]


@pytest.mark.parametrize("where", ["from", "to", "init"])
def test_entries_that_are_not_ltm_classes_are_refused(where: str) -> None:
    transition: dict[str, Any] = {"from": catalog.Waiting, "label": "go", "to": catalog.Done}
    attrs: dict[str, Any] = {"init": [catalog.Waiting], "transitions": [transition]}
    if where == "init":
        attrs["init"] = [catalog.Waiting, "done"]
    else:
        transition[where] = [catalog.Waiting, object]
    with pytest.raises(InvalidDefinition, match=f"Bad: .*{where}.* is not an LTM subclass"):
        type("Bad", (LTM,), attrs)


@pytest.mark.parametrize(
    ("transition", "message"),
    [
        ({"from": catalog.Waiting, "to": catalog.Done}, "has no 'label'"),
        ({"from": catalog.Waiting, "label": "", "to": catalog.Done}, "has no 'label'"),
        ({"from": catalog.Waiting, "label": "go"}, "has no 'to'"),
        ({"from": (), "label": "go", "to": catalog.Done}, "has no 'from'"),
        ({"from": catalog.Waiting, "label": "go", "to": catalog.Done, "when": 1}, "unknown"),
        ("go", "is not a dict"),
    ],
)
def test_malformed_transitions_are_refused(transition: Any, message: str) -> None:
    with pytest.raises(InvalidDefinition, match=f"Bad: .*{message}"):
        type("Bad", (LTM,), {"init": [catalog.Waiting], "transitions": [transition]})


def test_parameterised_init_states_are_refused() -> None:
    with pytest.raises(InvalidDefinition, match="init state 'work_{n}' is parameterised"):
        type("Bad", (LTM,), {"init": [catalog.Work]})


def test_unreachable_states_are_warned_about() -> None:
    with pytest.warns(LTMDefinitionWarning, match=r"Lonely: states \['done'\] can never be"):

        class Lonely(LTM):
            init = [catalog.Waiting]
            transitions = [{"from": catalog.Done, "label": "back", "to": catalog.Waiting}]


def test_the_catalog_defines_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class Clean(LTM):
            init = [catalog.Waiting]
            transitions = [{"from": catalog.Waiting, "label": "go", "to": catalog.Done}]

    assert Clean.definition().is_machine


def test_lazy_definitions_are_checked_on_first_use() -> None:
    class Later(LTM):
        @staticmethod
        def transitions() -> list[Any]:
            return [{"from": catalog.Waiting, "to": catalog.Done}]

    with pytest.raises(InvalidDefinition, match="Later: .*has no 'label'"):
        Later()


def test_a_machine_cannot_contain_itself() -> None:
    class Looping(LTM):
        @staticmethod
        def init() -> list[Any]:
            return [Looping]

    with pytest.raises(InvalidDefinition, match="contains itself"):
        Looping()


# -- registry -----------------------------------------------------------------------------


def test_registry_of_root_machines() -> None:
    register(catalog.MyLtm)
    try:
        assert ltm_registry()["my_ltm"] is catalog.MyLtm
        assert register(catalog.MyLtm) is catalog.MyLtm
        with pytest.raises(InvalidDefinition, match="'my_ltm' is taken by MyLtm"):
            register(type("Other", (LTM,), {"name": "my_ltm"}))
    finally:
        unregister(catalog.MyLtm)
    assert "my_ltm" not in ltm_registry()

    @register
    class Registered(LTM):
        init = [catalog.Waiting]

    assert ltm_registry()["registered"] is Registered
    unregister(Registered)


def test_root_classes_are_the_ones_no_other_names_as_a_child() -> None:
    found = root_classes(
        [catalog.MyLtm, catalog.MyState, catalog.EndState, catalog.Deep, catalog.Level1]
    )
    assert found == [catalog.MyLtm, catalog.Deep]


# -- purity -------------------------------------------------------------------------------


def test_the_core_imports_no_django_huey_or_channels() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import engine.core\n"
        "names = [m.name for m in pkgutil.walk_packages(engine.core.__path__, 'engine.core.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "assert 'engine.core.ltm.node' in names and 'engine.core.graph.dot' in names, names\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'huey', 'channels')]\n"
        "assert not bad, bad\n"
        "print(len(names))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 15  # every module of the core, subpackages included
