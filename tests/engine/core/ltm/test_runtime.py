"""The runtime port's in-memory reference (engine.core.ltm.runtime): the default runtime, an
operator's transition, any execution order, idempotent appends, runaway loops. No Django
involved."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.ltm.node import LTM
from engine.core.ltm.runtime import InMemoryRuntime, set_default_runtime
from tests import ltm_catalog as catalog
from tests.engine.core.ltm.test_node import run


def test_the_default_runtime_is_in_memory(capsys: pytest.CaptureFixture[str]) -> None:
    set_default_runtime(None)
    root = catalog.MyLtm()
    run_id = root.start()

    assert root.id == run_id
    assert isinstance(root.runtime, InMemoryRuntime)
    assert root.child("end_state").id == run_id
    assert "end" in capsys.readouterr().out


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


def test_runaway_loops_are_stopped() -> None:
    runtime = InMemoryRuntime(max_executions=10)
    with pytest.raises(RuntimeError, match="more than 10 executions"):
        catalog.PingPong(runtime=runtime).start(rounds=100)
