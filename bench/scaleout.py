"""Scale-out: throughput with 1, 2 and 4 consumer processes on PostgreSQL + Redis, where it
stops growing on this machine and why, and the memory of each consumer.

    .venv/bin/python -m bench.scaleout [--flows 400] [--steps 10] [--rounds 3]
                                       [--consumers 1,2,4] [--workers 2] [--starts during,before]
                                       [--profile]

The workload is the others' (bench/workload.py): flows of `--steps` trivial blocking steps
(`bench_trivial`), started with `engine.api.start_flow` from this process, one after another
as fast as it goes, and performed by C `manage.py run_engine -w W --no-live` processes on a
scratch PostgreSQL database (`bench_scaleout_<pid>`, created and dropped) with Redis-backed
Huey (a queue name of its own, flushed): the `scaled` set-up of bench/windmill.py.

Each round, for each C and W (`--consumers`, `--workers`: lists; rounds interleaved: 1, 2, 4,
1, 2, 4, ...): C consumers are started and warmed up (3 flows per worker thread), then two
bursts of `--flows` flows, in an order that alternates from round to round:

- `during`: the consumers are running while this process starts the flows; timed from the
  first `start_flow` to the last flow's `finished` (written by its consumer). It also gives
  how long starting them took and how many were complete by then: when nearly all are, the
  starting process is the bound, not the consumers.
- `before`: the consumers are stopped (SIGSTOP) while the flows are started, then let go
  (SIGCONT); timed from the release to the last flow's `finished`: the consumers alone.

steps/s = flows x steps / that time. Over each timed window the bench reads the machine's CPU
(/proc/stat: busy and iowait) and every process's CPU time (/proc/<pid>/stat), and sorts it
into the consumers, PostgreSQL's sessions on the scratch database (from pg_stat_activity:
those of the consumers and the bench's own), PostgreSQL's server processes (WAL writer,
checkpointer, ...), Redis, this process, and the rest (other work on the machine, the
kernel). Shares are of the whole machine (100 % = every core busy); CPU per step is the
consumers' (and their sessions') CPU time over the window divided by the steps. Memory:
VmRSS of each consumer process after its warm-up and at the end of the round, and RssAnon
(its own memory; the rest is mapped files shared with the other consumers). It also times a
bare one-row commit on the scratch database (the floor of any write there). The load average
is printed with every round; the tables give medians and ranges over the rounds.

`--profile` then runs one more burst, untimed, on one consumer (the largest W) that profiles
each flow's run with cProfile on the worker threads' CPU clock, and prints where it goes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.windmill import (
    PG_DEFAULT,
    commit_floor,
    drop_database,
    flush_redis_queue,
    mode_env,
    span,
)

ROOT = Path(__file__).resolve().parent.parent
CORES = os.cpu_count() or 1
MAX_CONNECTIONS = 30  # the server is shared: never more than this of ours at once
BUCKETS = ("consumers", "pg_consumers", "pg_bench", "pg_server", "redis", "bench", "other")
SHARES = ("busy", "iowait", *BUCKETS)


# --- profiling in a consumer (which imports this module, with BENCH_PROFILE set) ----------
def install_profiler(path: str) -> None:
    """Profile every flow's run in this consumer (cProfile on each worker thread's CPU clock,
    one profiler per run so the threads do not mix), summed and written to `path` every 50."""
    import cProfile
    import pstats
    import threading

    from engine.flows import runner

    lock, calls = threading.Lock(), [0]
    stats: list[pstats.Stats] = []
    run_flow = runner.run_flow

    def profiled(*args: Any, **kwargs: Any) -> Any:
        profile = cProfile.Profile(time.thread_time)
        profile.enable()
        try:
            return run_flow(*args, **kwargs)
        finally:
            profile.disable()
            with lock:
                if stats:
                    stats[0].add(profile)
                else:
                    stats.append(pstats.Stats(profile))
                calls[0] += 1
                if calls[0] % 50 == 0:
                    stats[0].dump_stats(path)

    runner.run_flow = profiled


# --- the scratch set-up --------------------------------------------------------------------
def scratch_database() -> tuple[str, str]:
    """(URL of the server's maintenance database, URL of a new scratch database)."""
    import psycopg

    server = os.environ.get("BENCH_DATABASE_URL", PG_DEFAULT)
    name = f"bench_scaleout_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server, server.rsplit("/", 1)[0] + "/" + name


def scaled_env(database: str) -> dict[str, str]:
    """bench/windmill.py's `scaled` environment, with a queue and a directory of its own."""
    env = mode_env("scaled", database)
    os.rmdir(env["FLOWSTUDIO_VAR_DIR"])  # made by mode_env; ours is named for this bench
    env.update(
        FLOWSTUDIO_VAR_DIR=tempfile.mkdtemp(prefix="flowstudio-scaleout-"),
        HUEY_NAME=f"flowstudio-bench-scaleout-{os.getpid()}",
    )
    return env


# --- /proc readings --------------------------------------------------------------------------
def machine_cpu() -> tuple[int, int, int]:
    """(busy, iowait, total) ticks of all cores since boot."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, iowait, busy + idle + iowait


def process_cpu() -> dict[tuple[int, int], tuple[str, int]]:
    """(pid, start time) -> (command name, user + system ticks) of every process."""
    seen = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                line = stat.read()
        except OSError:  # gone meanwhile
            continue
        comm, _, rest = line[line.index("(") + 1 :].rpartition(")")
        fields = rest.split()
        seen[(int(entry.name), int(fields[19]))] = (comm, int(fields[11]) + int(fields[12]))
    return seen


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, RssAnon) of a process in MB: all it has in memory, and its own (the rest is
    files mapped, shared with the other consumers: the interpreter, libraries)."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                values[key] = int(value.split()[0]) / 1024
    return values["VmRSS"], values["RssAnon"]


def pg_backends() -> dict[int, str]:
    """PostgreSQL pid -> whose: `pg_consumers` and `pg_bench` (sessions on the scratch
    database, by their application name), `pg_server` (the server's own processes), or
    `other` (other databases' sessions: other people's work)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, datname = current_database(), backend_type, application_name"
            " FROM pg_stat_activity"
        )
        rows = cursor.fetchall()
    whose = {}
    for pid, ours, backend_type, application in rows:
        if ours:
            whose[pid] = "pg_consumers" if "run_engine" in application else "pg_bench"
        elif backend_type == "client backend":
            whose[pid] = "other"
        else:
            whose[pid] = "pg_server"
    return whose


class CpuWindow:
    """The CPU used between `__init__` and `stop()`, machine-wide and by whom."""

    def __init__(self, consumers: Iterable[int]) -> None:
        self.consumers = set(consumers)
        self.backends = pg_backends()
        self.machine = machine_cpu()
        self.processes = process_cpu()
        self.wall = time.perf_counter()

    def stop(self) -> dict[str, float]:
        """Shares of the whole machine (1.0 = every core busy over the window)."""
        processes, machine = process_cpu(), machine_cpu()
        backends = {**self.backends, **pg_backends()}
        busy, iowait, total = (
            end - start for end, start in zip(machine, self.machine, strict=True)
        )
        used = dict.fromkeys(BUCKETS, 0)
        for key, (comm, ticks) in processes.items():
            pid = key[0]
            spent = ticks - self.processes.get(key, (comm, 0))[1]  # new ones: all of it
            if pid in self.consumers:
                used["consumers"] += spent
            elif pid == os.getpid():
                used["bench"] += spent
            elif comm == "postgres":
                used[backends.get(pid, "pg_server")] += spent
            elif comm.startswith("redis-server"):
                used["redis"] += spent
        # The rest: other processes, the kernel's threads and interrupts, ended processes.
        used["other"] = busy - sum(v for k, v in used.items() if k != "other")
        shares = {key: value / total for key, value in used.items()}
        shares.update(busy=busy / total, iowait=iowait / total)
        shares["seconds"] = time.perf_counter() - self.wall
        return shares


# --- one round -------------------------------------------------------------------------------
def start_consumers(count: int, workers: int, env: dict[str, str], tag: str) -> list[Any]:
    logs = Path(env["FLOWSTUDIO_VAR_DIR"])
    consumers = []
    for number in range(count):
        log = open(logs / f"consumer-{tag}-{number}.log", "wb")  # noqa: SIM115
        consumers.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "run_engine", "-w", str(workers), "--no-live"],
                cwd=ROOT,
                env=dict(env, PYTHONUNBUFFERED="1"),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()  # the child has its own descriptor
    deadline = time.monotonic() + 120
    for number, consumer in enumerate(consumers):  # each prints a line before it consumes
        path = logs / f"consumer-{tag}-{number}.log"
        while b"engine consumer:" not in path.read_bytes():
            if consumer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"consumer did not start:\n{path.read_text()[-3000:]}")
            time.sleep(0.05)
    return consumers


def stop_consumers(consumers: list[Any]) -> None:
    for consumer in consumers:
        if consumer.poll() is None:
            os.kill(consumer.pid, signal.SIGCONT)  # stopped, it would not act on SIGTERM
            consumer.terminate()
    for consumer in consumers:
        try:
            consumer.wait(30)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait()


def wait_complete(first: int, last: int, timeout: float = 900) -> float:
    """Wait until flows first..last are all complete; the last one's `finished` (epoch s)."""
    from django.db.models import Count, Max

    from engine.models import Flow

    flows = Flow.objects.filter(pk__gte=first, pk__lte=last).order_by()
    deadline = time.monotonic() + timeout
    while True:
        states = {r["state"]: r["n"] for r in flows.values("state").annotate(n=Count("pk"))}
        if set(states) == {"complete"}:
            break
        if {"failed", "killed"} & set(states):
            raise RuntimeError(f"flows ended otherwise: {states}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"flows {first}-{last} did not complete: {states}")
        time.sleep(0.05)
    end = flows.aggregate(end=Max("finished"))["end"]
    assert end is not None
    return end.timestamp()


def burst(
    how: str, consumers: list[Any], routine: Any, user: Any, flows: int, steps: int
) -> dict[str, float]:
    from engine import api
    from engine.models import Flow

    pids = [c.pid for c in consumers]
    if how == "before":
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        started = time.time()
        ids = [api.start_flow(routine, user).pk for _ in range(flows)]
        starting = time.time() - started
        window = CpuWindow(pids)
        begin = time.time()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        done_at_started = 0
    else:
        window = CpuWindow(pids)
        begin = time.time()
        ids = [api.start_flow(routine, user).pk for _ in range(flows)]
        starting = time.time() - begin
        done_at_started = Flow.objects.filter(pk__in=ids, state="complete").count()
    end = wait_complete(min(ids), max(ids))
    cpu = window.stop()
    seconds = end - begin
    return {
        "seconds": seconds,
        "steps_s": flows * steps / seconds,
        "starting_s": starting,
        "done_when_started": done_at_started / flows,
        "load": os.getloadavg()[0],
        **{f"cpu_{key}": value for key, value in cpu.items()},
    }


def run_round(
    number: int,
    count: int,
    workers: int,
    starts: list[str],
    env: dict[str, str],
    routine: Any,
    user: Any,
    args: argparse.Namespace,
) -> dict[str, Any]:
    from django.db import connection

    from engine import api

    consumers = start_consumers(count, workers, env, f"{number}-{count}x{workers}")
    try:
        warm = [api.start_flow(routine, user).pk for _ in range(3 * count * workers)]
        wait_complete(min(warm), max(warm), timeout=120)
        time.sleep(0.5)
        idle = CpuWindow(c.pid for c in consumers)
        time.sleep(2)
        idle_cpu = idle.stop()  # idle consumers: the heartbeat, housekeeping, Huey's loop
        rss_warm = [memory_mb(c.pid) for c in consumers]
        order = starts if number % 2 == 0 else starts[::-1]
        result: dict[str, Any] = {
            "rss_warm": rss_warm,
            "idle_core": idle_cpu["consumers"] * CORES / count,  # of one core, per consumer
        }
        for how in order:
            result[how] = burst(how, consumers, routine, user, args.flows, args.steps)
            time.sleep(0.5)
        result["rss_end"] = [memory_mb(c.pid) for c in consumers]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            )
            result["connections"] = cursor.fetchone()[0]
    finally:
        stop_consumers(consumers)
    return result


def profile(
    env: dict[str, str], workers: int, routine: Any, user: Any, flows: int, steps: int
) -> None:
    """One untimed burst on one consumer that profiles each flow's run: where its CPU goes."""
    import io
    import pstats

    path = Path(env["FLOWSTUDIO_VAR_DIR"]) / "consumer.prof"
    modules = env["FLOWSTUDIO_SCRIPT_MODULES"] + ",bench.scaleout"
    profiled = dict(env, BENCH_PROFILE=str(path), FLOWSTUDIO_SCRIPT_MODULES=modules)
    consumers = start_consumers(1, workers, profiled, "profile")
    try:
        burst("before", consumers, routine, user, flows, steps)
        time.sleep(1)
    finally:
        stop_consumers(consumers)
    if not path.exists():
        print("no profile written")
        return
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    print(
        f"\nProfile: {flows} flows' runs on 1 consumer x {workers} threads, the worker "
        "threads' CPU time (cProfile's own cost included: read shares, not milliseconds)"
    )
    stats.sort_stats("cumulative").print_stats(r"engine/", 40)
    stats.sort_stats("tottime").print_stats(25)
    print(out.getvalue())


# --- the table ---------------------------------------------------------------------------
def median_range(values: list[float], fmt: str = "{:.0f}") -> str:
    middle = fmt.format(statistics.median(values))
    return middle if len(values) == 1 else f"{middle} ({span(values, fmt)})"


def percent(values: list[float]) -> str:
    return median_range([100 * v for v in values])


def report(
    results: dict[tuple[int, int], list[dict[str, Any]]],
    starts: list[str],
    args: argparse.Namespace,
    loads: list[float],
    commit_ms: float,
) -> None:
    steps = args.flows * args.steps
    print(
        f"{args.flows} flows x {args.steps} trivial blocking steps at once; PostgreSQL + "
        f"Redis-backed Huey; {args.rounds} rounds, interleaved; {CORES} cores "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()};"
        f" load average (1 min) {min(loads):.2f}-{max(loads):.2f}; bare commit "
        f"{commit_ms:.2f} ms. Medians, ranges over the rounds in brackets."
    )
    print()
    print(
        "| consumers x threads | flows started | steps/s | to the fewest consumers, same round "
        "| starting them, s | complete when all started | RSS per consumer, MB (warm / end) | "
        "of which its own (RssAnon), MB | CPU per step, ms: consumers / postgres | "
        "idle consumer, % of a core | connections |"
    )
    print("|" + "---|" * 11)
    fewest = min(count for count, _ in results)
    for (count, workers), rows in results.items():
        for how in starts:
            runs = [row[how] for row in rows]
            base = [row[how]["steps_s"] for row in results[(fewest, workers)]]
            ratio = [run["steps_s"] / b for run, b in zip(runs, base, strict=True)]

            def col(key: str, runs: list[dict[str, float]] = runs) -> list[float]:
                return [run[key] for run in runs]

            def per_step(key: str, runs: list[dict[str, float]] = runs) -> str:
                cpu = [r[key] * CORES * r["cpu_seconds"] * 1000 / steps for r in runs]
                return median_range(cpu, "{:.2f}")

            warm = [mb[0] for row in rows for mb in row["rss_warm"]]
            end = [mb[0] for row in rows for mb in row["rss_end"]]
            anon = [mb[1] for row in rows for mb in row["rss_end"]]
            print(
                f"| {count} x {workers} | {how} | {median_range(col('steps_s'))} | "
                f"{median_range(ratio, '{:.2f}')}x | "
                f"{median_range(col('starting_s'), '{:.1f}')} | "
                f"{percent(col('done_when_started'))} % | "
                f"{median_range(warm)} / {median_range(end)} | {median_range(anon)} | "
                f"{per_step('cpu_consumers')} / {per_step('cpu_pg_consumers')} | "
                f"{percent([row['idle_core'] for row in rows])} % | "
                f"{max(row['connections'] for row in rows)} |"
            )
    print()
    print("CPU over the timed window, as shares of the whole machine (100 % = every core busy):")
    print()
    print(
        "| consumers x threads | flows started | machine busy | iowait | consumers | "
        "postgres, consumers' sessions | postgres, bench's session | postgres, server | "
        "redis | bench | other | load average |"
    )
    print("|" + "---|" * 12)
    for (count, workers), rows in results.items():
        for how in starts:
            runs = [row[how] for row in rows]
            cells = [percent([run[f"cpu_{key}"] for run in runs]) + " %" for key in SHARES]
            load = span([run["load"] for run in runs], "{:.2f}")
            print(f"| {count} x {workers} | {how} | {' | '.join(cells)} | {load} |")


def numbers(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=400)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--consumers", default="1,2,4", help="consumer processes, e.g. 1,2,4")
    parser.add_argument("--workers", default="2", help="threads per consumer, e.g. 1,2")
    parser.add_argument("--starts", default="during,before", help="during, before or both")
    parser.add_argument("--profile", action="store_true", help="then profile one consumer")
    args = parser.parse_args()
    counts, threads = numbers(args.consumers), numbers(args.workers)
    starts = [how for how in args.starts.split(",") if how]
    assert set(starts) <= {"during", "before"}, starts
    # Each consumer opens at most its threads + 2 connections (engine/dbpool.py), the bench 1.
    most = max(counts) * (max(threads) + 2) + 2
    if most > MAX_CONNECTIONS:
        parser.error(f"up to {most} connections: the shared server allows this bench 30")

    server, database = scratch_database()
    env = scaled_env(database)
    os.environ.update(env)
    set_up = False
    try:
        import django

        django.setup()
        set_up = True
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from engine import api

        call_command("migrate", verbosity=0)
        flush_redis_queue(env)
        commit_ms = commit_floor()
        user = get_user_model().objects.create_user("bench")
        routine = api.create_routine("scaleout", ["bench_trivial"] * args.steps, owner=user)
        configs = [(count, workers) for workers in threads for count in counts]
        results: dict[tuple[int, int], list[dict[str, Any]]] = {c: [] for c in configs}
        loads = [os.getloadavg()[0]]
        print(f"load average {os.getloadavg()}; bare commit {commit_ms:.2f} ms", file=sys.stderr)
        for number in range(args.rounds):
            turn = number % len(configs)  # a rotating order: no size always last
            for count, workers in configs[turn:] + configs[:turn]:
                row = run_round(number, count, workers, starts, env, routine, user, args)
                results[(count, workers)].append(row)
                loads.append(os.getloadavg()[0])
                brief = {how: round(row[how]["steps_s"]) for how in starts}
                print(
                    f"round {number + 1}, {count} x {workers}: steps/s {brief}, "
                    f"RSS {[round(mb[0]) for mb in row['rss_end']]} MB, load average "
                    f"{os.getloadavg()}\n  {json.dumps(row)}",
                    file=sys.stderr,
                )
        if args.rounds:
            report(results, starts, args, loads, commit_ms)
        if args.profile:
            profile(env, max(threads), routine, user, args.flows, args.steps)
    finally:
        if set_up:
            from django.db import connection

            connection.close()
            connection.close_pool()  # type: ignore[attr-defined]
        flush_redis_queue(env)
        drop_database(server, database)


if __name__ == "__main__":
    main()
elif os.environ.get("BENCH_PROFILE"):
    install_profiler(os.environ["BENCH_PROFILE"])
