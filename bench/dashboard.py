"""Flows dashboard render time with many flows.

    .venv/bin/python bench/dashboard.py [--flows 100000] [--repeat 15]

Creates the flows with bulk_create in a scratch runtime directory (embedded defaults: SQLite
in WAL mode), then renders the dashboard through the Django test client as a staff user and
as the flows' owner: first page, a filtered page, a search and a deep page. Prints the median
render time in ms and the number of SQL queries of each (the query count must not grow with
the page size: no N+1).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRATCH = tempfile.mkdtemp(prefix="flowstudio-bench-dashboard-")
os.environ.update(
    DJANGO_SETTINGS_MODULE="studio.settings",
    FLOWSTUDIO_VAR_DIR=SCRATCH,
    HUEY_IMMEDIATE="1",
)

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from engine import api  # noqa: E402
from engine.flows.status import FlowState  # noqa: E402
from engine.models import Flow  # noqa: E402

STATES = [s.value for s in FlowState]


def create_flows(count: int) -> tuple[object, object]:
    User = get_user_model()
    staff = User.objects.create_user("bench-staff", password="x", is_staff=True)
    owners = [User.objects.create_user(f"bench-{i}", password="x") for i in range(20)]
    routines = [
        api.create_routine(f"Routine {i}", ["greet", "ask_approval", "send_email"], owner=staff)
        for i in range(10)
    ]
    snapshots = {r.pk: r.snapshot() for r in routines}
    rng = random.Random(7)
    batch: list[Flow] = []
    for index in range(count):
        routine = routines[index % len(routines)]
        state = rng.choice(STATES)
        batch.append(
            Flow(
                routine=routine,
                routine_version=1,
                steps=snapshots[routine.pk],
                owner=owners[index % len(owners)],
                state=state,
                position=rng.randrange(3),
                wait_reason="approval required" if state == FlowState.WAITING else "",
            )
        )
        if len(batch) == 5000:
            Flow.objects.bulk_create(batch)
            batch = []
    Flow.objects.bulk_create(batch)
    return staff, owners[0]


def measure(client: Client, url: str, repeat: int) -> tuple[float, int]:
    client.get(url)  # warm caches (templates, the SQLite page cache)
    times = []
    queries = 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(ctx.captured_queries)
    return statistics.median(times), queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    start = time.perf_counter()
    staff, owner = create_flows(args.flows)
    print(f"created {args.flows} flows in {time.perf_counter() - start:.1f} s ({SCRATCH})")
    pages = [
        ("first page", "/"),
        ("state=waiting", "/?state=waiting"),
        ("search 'Routine 3'", "/?q=Routine+3"),
        ("page 500", "/?page=500"),
    ]
    for who, user in (("staff", staff), ("owner", owner)):
        client = Client()
        client.force_login(user)
        for name, url in pages:
            median, queries = measure(client, url, args.repeat)
            print(f"{who:6} {name:20} median {median:7.1f} ms  {queries:2d} queries")
    connection.close()
    shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
