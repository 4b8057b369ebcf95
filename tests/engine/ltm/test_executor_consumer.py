"""LTM runs on a real Huey consumer process (SQLite-backed queue, 2 worker threads):
concurrent forks joined with atomic appends, run-to-completion seen from outside, and a
consumer killed with SIGKILL in the middle of a fork."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import pytest

from engine import api
from engine.ltm.registry import discover
from engine.models import LtmAppend, LtmEvent, LtmExecution, LtmInstance, LtmRun
from tests.conftest import wait_until

pytestmark = pytest.mark.consumer

OVER = ("complete", "failed", "killed")


@pytest.fixture(autouse=True)
def catalog_roots():
    discover()  # another test module may have unregistered catalog roots


def over(run_ids) -> bool:
    return not LtmRun.objects.filter(pk__in=run_ids).exclude(state__in=OVER).exists()


def test_a_fork_of_eight_joined_when_the_list_is_full_loses_nothing_20_times(consumer, user):
    run_ids = [api.start_ltm("fan_out", user, {"size": 8}) for _ in range(20)]

    assert wait_until(lambda: over(run_ids), timeout=180), consumer.logs()[-3000:]
    for run_id in run_ids:
        root = api.load_ltm(run_id)
        assert root.run.state == "complete", root.run.error
        assert sorted(root.instances["fan_out.batch"].state["results"]) == [
            n * 10 for n in range(8)
        ]
        assert root.state["total"] == 280
        assert root.instances["fan_out.batch.collect"].status == "active"
        collects = LtmExecution.objects.filter(run_id=run_id, fqn="fan_out.batch.collect")
        assert [e.status for e in collects] == ["done"]
        assert LtmAppend.objects.filter(execution__run_id=run_id).count() == 8


def test_concurrent_states_execute_on_different_workers_at_once(consumer, user):
    run_id = api.start_ltm("slow_fan_out", user, {"size": 4, "sleep": 0.4})

    assert wait_until(lambda: over([run_id]), timeout=120), consumer.logs()[-3000:]
    root = api.load_ltm(run_id)
    assert root.run.state == "complete" and root.state["joined"] == [0, 1, 2, 3]
    work = [root.instances[f"slow_fan_out.slow_{n}"].state for n in range(4)]
    assert len({state["worker"] for state in work}) >= 2
    overlapping = [
        (a, b)
        for a, b in combinations(work, 2)
        if a["started"] < b["ended"] and b["started"] < a["ended"]
    ]
    assert overlapping, work


def test_updates_and_transitions_are_invisible_until_run_returns(consumer, user, tmp_path):
    marker, release = tmp_path / "marker", tmp_path / "release"
    run_id = api.start_ltm("gate_ltm", user, {"marker": str(marker), "release": str(release)})

    assert wait_until(marker.exists, timeout=60), (
        consumer.logs()[-3000:],
        list(LtmEvent.objects.filter(run_id=run_id).values_list("kind", "fqn", "data")),
    )
    gate = LtmInstance.objects.get(run_id=run_id, fqn="gate_ltm.gate")
    assert gate.status == "active" and gate.state == {}
    assert "gate" not in LtmRun.objects.get(pk=run_id).global_state
    assert not LtmInstance.objects.filter(run_id=run_id, fqn="gate_ltm.opened").exists()
    updates = LtmEvent.objects.filter(run_id=run_id, kind="state.updated")
    assert [e.data["update"] for e in updates] == [{"marker": str(marker), "release": str(release)}]
    assert not LtmEvent.objects.filter(run_id=run_id, kind="transition").exists()
    assert LtmRun.objects.get(pk=run_id).state == "running"

    release.write_text("go")

    assert wait_until(lambda: over([run_id]), timeout=60), consumer.logs()[-3000:]
    root = api.load_ltm(run_id)
    assert root.state["gate"] == "passed"
    assert root.instances["gate_ltm.gate"].state == {"inside": True}
    assert root.instances["gate_ltm.gate"].status == "completed"
    assert root.instances["gate_ltm.opened"].status == "active"


def test_kill9_mid_fork_then_a_new_consumer_completes_the_run_appending_each_once(consumer, user):
    run_id = api.start_ltm("slow_fan_out", user, {"size": 8, "sleep": 0.5})

    def appended() -> int:
        return len(LtmRun.objects.get(pk=run_id).global_state.get("results", []))

    assert wait_until(lambda: appended() >= 2, timeout=60), consumer.logs()[-3000:]
    consumer.kill9()
    claimed = LtmExecution.objects.filter(run_id=run_id, status="claimed").count()
    before = appended()
    consumer.start()

    assert wait_until(lambda: over([run_id]), timeout=180), consumer.logs()[-3000:]
    root = api.load_ltm(run_id)
    assert root.run.state == "complete", root.run.error
    assert root.state["joined"] == list(range(8))
    assert Counter(root.state["results"]) == Counter(range(8))  # each exactly once
    assert Counter(root.state["finished"]) == Counter(range(8))
    appends = Counter(a.execution.fqn for a in LtmAppend.objects.filter(execution__run_id=run_id))
    assert appends == {f"slow_fan_out.slow_{n}": 2 for n in range(8)}
    rerun = LtmExecution.objects.filter(run_id=run_id, attempts__gt=1)
    assert {e.status for e in rerun} == {"done"} and rerun.count() == claimed
    requeued = LtmEvent.objects.filter(run_id=run_id, kind="execution.requeued").count()
    print(
        f"\nkill -9 with {before} of 8 appended and {claimed} execution(s) claimed; "
        f"{requeued} handed on by the sweep; the run completed with each value appended once"
    )
    assert claimed >= 1 and requeued >= 1
