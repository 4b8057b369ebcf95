"""An LTM fanning out to 200 branches and joining them, against a bare Huey fan-out doing the
equivalent writes, on the same real consumer process, in the same run.

    .venv/bin/python -m bench.ltm_fanout [--width 200] [--rounds 5] [--workers 2] [--profile]
                                         [--chain 10]

- LTM: `bench_ltm_fanout` (bench/ltm_fanout_workload.py): the root -> `split`, which forks
  with a parameterised label into `branch_{n}` for n < width -> each branch transitions into
  the one `join` (entered once per branch, as flou's join: it appends what the arrival
  brought with `atomic_state_append`, and the arrival that sees the list full fires
  `all_done`) -> `done`. 2 * width + 3 executions, each its own Huey task.
- Bare Huey: the same shape of tasks (root -> split -> width branches -> width joins ->
  done), one Huey task per execution, each doing one small transaction (a counter bumped and
  an event row added; the join appends to a list in the same row and the task that fills it
  queues the last one).

Then, on the same consumer, the latency of a chain: `bench_ltm_chain`, `--chain` states one
after the other (each queued by the commit of the one before), started 50 times one after the
other, each timed from `engine.api.start_ltm` to the run's completion seen in the database
(polled every millisecond): median and 90th percentile, and per execution.

Both run on one `manage.py run_engine -w 2 --no-live` consumer started by the bench. Each is
timed from its start (`engine.api.start_ltm`; the first enqueue) to the run's completion seen
in the database (polled every 20 ms), as executions per second. The two alternate, the one
that goes first changing every round; the ratio is taken per round (paired), then its median
and range. The consumer's CPU time in each round (all its threads, from /proc) gives the
same ratio by CPU: executions per CPU second, LTM over bare, steadier than the wall clock on a
shared machine. `--profile` sets BENCH_PROFILE for the consumer: it profiles every LTM execution
with cProfile (an extra round, not timed) and the bench prints where the time goes.

Runs on the embedded defaults (SQLite in WAL mode, SQLite-backed Huey) in a scratch
directory. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRATCH = tempfile.mkdtemp(prefix="flowstudio-bench-")
os.environ.update(
    DJANGO_SETTINGS_MODULE="studio.settings",
    FLOWSTUDIO_VAR_DIR=SCRATCH,
    HUEY_IMMEDIATE="0",
    FLOWSTUDIO_SCRIPT_MODULES="bench.ltm_fanout_workload",
    ENGINE_LOG_LEVEL="WARNING",
)

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from huey.contrib.djhuey import HUEY  # noqa: E402

from bench import ltm_fanout_workload as workload  # noqa: E402
from engine import api  # noqa: E402
from engine.ltm.models import LtmExecution, LtmRun  # noqa: E402


def wait_for(predicate: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark did not finish")
        time.sleep(0.02)


def finished(run_id: str) -> bool:
    state = LtmRun.objects.filter(pk=run_id).values_list("state", flat=True).get()
    if state == "failed":
        raise RuntimeError(f"run {run_id} failed: {LtmRun.objects.get(pk=run_id).error}")
    return state == "complete"


def ltm_round(user: Any, width: int) -> tuple[float, int]:
    """Executions per second of one LTM run, and how many executions it took."""
    started = time.perf_counter()
    run_id = api.start_ltm("bench_ltm_fanout", user, {"width": width})
    wait_for(lambda: finished(run_id))
    seconds = time.perf_counter() - started
    executions = LtmExecution.objects.filter(run_id=uuid.UUID(run_id)).count()
    done = LtmExecution.objects.filter(run_id=uuid.UUID(run_id), status="done").count()
    assert done == executions == 2 * width + 3, (done, executions)
    return executions / seconds, executions


def chain_latencies(user: Any, length: int, runs: int = 50) -> list[float]:
    """Milliseconds from start to complete of `runs` chains of `length` states, one after
    the other."""
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        run_id = api.start_ltm("bench_ltm_chain", user, {"length": length})
        deadline = started + 60
        while LtmRun.objects.filter(pk=run_id).values_list("state", flat=True).get() not in (
            "complete",
            "failed",
        ):
            if time.perf_counter() > deadline:
                raise TimeoutError("the chain did not finish")
            time.sleep(0.001)
        took.append((time.perf_counter() - started) * 1000)
        if LtmRun.objects.get(pk=run_id).state != "complete":
            raise RuntimeError(f"chain {run_id} failed")
    return took


def bare_round(width: int) -> float:
    """Tasks per second of one bare fan-out (2 * width + 3 tasks)."""
    run = LtmRun.objects.create(name="bare_fanout", state="running", global_state={"got": []})
    started = time.perf_counter()
    workload.bare_root(str(run.pk), width)
    wait_for(lambda: finished(str(run.pk)))
    seconds = time.perf_counter() - started
    assert LtmRun.objects.get(pk=run.pk).seq == 2 * width + 3
    return (2 * width + 3) / seconds


def start_consumer(workers: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    consumer = subprocess.Popen(
        [sys.executable, "manage.py", "run_engine", "-w", str(workers), "--no-live"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3)  # let the consumer start polling
    return consumer


def stop_consumer(consumer: subprocess.Popen[bytes]) -> None:
    consumer.terminate()
    try:
        consumer.wait(15)
    except subprocess.TimeoutExpired:
        consumer.kill()
        consumer.wait(5)


def cpu_seconds(pid: int) -> float:
    """The CPU time process `pid` has used so far, all its threads (Linux: /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(pid: int, round_: Callable[[], Any]) -> tuple[Any, float]:
    """What `round_` returns, and the consumer's CPU seconds meanwhile."""
    before = cpu_seconds(pid)
    result = round_()
    time.sleep(0.05)  # (the last task's bookkeeping)
    return result, cpu_seconds(pid) - before


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    cpus = os.cpu_count()
    return (
        f"{cpus} CPUs; python {platform.python_version()}, Django {django.get_version()}, "
        f"SQLite {sqlite3.sqlite_version} (WAL)"
    )


def profile(
    user: Any, width: int, workers: int, keep: str | None = None, clock: str = "wall"
) -> None:
    """One LTM run on a consumer that profiles each execution; where its time goes (the
    statistics copied to `keep` if given, for pstats)."""
    path = Path(SCRATCH) / "consumer.prof"
    env = dict(os.environ, BENCH_PROFILE=str(path), BENCH_PROFILE_CLOCK=clock)
    consumer = start_consumer(workers, env)
    try:
        ltm_round(user, width)
        time.sleep(1)
    finally:
        stop_consumer(consumer)
    if not path.exists():
        print("no profile written")
        return
    if keep:
        shutil.copyfile(path, keep)
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("cumulative").print_stats(r"engine/", 40)
    stats.sort_stats("tottime").print_stats(25)
    print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-out", help="with --profile: keep the statistics in this file")
    parser.add_argument(
        "--profile-clock",
        choices=["wall", "cpu"],
        default="wall",
        help="with --profile: time by the wall clock (waits included) or by the thread's CPU",
    )
    parser.add_argument("--chain", type=int, default=10, help="states of the chain (0: none)")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    HUEY.storage.flush_all()
    user = get_user_model().objects.create_user("bench")
    print(machine())
    print(f"load average at the start {load()}")

    consumer = start_consumer(args.workers, dict(os.environ, PYTHONUNBUFFERED="1"))
    ltm_rates: list[float] = []
    chain: list[float] = []
    bare_rates: list[float] = []
    ltm_cpu: list[float] = []  # executions per CPU second of the consumer
    bare_cpu: list[float] = []
    executions = 0
    try:
        ltm_round(user, 10)  # warm up both (imports, first connections)
        bare_round(10)
        for index in range(args.rounds):
            order = ["ltm", "bare"] if index % 2 == 0 else ["bare", "ltm"]
            for which in order:
                if which == "ltm":
                    (rate, executions), cpu = timed(
                        consumer.pid, lambda: ltm_round(user, args.width)
                    )
                    ltm_rates.append(rate)
                    ltm_cpu.append(executions / cpu)
                else:
                    rate, cpu = timed(consumer.pid, lambda: bare_round(args.width))
                    bare_rates.append(rate)
                    bare_cpu.append((2 * args.width + 3) / cpu)
            print(
                f"  round {index + 1}: LTM {ltm_rates[-1]:6.1f}/s, bare Huey "
                f"{bare_rates[-1]:6.1f}/s, ratio {ltm_rates[-1] / bare_rates[-1]:.0%}; "
                f"by the consumer's CPU {ltm_cpu[-1]:.0f} and {bare_cpu[-1]:.0f} a second, "
                f"{ltm_cpu[-1] / bare_cpu[-1]:.0%} (load {load()})"
            )
        if args.chain:
            chain_latencies(user, args.chain, runs=5)  # warm up
            chain = sorted(chain_latencies(user, args.chain))
    finally:
        stop_consumer(consumer)
    ratios = [a / b for a, b in zip(ltm_rates, bare_rates, strict=True)]
    print(
        f"\nLTM fan-out to {args.width} branches and a join ({executions} executions), "
        f"consumer with {args.workers} worker threads, {args.rounds} rounds interleaved; "
        f"load average at the end {load()}\n"
    )
    print("| what | executions/s, median | range |")
    print("|---|---:|---|")
    print(
        f"| LTM run | {statistics.median(ltm_rates):.0f} | "
        f"{min(ltm_rates):.0f}–{max(ltm_rates):.0f} |"
    )
    print(
        f"| bare Huey fan-out | {statistics.median(bare_rates):.0f} | "
        f"{min(bare_rates):.0f}–{max(bare_rates):.0f} |"
    )
    print(
        f"| ratio (per round) | {statistics.median(ratios):.0%} | "
        f"{min(ratios):.0%}–{max(ratios):.0%} (target >= 80%) |"
    )
    by_cpu = [a / b for a, b in zip(ltm_cpu, bare_cpu, strict=True)]
    print(
        f"| by the consumer's CPU: LTM, bare, ratio | {statistics.median(ltm_cpu):.0f}, "
        f"{statistics.median(bare_cpu):.0f}, {statistics.median(by_cpu):.0%} | "
        f"ratio {min(by_cpu):.0%}–{max(by_cpu):.0%} |"
    )
    if args.chain:
        median, p90 = statistics.median(chain), chain[int(len(chain) * 0.9) - 1]
        executions = args.chain + 2
        print(
            f"\nA chain of {args.chain} states ({executions} executions with the root and the "
            f"end), {len(chain)} runs one after the other: median {median:.1f} ms, p90 "
            f"{p90:.1f} ms; {median / executions:.2f} ms an execution (median)"
        )
    if args.profile:
        profile(user, args.width, args.workers, args.profile_out, args.profile_clock)


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
