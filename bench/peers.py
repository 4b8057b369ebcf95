"""The engine against its peers, in one run, through the public API.

    .venv/bin/python -m bench.peers [--flows 200] [--steps 10] [--rounds 5]

The same workload for each: N flows of M trivial blocking steps, each step storing a tiny
dict, run one flow after the other in this process (SQLite in WAL mode, the embedded
defaults, in a scratch directory):

- engine: `engine.api.start_flow` with Huey in immediate mode, timed from the call until the
  flow is COMPLETE (the start, its first events, the enqueue, the claim, every step);
- ORM floor: per step one transaction of a result row insert and a position update, on
  flows created beforehand (untimed);
- bare Huey chain: the same writes, one Huey task per step, each queueing the next, in
  immediate mode (inline, like the engine here), on flows created beforehand (untimed);
- django-viewflow 2.4 (the optional `bench` extra): the same linear flow of M function
  nodes, started with its start handle; skipped with a line saying so when not installed.

The kinds run interleaved, round after round, in a rotating order, so that the load of the
machine falls on all alike; the table gives the median and the range over the rounds. It
also gives the SQL statements per flow and per step (one flow of each, counted apart), and
the fixed cost per flow: from flows of 1 step timed in the same rounds, (time of a 1-step
flow) - (time per step of the M-step flows).
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRATCH = tempfile.mkdtemp(prefix="flowstudio-peers-")
os.environ.update(
    DJANGO_SETTINGS_MODULE="bench.peers_settings",
    FLOWSTUDIO_VAR_DIR=SCRATCH,
    HUEY_IMMEDIATE="1",
    FLOWSTUDIO_SCRIPT_MODULES="bench.workload",
    ENGINE_LOG_LEVEL="WARNING",
)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, reset_queries, transaction  # noqa: E402

from bench import workload  # noqa: E402
from engine import api  # noqa: E402
from engine.leases import queue_deadline  # noqa: E402
from engine.models import Flow  # noqa: E402

VIEWFLOW = bool(getattr(settings, "PEERS_VIEWFLOW", False))

# One kind of run: (flows, steps) -> seconds spent on what is timed.
Run = Callable[[int, int], float]


class Counter:
    """SQL statements sent by the timed part of a run while `counting` (Django's query log:
    every statement, `BEGIN`, `SAVEPOINT` and `COMMIT` included)."""

    def __init__(self) -> None:
        self.counting = False
        self.sent = 0
        self.cpu = 0.0  # CPU seconds (this process's user + system) of the last timed part


counter = Counter()


def timed(work: Callable[[], None]) -> float:
    if counter.counting:
        connection.force_debug_cursor = True
        reset_queries()
    try:
        started, cpu = time.perf_counter(), time.process_time()
        work()
        counter.cpu = time.process_time() - cpu
        return time.perf_counter() - started
    finally:
        if counter.counting:
            counter.sent += len(connection.queries_log)
            connection.force_debug_cursor = False


class Kinds:
    def __init__(self, user: Any) -> None:
        self.user = user
        self.routines: dict[int, Any] = {}

    def routine(self, steps: int) -> Any:
        if steps not in self.routines:
            self.routines[steps] = api.create_routine(
                f"peers {steps}", ["bench_tiny"] * steps, owner=self.user
            )
        return self.routines[steps]

    def bare_flows(self, count: int, steps: int) -> list[int]:
        """Flow rows for the floor and the chain to update (created untimed)."""
        routine = self.routine(steps)
        snapshot = routine.snapshot()
        flows = Flow.objects.bulk_create(
            Flow(
                routine=routine,
                routine_version=1,
                steps=snapshot,
                owner=self.user,
                lease_until=queue_deadline(),
            )
            for _ in range(count)
        )
        return [flow.pk for flow in flows]

    def engine(self, count: int, steps: int) -> float:
        routine = self.routine(steps)
        ids: list[int] = []

        def work() -> None:
            for _ in range(count):
                ids.append(api.start_flow(routine, self.user).pk)

        took = timed(work)
        done = Flow.objects.filter(pk__in=ids, state="complete").count()
        if done != count:
            raise RuntimeError(f"engine: {count - done} flows did not complete")
        return took

    def floor(self, count: int, steps: int) -> float:
        ids = self.bare_flows(count, steps)

        def work() -> None:
            for flow_id in ids:
                for position in range(steps):
                    workload.floor_step(flow_id, position)

        return timed(work)

    def chain(self, count: int, steps: int) -> float:
        ids = self.bare_flows(count, steps)

        def work() -> None:
            for flow_id in ids:
                workload.bare_chain_step(flow_id, 0, steps)

        took = timed(work)
        if Flow.objects.filter(pk__in=ids, position=steps).count() != count:
            raise RuntimeError("bare Huey chain: not every chain finished")
        return took

    def viewflow(self, count: int, steps: int) -> float:
        from viewflow.workflow.models import Process

        from bench import peers_viewflow

        flow_class = peers_viewflow.flow_of(steps)
        ids: list[int] = []

        def work() -> None:
            for _ in range(count):
                with transaction.atomic():  # its nodes assert an open transaction
                    ids.append(flow_class.start.run().pk)

        took = timed(work)
        done = Process.objects.filter(pk__in=ids, status="DONE").count()
        if done != count:
            raise RuntimeError(f"viewflow: {count - done} processes did not finish")
        return took


def statements(run: Run, steps: int) -> int:
    """SQL statements one flow of `steps` steps sends (run apart from the timed rounds)."""
    counter.counting, counter.sent = True, 0
    try:
        run(1, steps)
    finally:
        counter.counting = False
    return counter.sent


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}; load average {load}"
    )


def spread(values: list[float], digits: int = 0) -> str:
    return (
        f"{statistics.median(values):,.{digits}f} "
        f"({min(values):,.{digits}f}-{max(values):,.{digits}f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench")
    kinds = Kinds(user)
    runs: dict[str, Run] = {
        "engine (start_flow to complete)": kinds.engine,
        "Django ORM floor": kinds.floor,
        "bare Huey chain (immediate)": kinds.chain,
    }
    if VIEWFLOW:
        runs["django-viewflow 2.4"] = kinds.viewflow
    else:
        print("django-viewflow is not installed (pip install -e '.[bench]'): skipped")
    names = list(runs)
    steps = args.steps
    print(machine())
    print(f"{args.flows} flows x {steps} steps, {args.rounds} rounds, SQLite WAL, inline")

    for run in runs.values():  # warm up: imports, caches, the first statements compiled
        run(5, steps)
        run(5, 1)
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu_rates: dict[str, list[float]] = {name: [] for name in names}
    fixed: dict[str, list[float]] = {name: [] for name in names}
    for number in range(args.rounds):
        order = names[number % len(names) :] + names[: number % len(names)]
        for name in order:
            took = runs[name](args.flows, steps)
            cpu_rates[name].append(args.flows * steps / counter.cpu)
            one = runs[name](args.flows, 1)
            per_step = took / (args.flows * steps)
            rates[name].append(args.flows * steps / took)
            fixed[name].append((one / args.flows - per_step) * 1000)
        load = os.getloadavg()[0]
        line = ", ".join(f"{name.split(' (')[0]} {rates[name][-1]:.0f}" for name in names)
        print(f"  round {number + 1}: {line} steps/s (load {load:.2f})")

    engine = names[0]
    print()
    print(
        "| | steps/s, median (range) | engine's ratio, median (range) "
        "| fixed cost per flow, ms | SQL per flow | SQL per step "
        "| steps per CPU second | engine's ratio by CPU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        ratios = [e / p for e, p in zip(rates[engine], rates[name], strict=True)]
        by_cpu = [e / p for e, p in zip(cpu_rates[engine], cpu_rates[name], strict=True)]
        sql_flow = statements(runs[name], steps)
        sql_one = statements(runs[name], 1)
        per_step = (sql_flow - sql_one) / (steps - 1) if steps > 1 else float(sql_flow)
        ratio = "-" if name == engine else spread(ratios, 2) + "x"
        cpu_ratio = "-" if name == engine else spread(by_cpu, 2) + "x"
        print(
            f"| {name} | {spread(rates[name])} | {ratio} | {spread(fixed[name], 2)} "
            f"| {sql_flow} | {per_step:.1f} | {spread(cpu_rates[name])} | {cpu_ratio} |"
        )
    print()
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
