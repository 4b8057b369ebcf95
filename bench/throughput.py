"""Engine throughput against bare baselines, measured in the same run.

    .venv/bin/python bench/throughput.py [--flows 200] [--steps 10] [--offloaded-flows 50]

1. Blocking loop: N flows x M trivial blocking steps through the real runner (claim, perform,
   result + position + event committed per step) vs the Django ORM floor (a result row and a
   position update in one transaction per step). Target: engine >= 60% of the floor.
2. Offloaded steps: flows of non-blocking steps on a real consumer process (2 threads) vs a
   bare Huey chain doing the same writes, one task per step. Target: engine >= 90% of it.

Runs on the embedded defaults (SQLite in WAL mode, SQLite-backed Huey) in a scratch directory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRATCH = tempfile.mkdtemp(prefix="flowstudio-bench-")
os.environ.update(
    DJANGO_SETTINGS_MODULE="studio.settings",
    FLOWSTUDIO_VAR_DIR=SCRATCH,
    HUEY_IMMEDIATE="0",
    FLOWSTUDIO_SCRIPT_MODULES="bench.workload",
    ENGINE_LOG_LEVEL="WARNING",
)

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from huey.contrib.djhuey import HUEY  # noqa: E402

from bench import workload  # noqa: E402
from engine import api  # noqa: E402
from engine.flows import runner  # noqa: E402
from engine.huey_tasks import run_flow_task  # noqa: E402
from engine.leases import queue_deadline  # noqa: E402
from engine.models import Flow  # noqa: E402


def make_flows(routine, user, count: int) -> list[int]:
    """Pending flows created without enqueueing (the bench drives them itself)."""
    steps = routine.snapshot()
    flows = Flow.objects.bulk_create(
        Flow(
            routine=routine,
            routine_version=1,
            steps=steps,
            owner=user,
            lease_until=queue_deadline(),
        )
        for _ in range(count)
    )
    return [f.pk for f in flows]


def rate(steps: int, seconds: float) -> float:
    return steps / seconds if seconds else float("inf")


def bench_blocking(user, flows: int, steps: int) -> tuple[float, float]:
    routine = api.create_routine("bench blocking", ["bench_trivial"] * steps, owner=user)
    ids = make_flows(routine, user, flows)
    started = time.perf_counter()
    for flow_id in ids:
        runner.run_flow(flow_id)
    engine_s = time.perf_counter() - started
    assert Flow.objects.filter(pk__in=ids, state="complete").count() == flows

    floor_ids = make_flows(routine, user, flows)
    started = time.perf_counter()
    for flow_id in floor_ids:
        for position in range(steps):
            workload.floor_step(flow_id, position)
    floor_s = time.perf_counter() - started
    return rate(flows * steps, engine_s), rate(flows * steps, floor_s)


def wait_for(predicate, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark did not finish")
        time.sleep(0.02)


def bench_offloaded(user, flows: int, steps: int, rounds: int = 3) -> tuple[float, float]:
    """Median of `rounds` alternating runs of each: SQLite-backed Huey polls, so single runs
    vary by a third from one to the next."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    consumer = subprocess.Popen(
        [sys.executable, "manage.py", "run_engine", "-w", "2", "--no-live"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    routine = api.create_routine("bench offloaded", ["bench_offloaded"] * steps, owner=user)
    engine_rates, chain_rates = [], []
    try:
        time.sleep(2)  # let the consumer start polling
        for _ in range(rounds):
            ids = make_flows(routine, user, flows)
            started = time.perf_counter()
            for flow_id in ids:
                run_flow_task(flow_id)
            wait_for(
                lambda ids=ids: Flow.objects.filter(pk__in=ids, state="complete").count() == flows
            )
            engine_rates.append(rate(flows * steps, time.perf_counter() - started))

            chain_ids = make_flows(routine, user, flows)
            started = time.perf_counter()
            for flow_id in chain_ids:
                workload.bare_chain_step(flow_id, 0, steps)
            wait_for(
                lambda ids=chain_ids: (
                    Flow.objects.filter(pk__in=ids, position=steps).count() == flows
                )
            )
            chain_rates.append(rate(flows * steps, time.perf_counter() - started))
    finally:
        consumer.terminate()
        consumer.wait(10)
    return statistics.median(engine_rates), statistics.median(chain_rates)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--offloaded-flows", type=int, default=100)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    HUEY.storage.flush_all()
    user = get_user_model().objects.create_user("bench")

    engine, floor = bench_blocking(user, args.flows, args.steps)
    print(f"blocking loop, {args.flows} flows x {args.steps} steps (SQLite, WAL)")
    print(f"  engine           {engine:8.0f} steps/s")
    print(f"  ORM floor        {floor:8.0f} steps/s")
    print(f"  ratio            {engine / floor:8.0%}   (target >= 60%)")

    engine, chain = bench_offloaded(user, args.offloaded_flows, args.steps)
    print(
        f"non-blocking steps, {args.offloaded_flows} flows x {args.steps} steps "
        "(consumer process, 2 threads, SQLite-backed Huey)"
    )
    print(f"  engine           {engine:8.0f} steps/s")
    print(f"  bare Huey chain  {chain:8.0f} steps/s")
    print(f"  ratio            {engine / chain:8.0%}   (target >= 90%)")


if __name__ == "__main__":
    main()
