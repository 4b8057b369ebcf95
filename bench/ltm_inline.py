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
from pathlib import Path

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
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from engine import api

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench")
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


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
