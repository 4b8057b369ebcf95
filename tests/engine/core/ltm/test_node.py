"""The LTM class, the author's API (engine.core.ltm.node): runs in the InMemoryRuntime,
payload and state, transitions, forks and joins, sub-machines, loops, and a tree's records.
No Django involved."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.ltm.definition import InvalidTransition
from engine.core.ltm.node import LTM
from engine.core.ltm.records import InstanceRecord
from engine.core.ltm.runtime import InMemoryRuntime
from tests import ltm_catalog as catalog


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


class AppendToNothing(LTM):
    def run(self, **payload: Any) -> None:
        self.root.atomic_state_append("missing", 1)


class AppendToNothingLtm(LTM):
    init = [AppendToNothing]


def test_atomic_append_needs_an_existing_list() -> None:
    root, _ = run(AppendToNothingLtm)

    child = root.child("append_to_nothing")
    assert child.status == "failed" and "must be set to a list first" in (child.error or "")


class AppendAndChange(LTM):
    """Appends, then changes the list the append returned."""

    def run(self, **payload: Any) -> None:
        got = self.root.atomic_state_append("got", {"n": 1})
        assert got is self.root.state["got"]  # the state's list, as stored: one copy
        got[0]["n"] = 2
        got.append("not stored")
        self.update_state({"seen": list(self.root.state["got"])})


class AppendAndChangeLtm(LTM):
    init = [AppendAndChange]
    initial_state = {"got": []}


def test_what_run_does_with_the_appended_list_is_not_stored() -> None:
    root, _ = run(AppendAndChangeLtm)

    child = root.child("append_and_change")
    assert child.error is None and child.status == "active"  # (it has nowhere to go)
    assert child.state["seen"] == [{"n": 2}, "not stored"]  # what run() saw, meanwhile
    assert root.state["got"] == [{"n": 1}]  # the list as appended


def test_atomic_append_outside_run_is_refused() -> None:
    with pytest.raises(RuntimeError, match="inside run"):
        catalog.MyLtm().atomic_state_append("x", 1)


def test_transition_outside_run_is_refused() -> None:
    with pytest.raises(RuntimeError, match="for run"):
        catalog.MyLtm().transition("my_transition")


# -- records ------------------------------------------------------------------------------


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
        entry=1,  # its first visit
    )
    with pytest.raises(RuntimeError, match="already started"):
        rebuilt.start()


# -- a tree from a RecordTree: each instance made on first use ----------------------------------


def _wide(size: int, split: str = "completed") -> list[InstanceRecord]:
    records = [
        InstanceRecord("fan_out", "fan_out", "fan_out", "active", {"size": size}),
        InstanceRecord("fan_out.batch", "batch", "batch", "active", {"results": []}),
        InstanceRecord("fan_out.batch.split", "split", "split", split),
    ]
    records += [
        InstanceRecord(f"fan_out.batch.work_{n}", f"work_{n}", "work_{n}", "queued", {}, {"n": n})
        for n in range(size)
    ]
    return records


def test_a_tree_from_a_record_tree_makes_only_the_instances_it_is_asked_for():
    from engine.core.ltm.tree import RecordTree

    records = _wide(50)
    lazy = catalog.FanOut.from_records(RecordTree(catalog.FanOut, records))
    eager = catalog.FanOut.from_records(records)

    work = lazy.find("fan_out.batch.work_7")
    assert (work.status, work.params, work.parent and work.parent.state) == (
        "queued",
        {"n": 7},
        {"results": []},
    )
    assert [i.fqn for i in lazy._made()] == ["fan_out", "fan_out.batch", "fan_out.batch.work_7"]
    assert lazy.child("batch").child_class("work_9") is catalog.Work
    assert len(list(lazy._made())) == 4  # (asking for a class makes the instance it names)
    # Walked, it is the tree made from the records at once, in the same order.
    assert lazy.records() == eager.records()
    assert list(lazy.child("batch").children) == list(eager.child("batch").children)


def test_executing_a_state_of_a_tree_made_on_use_does_what_it_does_on_a_whole_tree():
    from engine.core.ltm.tree import RecordTree

    records = _wide(3, split="queued")[:3]  # (the branches not made yet)
    lazy = catalog.FanOut.from_records(RecordTree(catalog.FanOut, records))
    eager = catalog.FanOut.from_records(records)

    effects = lazy.find("fan_out.batch.split").execute({})

    assert effects == eager.find("fan_out.batch.split").execute({})
    assert effects.transitions and effects.transitions[0].label == "split"
    assert lazy.records() == eager.records()  # both as they were
