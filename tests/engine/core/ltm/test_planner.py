"""The LTM planner (engine.core.ltm.planner): records and an execution's effects in, what to
store, queue and publish out; it changes nothing it is given. No Django involved."""

from __future__ import annotations

import copy

import pytest

from engine.core.ltm.planner import plan, plan_transition
from engine.core.ltm.records import Effects, InstanceRecord, TransitionCall
from engine.core.ltm.tree import RecordTree
from tests import ltm_catalog as catalog


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


# -- a run's tree built once: copied, and stored over (engine.core.ltm.tree) -------------------


def _fanned_out(size: int) -> list[InstanceRecord]:
    records = [
        InstanceRecord("fan_out", "fan_out", "fan_out", "active", {"size": size}),
        InstanceRecord("fan_out.batch", "batch", "batch", "active", {"results": []}),
        InstanceRecord("fan_out.batch.split", "split", "split", "completed"),
    ]
    records += [
        InstanceRecord(f"fan_out.batch.work_{n}", f"work_{n}", "work_{n}", "queued", {}, {"n": n})
        for n in range(size)
    ]
    return records


def _as_built(tree: RecordTree) -> tuple[list[InstanceRecord], dict[str, list[str]]]:
    return tree.records(), {fqn: tree.children(fqn) for fqn in tree.fqns()}


def test_a_copy_of_a_tree_changes_apart_from_it_and_planning_on_a_tree_leaves_it_as_it_was():
    tree = RecordTree(catalog.FanOut, _fanned_out(3))
    before = _as_built(tree)

    twin = tree.copy()
    twin.update("fan_out.batch.work_0", status="active")
    twin.child("fan_out.batch", catalog.Work, {"n": 9})
    assert _as_built(tree) == before
    assert twin.record("fan_out.batch.work_0").status == "active"

    effects = Effects(
        transitions=[TransitionCall("fan_out.batch.work_1", "join", {}, None, "fan_out.batch")]
    )
    given = plan(catalog.FanOut, tree, "fan_out.batch.work_1", effects)
    assert _as_built(tree) == before  # the planner planned on a copy
    assert given == plan(catalog.FanOut, _fanned_out(3), "fan_out.batch.work_1", effects)


def test_a_tree_with_records_stored_over_it_is_the_tree_built_from_them():
    records = _fanned_out(4)
    tree = RecordTree(catalog.FanOut, records)
    changed = [
        InstanceRecord("fan_out", "fan_out", "fan_out", "active", {"size": 4, "total": 60}),
        InstanceRecord(
            "fan_out.batch.work_2", "work_2", "work_{n}", "completed", {"saw": 3}, {"n": 2}
        ),
        InstanceRecord("fan_out.batch.collect", "collect", "collect", "queued", entry=1),
    ]
    removed = ["fan_out.batch.work_3"]
    after = {r.fqn: r for r in records if r.fqn not in removed}
    after.update((r.fqn, r) for r in changed)

    stored_over = tree.with_records(changed, removed)

    assert _as_built(stored_over) == _as_built(RecordTree(catalog.FanOut, after.values()))
    assert _as_built(tree) == _as_built(RecordTree(catalog.FanOut, records))  # as it was


def test_a_transition_named_by_its_params_looks_only_at_the_sources_they_name():
    """`transition("join", params=[{"n": 2}])` from one of 300 branches reads that branch's
    record, not its 299 siblings' (the planner of a wide fan-out cost the width per step)."""
    from engine.core.ltm import planner

    tree = RecordTree(catalog.FanOut, _fanned_out(300))
    for n in (2, 7):
        tree.update(f"fan_out.batch.work_{n}", status="active")
    join = next(t for t in catalog.Batch.definition().transitions if t.label == "join")

    read: list[str] = []
    original = tree.record
    tree.record = lambda fqn: read.append(fqn) or original(fqn)  # type: ignore[method-assign]
    call = TransitionCall("fan_out.batch.work_2", "join", {}, [{"n": 2}], "fan_out.batch")
    moves = planner._moves(tree, call)
    assert [(m.machine, m.sources) for m in moves] == [("fan_out.batch", ("fan_out.batch.work_2",))]
    assert not [
        fqn
        for fqn in read
        if fqn.startswith("fan_out.batch.work_") and fqn != "fan_out.batch.work_2"
    ]

    # Named in another order, they move in their siblings' order; unnamed, every active one.
    assert planner._candidates(tree, "fan_out.batch", join, [{"n": 7}, {"n": 2}]) == [
        "fan_out.batch.work_2",
        "fan_out.batch.work_7",
    ]
    unnamed = TransitionCall("fan_out.batch.work_2", "join", {}, None, "fan_out.batch")
    assert planner._moves(tree, unnamed)[0].sources == (
        "fan_out.batch.work_2",
        "fan_out.batch.work_7",
    )


def test_the_records_a_plan_changed_come_parents_first_in_the_order_of_the_tree():
    tree = RecordTree(catalog.FanOut, _fanned_out(5))
    tree.update("fan_out.batch.work_3", status="active")
    tree.update("fan_out", state={"size": 5, "x": 1})
    tree.update("fan_out.batch.work_1", status="active")
    tree.update("fan_out.batch.work_4", status="queued")  # as it was: not a change
    tree.child("fan_out.batch", catalog.Collect)
    assert [r.fqn for r in tree.changed()] == [
        "fan_out",
        "fan_out.batch.work_1",
        "fan_out.batch.work_3",
        "fan_out.batch.collect",
    ]
    assert tree.copy().changed() == []
