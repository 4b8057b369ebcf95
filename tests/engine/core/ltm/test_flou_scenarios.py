"""flou's own scenarios (its `tests/concurrency/` and `test_namespaces.py`), restated on the
pure core's in-memory runtime: FIFO, and in seeded random orders that imitate concurrent
workers. The same machines run on Django inline and on a real consumer in
tests/engine/ltm/test_flou_scenarios.py."""

from __future__ import annotations

import pytest

from engine.core.ltm.runtime import InMemoryRuntime
from tests import ltm_flou as flou

ORDERS = [None, 1, 2, 3, 4, 5]  # FIFO, then shuffled queues


def start(cls, order, **payload):
    runtime = InMemoryRuntime(shuffle_seed=order)
    root = cls(runtime=runtime)
    root.start(**payload)
    return runtime, root.id


def statuses(runtime, run_id):
    return {fqn: r.status for fqn, r in runtime.records(run_id).items()}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("size", [2, 4, 7])
def test_a_join_entered_by_every_branch_runs_once_per_branch_and_fires_when_full(order, size):
    runtime, run_id = start(flou.FlouJoin, order, size=size)

    records = runtime.records(run_id)
    got = records["flou_join.gather"].state["got"]
    assert sorted(int(item["k"]) for item in got) == list(range(1, size + 1))
    assert runtime.runs[run_id].executed.count("flou_join.gather") == size
    assert records["flou_join.gather"].status == "completed"
    assert records["flou_join.finished"].status == "active"
    assert all(records[f"flou_join.branch_{n}"].status == "completed" for n in range(1, size + 1))
    assert records["flou_join.gather"].entry == 1  # one visit, entered `size` times


def test_each_arrival_brings_its_own_payload():
    runtime, run_id = start(flou.FlouJoin, None, size=3)

    gathers = [e for e in runtime.runs[run_id].events if e["kind"] == "transition"]
    into_gather = [e["data"]["payload"] for e in gathers if e["data"]["to"] == ["flou_join.gather"]]
    assert sorted(p["k"] for p in into_gather) == ["1", "2", "3"]


@pytest.mark.parametrize("order", ORDERS)
def test_the_params_of_a_label_choose_which_parameterised_source_moves(order):
    runtime, run_id = start(flou.FlouPairs, order)
    assert statuses(runtime, run_id) == {
        "flou_pairs": "active",
        "flou_pairs.fork": "completed",
        "flou_pairs.first_1": "active",
        "flou_pairs.first_2": "active",
    }

    runtime.fire(run_id, "next_{k}", params=[{"k": "1"}])
    after_one = statuses(runtime, run_id)
    assert after_one["flou_pairs.first_1"] == "completed"
    assert after_one["flou_pairs.first_2"] == "active"
    assert after_one["flou_pairs.second_1"] == "active"
    assert "flou_pairs.second_2" not in after_one

    runtime.fire(run_id, "next_{k}", params=[{"k": "2"}])
    assert statuses(runtime, run_id) == {
        "flou_pairs": "active",
        "flou_pairs.fork": "completed",
        "flou_pairs.first_1": "completed",
        "flou_pairs.first_2": "completed",
        "flou_pairs.second_1": "active",
        "flou_pairs.second_2": "active",
    }


def test_one_label_with_two_params_moves_both_branches_at_once():
    runtime, run_id = start(flou.FlouPairs, None)

    runtime.fire(run_id, "next_{k}", params=[{"k": "1"}, {"k": "2"}])

    found = statuses(runtime, run_id)
    assert [found[f"flou_pairs.first_{k}"] for k in "12"] == ["completed", "completed"]
    assert [found[f"flou_pairs.second_{k}"] for k in "12"] == ["active", "active"]


def test_a_label_whose_params_name_no_active_source_moves_nothing():
    runtime, run_id = start(flou.FlouPairs, None)
    runtime.fire(run_id, "next_{k}", params=[{"k": "1"}])

    result = runtime.fire(run_id, "next_{k}", params=[{"k": "1"}])  # first_1 moved already

    assert result.skipped_transitions and not result.executions


def test_a_self_loop_that_forks_re_enters_its_state_and_adds_a_branch_each_time():
    runtime, run_id = start(flou.FlouLoop, None)

    runtime.fire(run_id, "start_{k}", params=[{"k": "1"}])
    runtime.fire(run_id, "start_{k}", params=[{"k": "2"}])

    records = runtime.records(run_id)
    assert statuses(runtime, run_id) == {
        "flou_loop": "active",
        "flou_loop.idle": "active",
        "flou_loop.spawned_1": "active",
        "flou_loop.spawned_2": "active",
    }
    assert records["flou_loop.idle"].entry == 3  # the first visit and two re-entries


@pytest.mark.parametrize("order", ORDERS)
def test_concurrent_sub_machines_report_to_their_parents_join(order):
    runtime, run_id = start(flou.FlouWorkers, order)

    runtime.fire(run_id, "start_{num}", params=[{"num": "1"}, {"num": "2"}])

    records = runtime.records(run_id)
    assert statuses(runtime, run_id) == {
        "flou_workers": "active",
        "flou_workers.rest": "active",
        "flou_workers.worker_1": "completed",
        "flou_workers.worker_1.report": "completed",
        "flou_workers.worker_2": "completed",
        "flou_workers.worker_2.report": "completed",
        "flou_workers.collect": "completed",
    }
    done = records["flou_workers.collect"].state["done"]
    assert sorted(item["num"] for item in done) == ["1", "2"]


@pytest.mark.parametrize("order", ORDERS)
def test_nested_concurrent_sub_machines_fired_in_each_machines_namespace(order):
    runtime, run_id = start(flou.FlouTeams, order)
    runtime.fire(run_id, "start_{num}", params=[{"num": "1"}, {"num": "2"}])
    for team in ("flou_teams.team_1", "flou_teams.team_2"):
        runtime.fire(run_id, "start_{num}", params=[{"num": "1"}, {"num": "2"}], namespace=team)

    records = runtime.records(run_id)
    for team in ("flou_teams.team_1", "flou_teams.team_2"):
        assert records[team].status == "active"
        assert records[f"{team}.rest"].status == "active"
        assert records[f"{team}.collect"].status == "completed"
        assert sorted(i["num"] for i in records[f"{team}.collect"].state["done"]) == ["1", "2"]
        for worker in ("worker_1", "worker_2"):
            assert records[f"{team}.{worker}"].status == "completed"
    # Nothing reported at the root's level: its own join never ran.
    assert records["flou_teams.rest"].status == "completed"
    assert records.get("flou_teams.collect") is None or (
        records["flou_teams.collect"].status == "init"
    )


def test_a_label_in_a_shared_namespace_moves_states_in_two_machines():
    runtime, run_id = start(flou.FlouNamespaces, None)

    runtime.fire(run_id, "start", namespace="global")

    assert statuses(runtime, run_id) == {
        "flou_namespaces": "active",
        "flou_namespaces.side": "active",
        "flou_namespaces.side.before": "completed",
        "flou_namespaces.side.after": "active",
        "flou_namespaces.other_side": "active",
        "flou_namespaces.other_side.before": "completed",
        "flou_namespaces.other_side.after": "active",
    }


def test_re_entering_a_finished_state_starts_a_new_visit_with_its_initial_state():
    runtime, run_id = start(flou.FlouTeams, None)
    runtime.fire(run_id, "start_{num}", params=[{"num": "1"}])
    team = "flou_teams.team_1"
    runtime.fire(run_id, "start_{num}", params=[{"num": "1"}, {"num": "2"}], namespace=team)
    first = runtime.records(run_id)[f"{team}.collect"]

    runtime.fire(run_id, "start_{num}", params=[{"num": "1"}, {"num": "2"}], namespace=team)

    again = runtime.records(run_id)[f"{team}.collect"]
    assert again.entry == first.entry + 1
    assert sorted(i["num"] for i in again.state["done"]) == ["1", "2"]  # not four: fresh list
