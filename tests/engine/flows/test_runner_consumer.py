"""Integration tests on a real Huey consumer process (SQLite-backed queue, 2 worker threads)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from engine import api
from engine.models import Flow, FlowEvent
from tests.conftest import stall_report, wait_until

pytestmark = pytest.mark.consumer

MIXED = [
    "t_echo",
    "t_echo",
    "t_offloaded",
    "t_echo",
    "t_tuple_ok",
    "t_echo",
    "t_offloaded",
    "t_echo",
    "t_result_fields",
    "t_echo",
]


def finished(ids) -> bool:
    return (
        not Flow.objects.filter(pk__in=ids)
        .exclude(state__in=["complete", "killed", "failed"])
        .exists()
    )


def assert_each_step_recorded_once(ids, steps: int) -> None:
    recorded = Counter(
        (flow_id, data["step"])
        for flow_id, data in FlowEvent.objects.filter(
            flow_id__in=ids, kind="step.completed"
        ).values_list("flow_id", "data")
    )
    duplicates = {key: n for key, n in recorded.items() if n != 1}
    assert not duplicates, f"steps recorded more than once: {duplicates}"
    assert len(recorded) == len(ids) * steps


def test_fifty_mixed_flows_complete_on_a_consumer(consumer, user):
    routine = api.create_routine("mixed", MIXED, owner=user)
    ids = [api.start_flow(routine, user).pk for _ in range(50)]
    assert wait_until(lambda: finished(ids), timeout=120), consumer.logs()[-3000:]
    flows = list(Flow.objects.filter(pk__in=ids))
    assert Counter(f.state for f in flows) == {"complete": 50}
    for flow in flows:
        results = flow.results
        assert len(results) == 10 and results[2] == {"offloaded": 2} and results[9]["position"] == 9
    assert_each_step_recorded_once(ids, 10)


def test_wait_push_input_and_check_on_a_consumer(consumer, user, tmp_path):
    waiting = api.start_flow(api.create_routine("w", ["t_wait", "t_echo"], owner=user), user)
    flag = tmp_path / "flag"
    checked = api.start_flow(
        api.create_routine("c", ["t_checked"], owner=user), user, data={"flag_file": str(flag)}
    )
    assert wait_until(lambda: Flow.objects.get(pk=waiting.pk).state == "waiting")
    api.push_input(waiting, {"answer": "yes"}, user)
    assert wait_until(lambda: Flow.objects.get(pk=waiting.pk).state == "complete")
    flag.write_text("now")  # the consumer's periodic re-check picks it up
    assert wait_until(lambda: Flow.objects.get(pk=checked.pk).state == "complete", timeout=30)


@pytest.mark.crash
def test_kill9_consumer_loses_no_flow_and_records_each_step_once(consumer, user):
    steps = [{"script": "t_sleep", "params": {"sleep": 0.04}}] * 8 + ["t_offloaded", "t_echo"]
    routine = api.create_routine("crash", steps, owner=user)
    ids = [api.start_flow(routine, user).pk for _ in range(50)]

    def mid_loop() -> bool:
        """Well into the run, with a flow in the middle of its blocking steps (at least three
        left, 0.12 s): the two workers run flows in step with each other, so right after
        a pair's last steps both may be between flows, holding none to hand on."""
        return FlowEvent.objects.filter(flow_id__in=ids, kind="step.completed").count() > 60 and (
            Flow.objects.filter(
                pk__in=ids, state="running", job_id="", position__range=(1, 5)
            ).exists()
        )

    assert wait_until(mid_loop, every=0.01)
    consumer.kill9()
    running = Flow.objects.filter(pk__in=ids, state="running").count()
    done_before = Flow.objects.filter(pk__in=ids, state="complete").count()
    consumer.start()
    assert wait_until(lambda: finished(ids), timeout=180), stall_report(ids, consumer)
    flows = list(Flow.objects.filter(pk__in=ids))
    assert Counter(f.state for f in flows) == {"complete": 50}
    assert all(len(f.results) == 10 and None not in f.results for f in flows)
    assert_each_step_recorded_once(ids, 10)
    requeued = FlowEvent.objects.filter(flow_id__in=ids, kind="flow.requeued").count()
    print(
        f"\nkill -9 with {running} flows running, {done_before} complete; "
        f"{requeued} re-queued by the sweep; all 50 complete"
    )
    assert running >= 1 and requeued >= 1


def test_interrupted_step_that_must_not_rerun_fails_the_flow(consumer, user):
    routine = api.create_routine(
        "once", ["t_echo", {"script": "t_once", "params": {"sleep": 5}}, "t_echo"], owner=user
    )
    flow = api.start_flow(routine, user)
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).started_position == 1)
    time.sleep(0.2)
    consumer.kill9()
    consumer.start()
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "failed", timeout=60)
    flow.refresh_from_db()
    assert flow.error.startswith("interrupted") and flow.position == 1
    assert FlowEvent.objects.filter(flow=flow, kind="flow.interrupted").count() == 1
    assert consumer.performed()[(flow.pk, 1, "t_once")] == 1  # not performed again
    # an operator skips it and the flow goes on
    api.skip(flow, user)
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "complete")
