"""Cost of the LTM time machine: `ltm_at`, `rollback_ltm` and `copy_ltm` on runs of 10,000+
events, what the history adds to ordinary writes, and what the checkpoints buy.

    .venv/bin/python -m bench.ltm_history [--events 10000] [--every 100]
                                          [--database sqlite|postgresql|URL]
                                          [--shapes loop,wide] [--calls 50] [--rollbacks 20]
                                          [--width 200] [--window 50] [--profile]

Two shapes of run, each built by executing it inline (Huey in immediate mode) until it has
at least `--events` events, owned by an ordinary user:

- loop: a root around a sub-machine whose states go tick -> tock -> tick ... (each tick
  updates the machine's state and appends to its list with `atomic_state_append`); after
  `--window` rounds the root re-enters the sub-machine (a new visit: its list starts empty).
  A handful of instances: small checkpoints.
- wide: a sub-machine forks into `--width` parameterised branches (`branch_{n}`, fired with
  `params=[{"n": n}, ...]`), each appends to the machine's list and enters one join state;
  the join, once the list is full, re-enters the sub-machine for another round. Over 200
  instances: big checkpoints.

Each shape is built twice in the same process: with a checkpoint every `--every` events and
with checkpoints off (LTM_CHECKPOINT_EVERY = 10**9, so the time machine replays every change
from the start: the baseline). Then, on both runs, wall-clock times of
`api.ltm_at` at seqs early in the history, in the middle, the latest, just before a checkpoint
(the most changes to replay) and random ones; `api.rollback_ltm` to random earlier seqs (each
followed by an `ltm_at` of the rolled-back run at its new latest seq; Huey is switched out
of immediate mode first, so what a rollback re-queues waits in the queue instead of running);
`api.copy_ltm` from random seqs. Also: build time per event with and without checkpoints,
bytes per event of `LtmEvent.change` and `LtmCheckpoint.snapshot`, and the bare
`engine.core.ltm.history.replay` of every change (rows already fetched).

Runs in a scratch directory: SQLite in WAL mode (the embedded default), or, with
`--database postgresql` (or DATABASE_URL pointing to PostgreSQL), a scratch database
`bench_ltm_history_<pid>` created on that server and dropped at the end. No timing is
asserted; the output is a table.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OFF = 10**9  # LTM_CHECKPOINT_EVERY that never checkpoints a bench-sized run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="events per run (at least)")
    parser.add_argument("--every", type=int, default=100, help="LTM_CHECKPOINT_EVERY")
    parser.add_argument(
        "--database",
        default="",
        help="sqlite (default), postgresql (DATABASE_URL's server, or "
        "postgres://postgres@127.0.0.1:5432) or a postgres:// URL; a scratch database either way",
    )
    parser.add_argument("--shapes", default="loop,wide")
    parser.add_argument("--calls", type=int, default=50, help="ltm_at calls per seq kind")
    parser.add_argument("--rollbacks", type=int, default=20)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--width", type=int, default=200, help="branches of the wide shape")
    parser.add_argument("--window", type=int, default=50, help="loop rounds per visit")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile the slow calls")
    return parser.parse_args()


ARGS = parse_args()
SCRATCH = tempfile.mkdtemp(prefix="flowstudio-bench-ltm-history-")


def _postgres_url(choice: str) -> str:
    """The scratch database's URL on the server `choice` names ('' when SQLite)."""
    env_url = os.environ.get("DATABASE_URL", "")
    if choice in ("", "sqlite"):
        if choice == "" and env_url.startswith(("postgres://", "postgresql://")):
            choice = env_url
        else:
            return ""
    if choice in ("postgres", "postgresql", "pg"):
        is_pg = env_url.startswith(("postgres://", "postgresql://"))
        choice = env_url if is_pg else "postgres://postgres@127.0.0.1:5432/postgres"
    parts = urlsplit(choice)
    return urlunsplit(parts._replace(path=f"/bench_ltm_history_{os.getpid()}"))


PG_URL = _postgres_url(ARGS.database)
os.environ.pop("REDIS_URL", None)  # SQLite-backed Huey: the queue is not what is measured
os.environ.update(
    DJANGO_SETTINGS_MODULE="studio.settings",
    FLOWSTUDIO_VAR_DIR=SCRATCH,
    HUEY_IMMEDIATE="1",
    HUEY_NAME=f"flowstudio-bench-{os.getpid()}",
    ENGINE_LOG_LEVEL="WARNING",
    FLOWSTUDIO_SCRIPT_MODULES="",
    DATABASE_POOL_SIZE="2",  # PostgreSQL: one connection is used; never more than two
)
if PG_URL:
    os.environ["DATABASE_URL"] = PG_URL
else:
    os.environ.pop("DATABASE_URL", None)


def _admin(sql: str) -> None:
    import psycopg

    parts = urlsplit(PG_URL)
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql)


if PG_URL:
    _admin(f'CREATE DATABASE "{urlsplit(PG_URL).path[1:]}"')

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from huey.contrib.djhuey import HUEY  # noqa: E402

from engine import LTM, api  # noqa: E402
from engine.core.ltm import history  # noqa: E402
from engine.core.ltm.history import replay  # noqa: E402
from engine.core.ltm.registry import register  # noqa: E402
from engine.ltm import store, timemachine  # noqa: E402
from engine.models import LtmCheckpoint, LtmEvent, LtmRun  # noqa: E402


def stored_seq(run_id: str | None) -> int:
    """The run's last event as committed (what the machines below stop on)."""
    return LtmRun.objects.filter(pk=run_id).values_list("seq", flat=True).get()


# -- the loop shape ----------------------------------------------------------------------------


class HistTick(LTM):
    name = "tick"

    def run(self, **payload: Any) -> None:
        cycle = self.parent
        count = cycle.state["count"] + 1
        cycle.update_state({"count": count})
        cycle.atomic_state_append("log", {"n": count, "parity": count % 2})
        self.update_state({"last": count})
        self.transition("rest" if count >= self.root.state["window"] else "tock")


class HistTock(LTM):
    name = "tock"

    def run(self, **payload: Any) -> None:
        self.update_state({"seen": self.parent.state["count"]})
        self.transition("tick")


class HistRest(LTM):
    """End of a visit of the cycle: again, or stop once the run has its events."""

    name = "rest"

    def run(self, **payload: Any) -> None:
        visits = self.root.state["visits"] + 1
        self.root.update_state({"visits": visits})
        done = stored_seq(self.id) >= self.root.state["events"]
        self.parent.transition("stop" if done else "again")


class HistCycle(LTM):
    name = "cycle"
    initial_state = {"count": 0, "log": []}
    init = [HistTick]
    transitions = [
        {"from": HistTick, "label": "tock", "to": HistTock},
        {"from": HistTock, "label": "tick", "to": HistTick},
        {"from": HistTick, "label": "rest", "to": HistRest},
    ]


class HistStopped(LTM):
    name = "stopped"


@register
class HistLoop(LTM):
    name = "bench_history_loop"
    init = [HistCycle]
    transitions = [
        {"from": HistCycle, "label": "again", "to": HistCycle},
        {"from": HistCycle, "label": "stop", "to": HistStopped},
    ]

    def run(self, events: int = 10_000, window: int = 50, **payload: Any) -> None:
        self.update_state({"events": events, "window": window, "visits": 0})


# -- the wide shape ----------------------------------------------------------------------------


class WideSplit(LTM):
    name = "split"

    def run(self, **payload: Any) -> None:
        width = self.root.state["width"]
        self.transition("fork", params=[{"n": n} for n in range(width)])


class WideBranch(LTM):
    name = "branch_{n}"

    def run(self, **payload: Any) -> None:
        got = self.parent.atomic_state_append("results", self.params["n"])
        self.update_state({"saw": len(got), "square": self.params["n"] ** 2})
        self.transition("join")


class WideJoin(LTM):
    """Entered by every branch: the execution that finds the list full moves on."""

    name = "join"

    def run(self, **payload: Any) -> None:
        if len(self.parent.state["results"]) < self.root.state["width"]:
            return
        rounds = self.root.state["rounds"] + 1
        self.root.update_state({"rounds": rounds, "total": sum(self.parent.state["results"])})
        done = stored_seq(self.id) >= self.root.state["events"]
        self.parent.transition("finish" if done else "again")


class WideBatch(LTM):
    name = "batch"
    initial_state = {"results": []}
    init = [WideSplit]
    transitions = [
        {"from": WideSplit, "label": "fork", "to": WideBranch},
        {"from": WideBranch, "label": "join", "to": WideJoin},
    ]


class WideDone(LTM):
    name = "done"


@register
class HistWide(LTM):
    name = "bench_history_wide"
    init = [WideBatch]
    transitions = [
        {"from": WideBatch, "label": "again", "to": WideBatch},
        {"from": WideBatch, "label": "finish", "to": WideDone},
    ]

    def run(self, events: int = 10_000, width: int = 200, **payload: Any) -> None:
        self.update_state({"events": events, "width": width, "rounds": 0})


SHAPES = {
    "loop": ("bench_history_loop", lambda: {"events": ARGS.events, "window": ARGS.window}),
    "wide": ("bench_history_wide", lambda: {"events": ARGS.events, "width": ARGS.width}),
}


# -- measuring ---------------------------------------------------------------------------------


@contextmanager
def checkpoint_every(every: int) -> Iterator[None]:
    """Checkpoints every `every` events, and after wide writes; none at all with OFF."""
    saved = settings.FLOWSTUDIO.get("LTM_CHECKPOINT_EVERY"), store._WIDE_CHANGE
    settings.FLOWSTUDIO["LTM_CHECKPOINT_EVERY"] = every
    if every >= OFF:
        store._WIDE_CHANGE = OFF
    try:
        yield
    finally:
        settings.FLOWSTUDIO["LTM_CHECKPOINT_EVERY"], store._WIDE_CHANGE = saved


@contextmanager
def queued_not_run() -> Iterator[None]:
    """Huey out of immediate mode: what a rollback or copy queues waits in the queue."""
    HUEY.immediate = False
    try:
        yield
    finally:
        HUEY.storage.flush_all()
        HUEY.immediate = True


class Spent:
    """Wall time spent inside some engine functions (wrapped, never changed): the part of
    a build that is the history's, and the phases of a rollback under --profile."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def wrapping(self, *targets: tuple[Any, str]) -> Iterator[None]:
        saved = [(module, name, getattr(module, name)) for module, name in targets]
        for module, name, function in saved:
            setattr(module, name, self._wrap(name, function))
        try:
            yield
        finally:
            for module, name, function in saved:
                setattr(module, name, function)

    def _wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000
                self.calls[name] = self.calls.get(name, 0) + 1

        return wrapper


@contextmanager
def counting_queries(counts: list[int]) -> Iterator[None]:
    """Appends the number of SQL statements run inside the block to `counts`."""
    seen = [0]

    def count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        seen[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        yield
    counts.append(seen[0])


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = call()
    return (time.perf_counter() - start) * 1000, value


def summary(times: list[float]) -> tuple[int, float, float, float]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return len(ordered), statistics.median(ordered), p95, ordered[-1]


ROWS: list[tuple[str, str, str, int, float, float, float, str]] = []


def report(shape: str, kept: str, what: str, times: list[float], note: str = "") -> None:
    n, median, p95, worst = summary(times)
    ROWS.append((shape, kept, what, n, median, p95, worst, note))
    flag = "  > 100 ms" if median > 100 else ("  (p95 > 100 ms)" if p95 > 100 else "")
    print(
        f"  {kept:<9} {what:<36} n={n:<3} median {median:7.1f}  p95 {p95:7.1f}  "
        f"max {worst:7.1f} ms{flag}{'  ' + note if note else ''}",
        flush=True,
    )


def build(shape: str, user: Any, every: int) -> tuple[str, float, int, Spent]:
    """A run of `shape` executed inline to the end; (run id, seconds, events, the time
    spent writing checkpoints and working out changes)."""
    name, payload = SHAPES[shape]
    spent = Spent()
    with checkpoint_every(every), spent.wrapping((store, "_checkpoint"), (history, "change_of")):
        start = time.perf_counter()
        run_id = api.start_ltm(name, user, payload())
        seconds = time.perf_counter() - start
    run = LtmRun.objects.get(pk=run_id)
    assert run.state == "complete", (run.state, run.error)
    return run_id, seconds, run.seq, spent


def storage(run_id: str) -> dict[str, float]:
    """Bytes of the run's history as text (and, on PostgreSQL, as stored: pg_column_size)."""
    event, checkpoint = LtmEvent._meta.db_table, LtmCheckpoint._meta.db_table
    pg = connection.vendor == "postgresql"
    text = "length(CAST({} AS text))" if pg else "length({})"
    stored = "pg_column_size({})" if pg else "length({})"
    out: dict[str, float] = {}
    with connection.cursor() as cursor:
        for table, column, key in ((event, "change", "change"), (checkpoint, "snapshot", "ckpt")):
            cursor.execute(
                f"SELECT count(*), count({column}), coalesce(sum({text.format(column)}), 0), "
                f"coalesce(sum({stored.format(column)}), 0) FROM {table} WHERE run_id = %s",
                [run_id.replace("-", "") if connection.vendor == "sqlite" else run_id],
            )
            rows, filled, text_bytes, stored_bytes = cursor.fetchone()
            out[f"{key}_rows"], out[f"{key}_filled"] = rows, filled
            out[f"{key}_text"], out[f"{key}_stored"] = text_bytes, stored_bytes
    return out


def seq_kinds(run_id: str, rng: random.Random, calls: int) -> dict[str, list[int]]:
    """Seqs to ask for: fixed early / middle / latest ones, the one just before each of a
    few checkpoints (most changes to replay), random ones over the whole history."""
    run = LtmRun.objects.get(pk=run_id)
    low, high = run.history_from, run.seq
    kept = list(LtmCheckpoint.objects.filter(run_id=run_id).values_list("seq", flat=True))
    before = [seq - 1 for seq in kept if seq - 1 >= low] or [high]
    return {
        "early (seq 50)": [min(high, low + 49)] * calls,
        "middle": [(low + high) // 2] * calls,
        "latest": [high] * calls,
        "just before a checkpoint": [rng.choice(before) for _ in range(calls)],
        "random": [rng.randint(low, high) for _ in range(calls)],
    }


def measure_at(shape: str, kept: str, run_id: str, user: Any, calls: int, seed: int) -> None:
    rng = random.Random(seed)
    api.ltm_at(run_id, 1, user)  # warm up (imports, the page cache)
    for what, seqs in seq_kinds(run_id, rng, calls).items():
        if kept == "no ckpt" and what == "just before a checkpoint":
            continue
        times = [timed(lambda s=s: api.ltm_at(run_id, s, user))[0] for s in seqs]
        report(shape, kept, f"ltm_at {what}", times)


def requeued(run_id: str) -> int:
    """How many executions the run's last rollback queued again."""
    event = LtmEvent.objects.filter(run_id=run_id, kind="rollback").order_by("-seq").first()
    return len(event.data["requeued"]) if event is not None else 0


def note(queries: list[int], queued: list[int]) -> str:
    return (
        f"[{statistics.median(queries):.0f} SQL statements, "
        f"{statistics.median(queued):.0f} executions queued again (medians)]"
    )


def measure_rollback(shape: str, kept: str, run_id: str, user: Any, count: int, seed: int) -> None:
    """Rollbacks to random earlier seqs, one after the other (each adds events to the run),
    each followed by an ltm_at of the run at its new latest seq."""
    rng = random.Random(seed)
    rollbacks, after, queries, queued = [], [], [], []
    with queued_not_run():
        for index in range(count):
            run = LtmRun.objects.get(pk=run_id)
            target = rng.randint(run.history_from, run.seq - 50)
            with counting_queries(queries):
                ms, rolled = timed(
                    lambda t=target, i=index: api.rollback_ltm(run_id, t, user, f"bench {i}")
                )
            rollbacks.append(ms)
            queued.append(requeued(run_id))
            after.append(timed(lambda r=rolled: api.ltm_at(run_id, r.seq, user))[0])
    report(shape, kept, "rollback_ltm to a random seq", rollbacks, note(queries, queued))
    report(shape, kept, "ltm_at latest, after each rollback", after)


def measure_copy(shape: str, kept: str, run_id: str, user: Any, count: int, seed: int) -> None:
    rng = random.Random(seed)
    run = LtmRun.objects.get(pk=run_id)
    for what, seqs in (
        (
            "copy_ltm at a random seq",
            [rng.randint(run.history_from, run.seq) for _ in range(count)],
        ),
        ("copy_ltm at the latest", [None] * max(1, count // 2)),
    ):
        times, queries, queued = [], [], []
        with queued_not_run():
            for seq in seqs:
                with counting_queries(queries):
                    ms, copy_id = timed(lambda s=seq: api.copy_ltm(run_id, user, s))
                times.append(ms)
                queued.append(LtmRun.objects.get(pk=copy_id).executions.count())
        report(shape, kept, what, times, note(queries, queued))


def measure_bare_replay(shape: str, run_id: str) -> list[float]:
    """Fetching every change (one query) and replaying them, apart; returns the times of
    JSON-encoding every change (what storing them costs in CPU)."""
    rows = LtmEvent.objects.filter(run_id=run_id, change__isnull=False).order_by("seq")
    fetches, changes = [], []
    for _ in range(3):
        ms, changes = timed(lambda: list(rows.values_list("change", flat=True)))
        fetches.append(ms)
    replays = [timed(lambda: replay(None, changes))[0] for _ in range(5)]
    report(shape, "no ckpt", f"fetch all {len(changes)} changes (1 query)", fetches)
    report(shape, "no ckpt", "history.replay of them (CPU only)", replays)
    return [timed(lambda: [json.dumps(c) for c in changes])[0] for _ in range(3)]


def profile(label: str, call: Callable[[], Any], repeat: int = 5) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        call()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    print(f"\n--- cProfile: {label} ({repeat} calls), by cumulative time ---")
    print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))


def profile_rollback(shape: str, run_id: str, user: Any, count: int = 5) -> None:
    """Where a rollback's time goes: the engine functions it calls, timed from outside."""
    spent = Spent()
    targets = [
        ("moment", timemachine, "moment"),
        ("write records", store, "_write_records"),
        ("inherit appends", store, "_inherit_appends"),
        ("next state", store, "_next_state"),
        ("checkpoint", store, "_checkpoint"),
        ("dispatch (after commit)", store, "dispatch"),
    ]
    rng, totals, queries = random.Random(1), [], []
    with queued_not_run(), spent.wrapping(*[(module, name) for _, module, name in targets]):
        for index in range(count):
            run = LtmRun.objects.get(pk=run_id)
            target = rng.randint(run.history_from, run.seq - 50)
            with counting_queries(queries):
                totals.append(
                    timed(lambda t=target, i=index: api.rollback_ltm(run_id, t, user, f"p{i}"))[0]
                )
    total = sum(totals)
    print(f"\n--- {shape}: where {count} rollbacks spend their time ({total:.0f} ms) ---")
    for label, _, name in targets:
        ms, calls = spent.ms.get(name, 0.0), spent.calls.get(name, 0)
        print(f"  {label:<26} {ms / count:7.1f} ms/rollback  {ms / total:5.0%}  ({calls} calls)")
    inside = sum(spent.ms.get(name, 0.0) for _, _, name in targets)
    print(
        f"  {'the rest':<26} {(total - inside) / count:7.1f} ms/rollback  "
        f"{(total - inside) / total:5.0%}  (insert/update executions, events, commit...)"
    )
    print(f"  SQL statements per rollback: {statistics.median(queries):.0f} (median)")


def engine_version() -> str:
    """The commit measured (read-only git calls), and whether engine/ differs from it."""
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)

    try:
        head = git("rev-parse", "--short", "HEAD").stdout.strip()
        dirty = git("diff", "--quiet", "HEAD", "--", "engine").returncode != 0
    except OSError:
        return "unknown"
    return f"{head}{' (engine/ modified)' if dirty else ''}" if head else "unknown"


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sqlite3

    database = f"SQLite {sqlite3.sqlite_version} (WAL)"
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            database = f"PostgreSQL {cursor.fetchone()[0]} (127.0.0.1, scratch db)"
    return (
        f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}) {cpu}; "
        f"{platform.system()} {platform.release()}\n"
        f"load average {load()} (other work on the machine skews every figure)\n"
        f"python {platform.python_version()}, Django {django.get_version()}, "
        f"sqlite {sqlite3.sqlite_version}; database: {database}; commit {engine_version()}"
    )


def bench_shape(shape: str, user: Any) -> None:
    run_on, built_on, events_on, spent_on = build(shape, user, ARGS.every)
    run_off, built_off, events_off, spent_off = build(shape, user, OFF)
    size_on, size_off = storage(run_on), storage(run_off)
    assert size_off["ckpt_rows"] == 0 and size_on["ckpt_rows"] > 0
    instances = len(api.load_ltm(run_on, user).instances)
    per_on, per_off = built_on / events_on * 1000, built_off / events_off * 1000
    print(f"\n== {shape}: {instances} instances ==")
    print(
        f"  build, ckpt every {ARGS.every:<4} {events_on:6d} events {built_on:6.1f} s  "
        f"{per_on:6.3f} ms/event  ({size_on['ckpt_rows']} checkpoints)"
    )
    print(
        f"  build, no ckpt          {events_off:6d} events {built_off:6.1f} s  "
        f"{per_off:6.3f} ms/event  (with checkpoints: {per_on / per_off - 1:+.1%}, "
        "wall clock, noisy)"
    )
    checkpoint_ms = spent_on.ms.get("_checkpoint", 0.0)
    change_on = spent_on.ms.get("change_of", 0.0) / events_on * 1000
    change_off = spent_off.ms.get("change_of", 0.0) / events_off * 1000
    print(
        f"  timed inside the builds: writing checkpoints {checkpoint_ms / events_on * 1000:.1f}"
        f" us/event ({checkpoint_ms / (built_on * 1000):.1%} of the build); working out the"
        f" changes (history.change_of) {change_on:.1f} us/event ({change_off:.1f} in the"
        " build without checkpoints)"
    )
    pg = connection.vendor == "postgresql"
    one_checkpoint = size_on["ckpt_text"] / max(1, size_on["ckpt_rows"]) / 1024
    print(
        f"  storage per event: change {size_on['change_text'] / events_on:5.0f} B"
        + (f" ({size_on['change_stored'] / events_on:.0f} B as stored)" if pg else "")
        + f", checkpoints {size_on['ckpt_text'] / events_on:5.0f} B"
        + (f" ({size_on['ckpt_stored'] / events_on:.0f} B as stored)" if pg else "")
        + f"; one checkpoint {one_checkpoint:.1f} KiB"
        + f"; {size_on['change_filled']} of {size_on['change_rows']} events carry a change"
    )
    # The checkpoints change nothing of what is shown (the two runs are the same story).
    for seq in (1, events_on // 3, events_on // 2, events_on):
        seen = [
            {
                f: (i.status, dict(i.state), i.entry)
                for f, i in api.ltm_at(r, seq, user).instances.items()
            }
            for r in (run_on, run_off)
        ]
        assert seen[0] == seen[1], seq
    latest, now = api.ltm_at(run_on, events_on, user), api.load_ltm(run_on, user)
    assert {f: (i.status, dict(i.state)) for f, i in latest.instances.items()} == {
        f: (i.status, dict(i.state)) for f, i in now.instances.items()
    }

    measure_at(shape, f"ckpt {ARGS.every}", run_on, user, ARGS.calls, ARGS.seed)
    measure_at(shape, "no ckpt", run_off, user, max(3, ARGS.calls // 10), ARGS.seed)
    dumps = statistics.median(measure_bare_replay(shape, run_off))
    print(f"  JSON-encoding the changes (CPU): {dumps / events_off * 1000:.1f} us/event")
    if ARGS.profile:
        seq = seq_kinds(run_on, random.Random(1), 1)["just before a checkpoint"][0]
        profile(f"{shape} ltm_at just before a checkpoint", lambda: api.ltm_at(run_on, seq, user))
    with checkpoint_every(ARGS.every):
        measure_copy(shape, f"ckpt {ARGS.every}", run_on, user, ARGS.copies, ARGS.seed)
        measure_rollback(shape, f"ckpt {ARGS.every}", run_on, user, ARGS.rollbacks, ARGS.seed)
        if ARGS.profile:
            profile_rollback(shape, run_on, user)
    with checkpoint_every(OFF):
        few = max(2, ARGS.copies // 5), max(2, ARGS.rollbacks // 5)
        measure_copy(shape, "no ckpt", run_off, user, few[0], ARGS.seed)
        measure_rollback(shape, "no ckpt", run_off, user, few[1], ARGS.seed)


def main() -> None:
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench-history")  # an ordinary user
    assert not user.is_staff
    print(machine())
    print(
        f"events >= {ARGS.events}, checkpoint every {ARGS.every}; "
        f"loop window {ARGS.window} rounds, wide {ARGS.width} branches; times in ms"
    )
    for shape in [s.strip() for s in ARGS.shapes.split(",") if s.strip()]:
        bench_shape(shape, user)
    print("\n| shape | history | operation | n | median ms | p95 ms | max ms |")
    print("|---|---|---|---:|---:|---:|---:|")
    for shape, kept, what, n, median, p95, worst, _ in ROWS:
        print(f"| {shape} | {kept} | {what} | {n} | {median:.1f} | {p95:.1f} | {worst:.1f} |")


def cleanup() -> None:
    connection.close()
    if PG_URL:
        close_pool = getattr(connection, "close_pool", None)
        if close_pool is not None:
            close_pool()
        _admin(f'DROP DATABASE IF EXISTS "{urlsplit(PG_URL).path[1:]}" WITH (FORCE)')
    shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    started = time.perf_counter()
    try:
        main()
    finally:
        cleanup()
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at the end {load()}")
