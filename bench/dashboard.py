"""Flows dashboard server time with many flows (1,000,000 by default).

    .venv/bin/python bench/dashboard.py [--flows 1000000] [--repeat 7] [--rounds 3]
                                        [--database sqlite|postgresql|URL] [--keep]
                                        [--reuse KEPT] [--pages REGEX]

Creates the flows in a scratch runtime directory (embedded defaults: SQLite in WAL mode), or
in a scratch PostgreSQL database (`--database postgresql`), with one INSERT ... SELECT over a
recursive CTE (1,000,000 flows in well under a minute): 20 owners,
10 routines, every state (mostly finished, a few retrying), wait reasons on the waiting flows,
`updated` spread over a year. Then it renders the dashboard through the Django test client
(in process: the server's time, rendering included) as an operator and as an ordinary user
(their own flows): the first page, each state, a routine, an owner, searches (a routine's
name, a common, a rare and a short wait reason, `#id`, a username, text that matches nothing),
the next page and a deep page (half way down the list, by the "Older" link's cursor).
`--keep` keeps the database built, `--reuse` measures a kept one again (migrated first: the
flows are not built again), `--pages` measures only the pages whose name matches. Prints, per
page, the
median server time in ms of `--repeat` loads, the range of the medians over `--rounds`
rounds, and the number of SQL queries (which must not grow with the number of flows). The
load average is printed before and after: other work on the machine shows in the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--database",
        default="sqlite",
        help="sqlite (default), postgresql (postgres://postgres@127.0.0.1:5432) or a "
        "postgres:// URL: a scratch database bench_dashboard_<pid> on that server, dropped after",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch database (its name is printed)"
    )
    parser.add_argument(
        "--reuse",
        default="",
        help="measure a database kept by --keep (the directory of the SQLite one, or the name "
        "of the PostgreSQL one, with --database) instead of building one; it is kept",
    )
    parser.add_argument(
        "--pages", default="", help="only the pages whose name matches this regular expression"
    )
    return parser.parse_args()


ARGS = parse_args()
PG_URL = ""
if ARGS.database not in ("", "sqlite"):
    server = (
        "postgres://postgres@127.0.0.1:5432/postgres"
        if ARGS.database in ("pg", "postgres", "postgresql")
        else ARGS.database
    )
    name = ARGS.reuse or f"bench_dashboard_{os.getpid()}"
    PG_URL = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
SCRATCH = (
    ARGS.reuse
    if ARGS.reuse and not PG_URL
    else tempfile.mkdtemp(prefix="flowstudio-bench-dashboard-")
)
os.environ.pop("REDIS_URL", None)  # SQLite-backed Huey: the queue is not what is measured
os.environ.update(
    DJANGO_SETTINGS_MODULE="studio.settings",
    FLOWSTUDIO_VAR_DIR=SCRATCH,
    HUEY_IMMEDIATE="1",
    HUEY_NAME=f"flowstudio-bench-{os.getpid()}",
    DATABASE_POOL_SIZE="2",
)
if PG_URL:
    os.environ["DATABASE_URL"] = PG_URL
else:
    os.environ.pop("DATABASE_URL", None)


def _admin(sql: str) -> None:
    import psycopg

    admin = urlunsplit(urlsplit(PG_URL)._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql)


if PG_URL and not ARGS.reuse:
    _admin(f'CREATE DATABASE "{urlsplit(PG_URL).path[1:]}"')

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

# How often each state occurs, per thousand flows: mostly finished, a few retrying.
STATE_SHARE = {
    FlowState.COMPLETE: 600,
    FlowState.FAILED: 80,
    FlowState.KILLED: 40,
    FlowState.WAITING: 150,
    FlowState.RUNNING: 50,
    FlowState.PENDING: 75,
    FlowState.RETRYING: 5,
}
OWNERS = 20
ROUTINES = 10
REASONS = ("approval of invoice ", "manager sign-off for order ", "upload the contract of ")


def _state_case() -> str:
    """A SQL CASE giving each row a state from `r % 1000`, as STATE_SHARE says."""
    whens, upto = [], 0
    for state, share in STATE_SHARE.items():
        upto += share
        whens.append(f"WHEN r % 1000 < {upto} THEN '{state.value}'")
    return "CASE " + " ".join(whens) + " END"


def create_flows(count: int) -> tuple[Any, Any, list[int], list[int]]:
    """The flows, in one INSERT ... SELECT (SQLite or PostgreSQL); the operator, an owner,
    the owners' and routines' ids."""
    sqlite = connection.vendor == "sqlite"
    User = get_user_model()
    staff = User.objects.create_user("bench-staff", password="x", is_staff=True)
    owners = [User.objects.create_user(f"bench-{i}", password="x") for i in range(OWNERS)]
    routines = [
        api.create_routine(f"Routine {i}", ["greet", "ask_approval", "send_email"], owner=staff)
        for i in range(ROUTINES)
    ]
    steps = Flow._meta.get_field("steps").get_db_prep_value(routines[0].snapshot(), connection)
    owner_ids = [u.pk for u in owners]
    routine_ids = [r.pk for r in routines]
    pick = lambda ids, var: "CASE {} {} END".format(  # noqa: E731
        f"{var} % {len(ids)}", " ".join(f"WHEN {k} THEN {v}" for k, v in enumerate(ids))
    )
    reason = " ".join(f"WHEN {k} THEN '{text}'" for k, text in enumerate(REASONS))

    def moment(seconds: str) -> str:
        if sqlite:
            return f"datetime('2025-01-01', '+' || ({seconds}) || ' seconds')"
        return f"timestamptz '2025-01-01 00:00:00+00' + ({seconds}) * interval '1 second'"

    rand = "abs(random())" if sqlite else "floor(random() * 1000000000)::bigint"
    expressions = {
        "routine_id": pick(routine_ids, "i"),
        "routine_version": "1",
        "steps": "%s",
        "owner_id": pick(owner_ids, "(i / 7)"),
        "state": "state",
        "position": "r % 3",
        "wait_reason": (
            f"CASE WHEN state = 'waiting' THEN (CASE i % 3 {reason} END) || (i % 5000) ELSE '' END"
        ),
        "created": moment("i * 30"),
        # Mostly in the order of creation, shuffled within ten minutes; ties happen.
        "updated": moment("i * 30 + r % 600"),
    }
    columns, values, params = [], [], []
    for field in Flow._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(field.column)
        if field.column in expressions:
            values.append(expressions[field.column])
            if expressions[field.column] == "%s":
                params.append(steps)
        else:
            values.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
    sql = (
        f"INSERT INTO {Flow._meta.db_table} ({', '.join(columns)}) "
        f"WITH RECURSIVE n(i, r) AS (SELECT 1, {rand} UNION ALL "
        f"SELECT i + 1, {rand} FROM n WHERE i < %s), "
        f"s(i, r, state) AS (SELECT i, r, {_state_case()} FROM n) "
        f"SELECT {', '.join(values)} FROM s"
    )
    sql = sql.replace("%", "%%").replace("%%s", "%s")  # the modulo operators, not parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, [count, *params])
        cursor.execute("ANALYZE")
    return staff, owners[0], owner_ids, routine_ids


def existing() -> tuple[Any, Any, list[int], list[int]]:
    """What `create_flows` returns, of a database it built before (`--reuse`)."""
    from engine.models import Routine

    User = get_user_model()
    owners = [User.objects.get(username=f"bench-{i}") for i in range(OWNERS)]
    routines = [Routine.objects.get(name=f"Routine {i}").pk for i in range(ROUTINES)]
    return User.objects.get(username="bench-staff"), owners[0], [u.pk for u in owners], routines


def measure(client: Client, url: str, repeat: int) -> tuple[float, int, str]:
    response = client.get(url)  # warm caches (templates, the SQLite page cache)
    assert response.status_code == 200, (url, response.status_code)
    times = []
    queries = 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(ctx.captured_queries)
    html = response.content.decode()
    shown = re.search(r'<p class="count"[^>]*>([^<]*)<', html)
    return statistics.median(times), queries, (shown.group(1).strip() if shown else "?")


def older_link(client: Client, url: str) -> str:
    """The "Older" link of a page (rel="next")."""
    html = client.get(url).content.decode()
    found = re.search(r'<a href="([^"]*)"[^>]*rel="next"', html)
    assert found, url
    return "/" + found.group(1).replace("&amp;", "&")


def deep_url(base: str, flows: object, position: int) -> str:
    """A page half way down a list: by its keyset cursor when the dashboard has one, else
    by page number."""
    from studio.web import pages

    if hasattr(pages, "cursor_of"):
        flow = flows.order_by("-updated", "-id")[position]  # type: ignore[attr-defined]
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}older={pages.cursor_of(flow)}"
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}page={position // 50}"


def main() -> None:
    args = ARGS
    print(f"{connection.vendor}: load average {os.getloadavg()}, {os.cpu_count()} cores")
    start = time.perf_counter()
    call_command("migrate", verbosity=0)
    if args.reuse:
        print(f"migrated in {time.perf_counter() - start:.1f} s")
        staff, owner, owner_ids, routine_ids = existing()
        args.flows = Flow.objects.count()
        print(f"reusing {args.flows} flows")
    else:
        start = time.perf_counter()
        staff, owner, owner_ids, routine_ids = create_flows(args.flows)
        print(f"created {Flow.objects.count()} flows in {time.perf_counter() - start:.1f} s")
    waiting = Flow.objects.filter(state="waiting", owner=owner).order_by("-id")
    waiting_id = waiting.values_list("pk")[0][0]
    middle = Flow.objects.order_by("-id").values_list("pk")[args.flows // 2][0]
    operator = [
        ("first page", "/"),
        *[(f"state={s.value}", f"/?state={s.value}") for s in FlowState],
        ("routine", f"/?routine={routine_ids[3]}"),
        ("owner", f"/?owner={owner_ids[5]}"),
        ("owner+state=failed", f"/?owner={owner_ids[5]}&state=failed"),
        ("search routine name", "/?q=Routine+3"),
        ("search wait reason", "/?q=invoice+4242"),
        ("search common wait reason", "/?q=sign-off"),
        ("search short text", "/?q=rd"),
        ("search #id", f"/?q=%23{middle}"),
        ("search username", "/?q=bench-7"),
        ("search no match", "/?q=no+such+thing"),
        ("page 2 (older link)", None),
        ("deep page (middle)", "deep:/"),
        ("deep state=waiting", "deep:/?state=waiting"),
    ]
    mine = [
        ("first page", "/"),
        ("state=waiting", "/?state=waiting"),
        ("state=retrying", "/?state=retrying"),
        ("search wait reason", "/?q=invoice+4242"),
        ("search no match", "/?q=no+such+thing"),
        ("search #id", f"/?q=%23{waiting_id}"),
        ("page 2 (older link)", None),
        ("deep page (middle)", "deep:/"),
    ]
    results: dict[tuple[str, str], list[tuple[float, int, str]]] = {}
    for round_number in range(args.rounds):
        for who, user, urls in (("operator", staff, operator), ("own", owner, mine)):
            client = Client(HTTP_HOST="localhost")
            client.force_login(user)
            visible = api.visible_flows(user)
            for name, url in urls:
                if args.pages and not re.search(args.pages, name):
                    continue
                if url is None:
                    url = older_link(client, "/")
                elif url.startswith("deep:"):
                    base = url[5:]
                    narrowed = visible
                    if "state=" in base:
                        narrowed = visible.filter(state=base.split("state=")[1])
                    url = deep_url(base, narrowed, narrowed.count() // 2)
                results.setdefault((who, name), []).append(measure(client, url, args.repeat))
        print(f"round {round_number + 1}: load average {os.getloadavg()}")
    print()
    print("| who | page | median ms | range of medians | queries | count shown |")
    print("|---|---|---:|---|---:|---|")
    for (who, name), runs in results.items():
        medians = [m for m, _, _ in runs]
        queries = sorted({q for _, q, _ in runs})
        print(
            f"| {who} | {name} | {statistics.median(medians):.1f} | "
            f"{min(medians):.1f}-{max(medians):.1f} | {'/'.join(map(str, queries))} | "
            f"{runs[-1][2]} |"
        )
    print(f"\nload average {os.getloadavg()}")
    connection.close()
    if args.keep or args.reuse:
        print(f"kept {urlsplit(PG_URL).path[1:] if PG_URL else SCRATCH}")
        return
    if PG_URL:
        _admin(f'DROP DATABASE "{urlsplit(PG_URL).path[1:]}" WITH (FORCE)')
    shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
