"""The LTM fan-out of bench/ltm_fanout.py run inline, in this process: the CPU time of a run.

    .venv/bin/python -m bench.ltm_inline [--width 200] [--runs 4] [--rounds 3]

`bench_ltm_fanout` (bench/ltm_fanout_workload.py: a fork into `--width` branches, each
entering one join that appends what it brought) started with `engine.api.start_ltm`, Huey
in immediate mode: every execution runs at once in this thread, with no consumer, no queue
and no other process. Each round times `--runs` runs one after the other by this process's
CPU time (`time.process_time`) and prints the milliseconds of CPU a run took; one run of 50
branches warms up first. The figure leaves out what the consumer adds (the queue, the
claims a worker keeps, the threads), so it does not replace `ltm_fanout.py`'s ratio to bare
Huey: it isolates the engine's own work. To compare two versions of the engine, run this
script from each (a worktree of the other commit, with this file copied into it),
alternating, several times: a shared machine's speed can drift by a quarter within an hour,
and the CPU time drifts with it.

Embedded defaults (SQLite in WAL mode) in a scratch directory. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRATCH = tempfile.mkdtemp(prefix="flowstudio-bench-")
os.environ.update(
    DJANGO_SETTINGS_MODULE="studio.settings",
    FLOWSTUDIO_VAR_DIR=SCRATCH,
    HUEY_IMMEDIATE="1",
    FLOWSTUDIO_SCRIPT_MODULES="bench.ltm_fanout_workload",
    ENGINE_LOG_LEVEL="WARNING",
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--runs", type=int, default=4, help="runs timed in each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--statements",
        action="store_true",
        help="then one more run, each of the engine's statements timed: per kind, how many "
        "a run sends, the CPU and the wall clock each takes",
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from engine import api

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user(f"bench-{os.getpid()}")  # (a database reused)
    api.start_ltm("bench_ltm_fanout", user, {"width": 50})  # warm up
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    per_run = []
    for number in range(args.rounds):
        started = time.process_time()
        for _ in range(args.runs):
            run_id = api.start_ltm("bench_ltm_fanout", user, {"width": args.width})
        took = (time.process_time() - started) / args.runs * 1000
        state = api.load_ltm(run_id).run.state
        if state != "complete":
            raise RuntimeError(f"the run ended {state}, not complete")
        per_run.append(took)
        print(f"  round {number + 1}: {took:.0f} ms of CPU a run")
    print(
        f"LTM fan-out to {args.width} branches and a join, inline: median "
        f"{statistics.median(per_run):.0f} ms of CPU a run "
        f"({min(per_run):.0f}-{max(per_run):.0f}), {args.rounds} rounds of {args.runs} runs"
    )
    if args.statements:
        statements(lambda: api.start_ltm("bench_ltm_fanout", user, {"width": args.width}))


def statements(run: Callable[[], Any]) -> None:
    """One run with each statement the engine sends through `engine.rows`'s own cursors
    timed (this thread's CPU time and the wall clock, from the call until its result is
    back; the first statement of a transaction includes its `BEGIN`'s round trip, which the
    driver sends first). Statements through Django's cursor are not in it."""
    from engine import rows

    spent: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])

    def timing(execute: Callable[..., Any]) -> Callable[..., Any]:
        def timed(self: Any, query: str, params: Any = ()) -> Any:
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return execute(self, query, params)
            finally:
                kind = " ".join(query.split()[:3])[:48] + (" RETURNING" * ("RETURNING" in query))
                spent[kind][0] += 1
                spent[kind][1] += time.thread_time() - cpu
                spent[kind][2] += time.perf_counter() - wall

        return timed

    kept = rows.Prepared.execute, rows.Direct.execute
    rows.Prepared.execute = timing(rows.Prepared.execute)  # type: ignore[method-assign]
    rows.Direct.execute = timing(rows.Direct.execute)  # type: ignore[method-assign]
    try:
        started = time.thread_time()
        run()
        took = time.thread_time() - started
    finally:
        rows.Prepared.execute, rows.Direct.execute = kept  # type: ignore[method-assign]
    inside = sum(cpu for _, cpu, _ in spent.values())
    print(
        f"one run: {took * 1000:.0f} ms of CPU, {inside * 1000:.0f} ms of it "
        f"({inside / took:.0%}) in the statements below"
    )
    print("| statement | a run | CPU µs each | wall µs each |\n|---|---:|---:|---:|")
    for kind, (count, cpu, wall) in sorted(spent.items(), key=lambda item: -item[1][1]):
        print(f"| `{kind}` | {count:.0f} | {cpu / count * 1e6:.0f} | {wall / count * 1e6:.0f} |")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
