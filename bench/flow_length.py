"""What a step costs as a flow grows long, and what a long history costs its page.

    .venv/bin/python bench/flow_length.py [--long 1000] [--short 10] [--rounds 3] [--events 10000]

1. Per-step cost by position: flows of `--short` and of `--long` trivial blocking steps (each
   returns a tiny dict) run inline (Huey in immediate mode) through `engine.api.start_flow`.
   A step's cost is the time between consecutive `step.completed` events of the flow (their
   `created` timestamps, written by the engine's clock as it commits each step). Compared:
   the last steps of the short flows against the last steps of the long one (the median over
   the last `--window` steps of each), rounds interleaved.
2. A flow page with a long history: one flow with `--events` events (bulk-inserted, as a
   flow re-checked or moved that many times would have), its page rendered through the
   Django test client as its owner: median server time and SQL queries, against the page
   of a flow with 10 events; and the first load's time apart (the page shows the latest 200
   events: the first load renders each one's item, the later loads find them kept).

Runs on the embedded defaults (SQLite in WAL mode) in a scratch directory. No assertions.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRATCH = tempfile.mkdtemp(prefix="flowstudio-bench-length-")
os.environ.update(
    DJANGO_SETTINGS_MODULE="studio.settings",
    FLOWSTUDIO_VAR_DIR=SCRATCH,
    HUEY_IMMEDIATE="1",
    FLOWSTUDIO_SCRIPT_MODULES="bench.workload",
    ENGINE_LOG_LEVEL="WARNING",
)

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from engine import api  # noqa: E402
from engine.models import Flow, FlowEvent  # noqa: E402


def step_costs(flow: Flow) -> list[float]:
    """Seconds between consecutive step.completed events of `flow`, in step order."""
    stamps = list(
        FlowEvent.objects.filter(flow=flow, kind="step.completed")
        .order_by("seq")
        .values_list("created", flat=True)
    )
    return [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]


def per_step(user, steps: int, window: int) -> float:
    routine = api.create_routine(f"len {steps}", ["bench_trivial"] * steps, owner=user)
    flow = api.start_flow(routine, user)
    assert flow.state == "complete", flow.state
    costs = step_costs(flow)
    return statistics.median(costs[-window:])


def page_time(client: Client, flow: Flow, repeat: int) -> tuple[float, int, float]:
    """(median time of `repeat` loads of the flow's page, its SQL queries, the first load's
    time: the one that renders every event's item, which the later loads find kept)."""
    times = []
    queries = 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as captured:
            began = time.perf_counter()
            response = client.get(f"/flows/{flow.pk}/", HTTP_HOST="localhost")
            times.append(time.perf_counter() - began)
        assert response.status_code == 200, response.status_code
        queries = len(captured)
    return statistics.median(times), queries, times[0]


def long_history(user, events: int) -> Flow:
    routine = api.create_routine("history", ["ask_approval"], owner=user)
    flow = api.start_flow(routine, user)
    base = flow.seq
    rows = [
        FlowEvent(
            flow=flow,
            seq=base + i + 1,
            kind="flow.rechecked",
            state=flow.state,
            position=0,
            message="still waiting",
            data={"step": 0, "n": i},
        )
        for i in range(events)
    ]
    FlowEvent.objects.bulk_create(rows, batch_size=2000)
    Flow.objects.filter(pk=flow.pk).update(seq=base + events)
    return Flow.objects.get(pk=flow.pk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", type=int, default=1000)
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="x")
    load = os.getloadavg()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    shorts, longs = [], []
    for _ in range(args.rounds):
        shorts.append(statistics.median(per_step(user, args.short, args.window) for _ in range(5)))
        longs.append(per_step(user, args.long, args.window))
    client = Client()
    client.force_login(user)
    small = long_history(user, 10)
    big = long_history(user, args.events)
    small_page = page_time(client, small, args.repeat)
    big_page = page_time(client, big, args.repeat)
    print()
    print("| measure | value |")
    print("|---|---|")
    ms = [f"{s * 1000:.2f}" for s in shorts]
    ml = [f"{s * 1000:.2f}" for s in longs]
    print(f"| a step near the end of a {args.short}-step flow (ms, per round) | {', '.join(ms)} |")
    print(f"| a step near the end of a {args.long}-step flow (ms, per round) | {', '.join(ml)} |")
    ratio = statistics.median(longs) / statistics.median(shorts)
    print(f"| step {args.long} / step {args.short} | {ratio:.2f}x |")
    for label, page in (("10 events", small_page), (f"{args.events:,} events", big_page)):
        print(
            f"| page of a flow with {label} | {page[0] * 1000:.1f} ms, {page[1]} queries "
            f"(its first load {page[2] * 1000:.1f} ms) |"
        )


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
