"""flou's scenarios (see tests/ltm_flou.py) stored in the database: inline (Huey in
immediate mode) and on a real consumer process with two worker threads, where the branches
of a join really run at once. The scale-out pass runs them on PostgreSQL + Redis with three
consumers."""

from __future__ import annotations

from collections import Counter

import pytest

from engine import api
from engine.models import LtmAppend, LtmExecution, LtmRun
from tests.conftest import wait_until
from tests.engine.ltm.support import django_runtime, statuses  # noqa: F401  (autouse fixture)

OVER = ("complete", "failed", "killed")


def over(run_ids) -> bool:
    return not LtmRun.objects.filter(pk__in=run_ids).exclude(state__in=OVER).exists()


def check_join(run_id: str, size: int) -> None:
    view = api.load_ltm(run_id)
    assert view.run.state == "complete", view.run.error
    got = view.instances["flou_join.gather"].state["got"]
    assert sorted(int(item["k"]) for item in got) == list(range(1, size + 1))
    gathers = LtmExecution.objects.filter(run_id=run_id, fqn="flou_join.gather")
    assert Counter(e.status for e in gathers) == {"done": size}  # one execution per branch
    assert view.instances["flou_join.finished"].status == "active"
    assert LtmAppend.objects.filter(execution__run_id=run_id).count() == size


@pytest.mark.django_db(transaction=True)
@pytest.mark.bothmodes
class TestInline:
    def test_a_join_entered_by_four_branches_runs_four_times_and_fires(self, user):
        run_id = api.start_ltm("flou_join", user, {"size": 4})

        check_join(run_id, 4)

    def test_params_of_a_label_choose_the_source(self, user):
        run_id = api.start_ltm("flou_pairs", user)

        api.fire_transition(run_id, "next_{k}", user, params=[{"k": "1"}])

        found = statuses(run_id)
        assert found["flou_pairs.first_1"] == "completed"
        assert found["flou_pairs.first_2"] == "active"
        assert found["flou_pairs.second_1"] == "active"
        assert "flou_pairs.second_2" not in found

    def test_a_forking_self_loop(self, user):
        run_id = api.start_ltm("flou_loop", user)
        api.fire_transition(run_id, "start_{k}", user, params=[{"k": "1"}])
        api.fire_transition(run_id, "start_{k}", user, params=[{"k": "2"}])

        assert statuses(run_id) == {
            "flou_loop": "active",
            "flou_loop.idle": "active",
            "flou_loop.spawned_1": "active",
            "flou_loop.spawned_2": "active",
        }

    def test_nested_concurrent_sub_machines(self, user):
        run_id = api.start_ltm("flou_teams", user)
        both = [{"num": "1"}, {"num": "2"}]
        api.fire_transition(run_id, "start_{num}", user, params=both)
        for team in ("flou_teams.team_1", "flou_teams.team_2"):
            api.fire_transition(run_id, "start_{num}", user, params=both, namespace=team)

        view = api.load_ltm(run_id)
        for team in ("flou_teams.team_1", "flou_teams.team_2"):
            assert view.instances[f"{team}.rest"].status == "active"
            done = view.instances[f"{team}.collect"].state["done"]
            assert sorted(item["num"] for item in done) == ["1", "2"]
            assert view.instances[f"{team}.collect"].status == "completed"

    def test_a_shared_namespace(self, user):
        run_id = api.start_ltm("flou_namespaces", user)

        api.fire_transition(run_id, "start", user, namespace="global")

        found = statuses(run_id)
        assert found["flou_namespaces.side.after"] == "active"
        assert found["flou_namespaces.other_side.after"] == "active"
        assert found["flou_namespaces.side.before"] == "completed"


@pytest.mark.consumer
def test_joins_of_branches_running_at_once_on_a_consumer_lose_no_arrival(consumer, user):
    run_ids = [api.start_ltm("flou_join", user, {"size": 4}) for _ in range(8)]
    run_ids.append(api.start_ltm("flou_join", user, {"size": 12}))

    assert wait_until(lambda: over(run_ids), timeout=180), consumer.logs()[-3000:]
    for run_id in run_ids[:-1]:
        check_join(run_id, 4)
    check_join(run_ids[-1], 12)


@pytest.mark.consumer
def test_nested_sub_machines_report_to_their_joins_on_a_consumer(consumer, user):
    run_id = api.start_ltm("flou_teams", user)
    assert wait_until(lambda: over([run_id]), timeout=60), consumer.logs()[-3000:]
    both = [{"num": "1"}, {"num": "2"}]
    api.fire_transition(run_id, "start_{num}", user, params=both)
    assert wait_until(lambda: over([run_id]), timeout=60), consumer.logs()[-3000:]
    for team in ("flou_teams.team_1", "flou_teams.team_2"):
        api.fire_transition(run_id, "start_{num}", user, params=both, namespace=team)

    assert wait_until(lambda: over([run_id]), timeout=60), consumer.logs()[-3000:]
    view = api.load_ltm(run_id)
    assert view.run.state == "complete", view.run.error
    for team in ("flou_teams.team_1", "flou_teams.team_2"):
        done = view.instances[f"{team}.collect"].state["done"]
        assert sorted(item["num"] for item in done) == ["1", "2"]
        assert view.instances[f"{team}.rest"].status == "active"


@pytest.mark.consumer
def test_params_self_loops_and_namespaces_on_a_consumer(consumer, user):
    pairs = api.start_ltm("flou_pairs", user)
    loop = api.start_ltm("flou_loop", user)
    spaces = api.start_ltm("flou_namespaces", user)
    assert wait_until(lambda: over([pairs, loop, spaces]), timeout=60), consumer.logs()[-3000:]

    api.fire_transition(pairs, "next_{k}", user, params=[{"k": "1"}])
    for k in ("1", "2"):
        api.fire_transition(loop, "start_{k}", user, params=[{"k": k}])
        assert wait_until(lambda: over([loop]), timeout=60), consumer.logs()[-3000:]
    api.fire_transition(spaces, "start", user, namespace="global")

    assert wait_until(lambda: over([pairs, loop, spaces]), timeout=60), consumer.logs()[-3000:]
    found = statuses(pairs)
    assert (found["flou_pairs.first_1"], found["flou_pairs.first_2"]) == ("completed", "active")
    assert found["flou_pairs.second_1"] == "active" and "flou_pairs.second_2" not in found
    assert statuses(loop) == {
        "flou_loop": "active",
        "flou_loop.idle": "active",
        "flou_loop.spawned_1": "active",
        "flou_loop.spawned_2": "active",
    }
    found = statuses(spaces)
    assert found["flou_namespaces.side.after"] == found["flou_namespaces.other_side.after"]
    assert found["flou_namespaces.side.after"] == "active"
