"""The shape others publish (Windmill's public harness): flows of 3 trivial steps, end to end,
on a real consumer process.

    .venv/bin/python -m bench.windmill [--flows 100] [--burst 200] [--rounds 3]
                                       [--modes embedded,polling,scaled,scaled-nosync]
                                       [--workers 2]

1. Latency: `--flows` flows one after another, each started with `engine.api.start_flow` and
   waited for until COMPLETE. Two clocks: the bench's (from before `start_flow` to the poller
   seeing the flow complete; the poller looks every millisecond, with one statement written
   once, sent as the engine sends its own) and the engine's own (the
   flow's `finished` minus its `created`, both written by the engine: what the engine takes,
   without the poller). Median and p95; per step = median / 3.
2. Throughput: `--burst` flows started at once (one after another from this process, as fast
   as `start_flow` goes), time until all are COMPLETE; flows/s and steps/s.

Modes, each in its own scratch directory with its own `manage.py run_engine` process
(`--workers` threads):

- `embedded`: SQLite database (WAL) and the SQLite-backed queue as shipped
  (`synchronous=NORMAL`, doorbell);
- `polling`: the same with the queue as it was (`synchronous=FULL`, no doorbell: idle workers
  poll with a 0.5 s maximum delay), the baseline for the doorbell, measured in the same run;
- `scaled`: PostgreSQL (a scratch database `bench_windmill_<pid>` created and dropped, on
  `BENCH_DATABASE_URL`'s server, default postgres://postgres@127.0.0.1:5432/postgres) and
  Redis-backed Huey (`BENCH_REDIS_URL`, default redis://127.0.0.1:6379/0; a queue name of its
  own);
- `scaled-nosync`: the same with the database sessions at `synchronous_commit=off` (a commit
  does not wait for the server's disk): what the disk's flush costs a step, for comparison.

Each mode also times a bare one-row commit on its database (the floor of any write).

Each round runs every mode once, modes alternating; the table shows the range over rounds
(min-max of each round's figure). It prints the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STEPS = 3
PG_DEFAULT = "postgres://postgres@127.0.0.1:5432/postgres"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the child: one mode, one round ------------------------------------------------------
def commit_floor(count: int = 100) -> float:
    """Median ms of a bare one-row insert committed on its own: what any write of a step
    costs at least on this database (PostgreSQL waits for its disk at each commit)."""
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_floor (x integer)")
    times = []
    for number in range(count):
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("INSERT INTO bench_floor (x) VALUES (%s)", [number])
        times.append((time.perf_counter() - started) * 1000)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_floor")
    return statistics.median(times)


def child(mode: str, flows: int, burst: int, workers: int) -> dict[str, float]:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, connections

    from engine import api
    from engine.models import Flow, FlowEvent
    from engine.rows import cursor_for

    call_command("migrate", verbosity=0)
    from huey.contrib.djhuey import HUEY

    HUEY.storage.flush_all()
    commit_ms = commit_floor()
    user = get_user_model().objects.create_user("bench")
    routine = api.create_routine("windmill", ["bench_trivial"] * STEPS, owner=user)
    log = open(Path(os.environ["FLOWSTUDIO_VAR_DIR"]) / "consumer.log", "wb")  # noqa: SIM115
    consumer = subprocess.Popen(
        [sys.executable, "manage.py", "run_engine", "-w", str(workers), "--no-live"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    # The poller's query, written once and sent as the engine sends its own (prepared on
    # PostgreSQL, to the driver on SQLite): a look costs the machine little besides the
    # round trip, which matters with the consumer and the database on the same 2 cores.
    done_sql = f"SELECT 1 FROM {Flow._meta.db_table} WHERE id = %s AND state = %s"

    def is_complete(flow_id: int) -> bool:
        with cursor_for(connection) as cursor:
            cursor.execute(done_sql, [flow_id, "complete"])
            return cursor.fetchone() is not None

    def complete(flow_id: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not is_complete(flow_id):
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow {flow_id} did not complete")
            time.sleep(0.001)

    try:
        for _ in range(5):  # warm up: the consumer starts, imports, connects
            complete(api.start_flow(routine, user).pk)
        time.sleep(1)  # the workers are idle again: each flow below starts from idle

        bench_ms, engine_ms = [], []
        stages: list[list[float]] = []  # per flow: each event's time after its creation
        for _ in range(flows):
            started = time.perf_counter()
            flow = api.start_flow(routine, user)
            complete(flow.pk)
            bench_ms.append((time.perf_counter() - started) * 1000)
            done = Flow.objects.get(pk=flow.pk)
            assert done.finished is not None
            engine_ms.append((done.finished - done.created).total_seconds() * 1000)
            times = FlowEvent.objects.filter(flow=flow.pk).order_by("seq")
            stages.append(
                [
                    (at - done.created).total_seconds() * 1000
                    for at in times.values_list("created", flat=True)
                ]
            )
        kinds = list(
            FlowEvent.objects.filter(flow=flow.pk).order_by("seq").values_list("kind", flat=True)
        )

        time.sleep(1)
        started = time.perf_counter()
        ids = [api.start_flow(routine, user).pk for _ in range(burst)]
        enqueued = time.perf_counter() - started
        pending = Flow.objects.filter(pk__in=ids).exclude(state="complete")
        deadline = time.monotonic() + 600
        while pending.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the burst did not complete")
            time.sleep(0.005)
        burst_s = time.perf_counter() - started
    finally:
        consumer.terminate()
        consumer.wait(30)
        log.close()
        connections.close_all()
    return {
        "median": statistics.median(bench_ms),
        "p95": percentile(bench_ms, 0.95),
        "engine_median": statistics.median(engine_ms),
        "engine_p95": percentile(engine_ms, 0.95),
        "burst_s": burst_s,
        "enqueue_s": enqueued,
        "commit_ms": commit_ms,
        # Where a flow's time goes: each of its events (as the last flow had them), at the
        # median of its time after the flow's creation, stamped by the process that wrote it.
        "timeline": [
            [kind, statistics.median(flow_stages[index] for flow_stages in stages)]
            for index, kind in enumerate(kinds)
            if all(len(flow_stages) == len(kinds) for flow_stages in stages)
        ],
    }


# --- the parent: scratch set-ups, rounds, the table ----------------------------------------
def mode_env(mode: str, database: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("DATABASE_URL", "REDIS_URL", "HUEY_DOORBELL", "HUEY_SQLITE_SYNCHRONOUS"):
        env.pop(key, None)
    env.update(
        DJANGO_SETTINGS_MODULE="studio.settings",
        FLOWSTUDIO_VAR_DIR=tempfile.mkdtemp(prefix=f"flowstudio-windmill-{mode}-"),
        HUEY_IMMEDIATE="0",
        HUEY_NAME=f"flowstudio-bench-windmill-{os.getpid()}",
        FLOWSTUDIO_SCRIPT_MODULES="bench.workload",
        ENGINE_LOG_LEVEL="WARNING",
    )
    if mode == "polling":
        env.update(HUEY_DOORBELL="0", HUEY_SQLITE_SYNCHRONOUS="FULL")
    if mode.startswith("scaled"):
        assert database
        if mode == "scaled-nosync":  # the server's commits do not wait for its disk
            database += "?options=-c%20synchronous_commit%3Doff"
        env.update(
            DATABASE_URL=database, REDIS_URL=os.environ.get("BENCH_REDIS_URL", REDIS_DEFAULT)
        )
    return env


def scratch_database() -> tuple[str, str]:
    """(URL of the server's maintenance database, URL of a new scratch database)."""
    import psycopg

    server = os.environ.get("BENCH_DATABASE_URL", PG_DEFAULT)
    name = f"bench_windmill_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server, server.rsplit("/", 1)[0] + "/" + name


def drop_database(server: str, database: str) -> None:
    import psycopg

    name = database.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def flush_redis_queue(env: dict[str, str]) -> None:
    import redis

    client = redis.Redis.from_url(env["REDIS_URL"])
    keys = list(client.scan_iter(f"*{env['HUEY_NAME']}*"))
    if keys:
        client.delete(*keys)
    client.close()


def run_round(mode: str, args: argparse.Namespace) -> dict[str, float]:
    server = database = None
    if mode.startswith("scaled"):
        server, database = scratch_database()
    env = mode_env(mode, database)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.windmill", "--child", mode]
            + ["--flows", str(args.flows), "--burst", str(args.burst)]
            + ["--workers", str(args.workers)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode:
            raise RuntimeError(f"{mode} round failed:\n{out.stderr[-3000:]}")
    finally:
        if server and database:
            flush_redis_queue(env)
            drop_database(server, database)
    return json.loads(out.stdout.strip().splitlines()[-1])


def span(values: list[float], fmt: str = "{:.1f}") -> str:
    low, high = min(values), max(values)
    return (
        fmt.format(low)
        if fmt.format(low) == fmt.format(high)
        else f"{fmt.format(low)}-{fmt.format(high)}"
    )


LABELS = {
    "embedded": "embedded: SQLite + SQLite queue (NORMAL, doorbell)",
    "polling": "embedded, queue as before (FULL, polling 0.5 s)",
    "scaled": "scaled: PostgreSQL + Redis queue",
    "scaled-nosync": "scaled, PostgreSQL with synchronous_commit=off",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=100)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", default="embedded,polling,scaled,scaled-nosync")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.flows, args.burst, args.workers)))
        return

    modes = [m for m in args.modes.split(",") if m]
    load_before = os.getloadavg()
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for number in range(args.rounds):
        for mode in modes:
            results[mode].append(run_round(mode, args))
            print(f"round {number + 1} {mode}: {json.dumps(results[mode][-1])}", file=sys.stderr)
    load_after = os.getloadavg()

    cores = os.cpu_count()
    print(
        f"{args.flows} flows of {STEPS} trivial blocking steps one after another, then "
        f"{args.burst} at once; consumer process with {args.workers} threads; {cores} cores; "
        f"{args.rounds} rounds; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after"
    )
    print()
    print(
        "| mode | median ms | p95 ms | per step ms | engine's clock: median / p95 ms | "
        f"per step ms (engine) | {args.burst} at once: s | flows/s | steps/s | "
        "bare commit ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        rows = results[mode]

        def col(key: str, rows: list[dict[str, float]] = rows) -> list[float]:
            return [row[key] for row in rows]

        per_step = [m / STEPS for m in col("median")]
        per_step_engine = [m / STEPS for m in col("engine_median")]
        flows_s = [args.burst / s for s in col("burst_s")]
        steps_s = [args.burst * STEPS / s for s in col("burst_s")]
        print(
            f"| {LABELS.get(mode, mode)} | {span(col('median'))} | {span(col('p95'))} | "
            f"{span(per_step)} | {span(col('engine_median'))} / {span(col('engine_p95'))} | "
            f"{span(per_step_engine)} | {span(col('burst_s'), '{:.2f}')} | "
            f"{span(flows_s, '{:.0f}')} | {span(steps_s, '{:.0f}')} | "
            f"{span(col('commit_ms'), '{:.2f}')} |"
        )
    print()
    print(
        "Where a flow's time goes (one after another): each event of a flow, at the median of "
        "its time after the flow's creation (ms, the range over rounds), stamped by the process "
        "that wrote it; then the bench's poller seeing the flow complete (median)."
    )
    for mode in modes:
        rows = results[mode]
        stages = [
            f"{kind} {span([row['timeline'][index][1] for row in rows], '{:.2f}')}"
            for index, (kind, _) in enumerate(rows[0]["timeline"])
            if all(len(row["timeline"]) == len(rows[0]["timeline"]) for row in rows)
        ]
        seen = span([row["median"] for row in rows], "{:.2f}")
        print(f"- {LABELS.get(mode, mode)}: {', '.join(stages)}; seen complete {seen}")


if __name__ == "__main__":
    main()
