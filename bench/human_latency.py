"""Human latency: input pushed over HTTP -> the step it answers committed -> the browser's page
told so over its websocket.

    .venv/bin/python -m bench.human_latency [--flows 100] [--rounds 2]
                                            [--modes embedded,polling,scaled]

`--flows` flows wait for input on their first step (`t_wait`, then one trivial step). One
websocket client, signed in as their owner and sending the studio's own Origin, watches one
flow at a time as its page does; the bench POSTs the input to `/api/flows/<id>/input` (a
token, over a connection kept alive as a browser keeps it) and times from just before the
POST to the websocket message carrying that flow's `step.completed` event (the answered step
committed by the consumer and pushed to the page), and to the first `fragments` message that
shows it (the page's live area re-rendered: what the user sees change). One flow after
another, 0.2 s apart, so each input reaches an idle consumer. Also the POST's own response
time, a GET of the flow (`/api/flows/<id>`) after each (the floor of a request to that
server), and where the time went, from the events' `created` times: to the input's write, to
the run's claim, to the step's write, to the page. An event's `created` is the engine's clock
when its write *begins* (`write_flow`, before its statements), not its commit: "to the
claim" holds the rest of the input's own transaction (its UPDATE and event, the wait cleared,
the commit), the hooks after that commit (the events published, then the enqueue), the worker
woken, the dequeue and the flow read; "to the step" holds the claim's transaction and the
step. Median and p99 (of 100 flows: the second slowest). `--server-root A,B` measures other
checkouts' studios in the same rounds (e.g. a worktree of an earlier commit).

Modes, each in a scratch directory: `embedded` (`manage.py studio` with the consumer inside,
SQLite, the SQLite queue as shipped), `polling` (the same with the queue as it was:
`synchronous=FULL`, idle workers polling with a 0.5 s maximum delay), `scaled` (a scratch
PostgreSQL database and Redis: `manage.py studio --no-consumer` beside a `run_engine`
process; see bench/windmill.py for the servers used).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SERVER = [ROOT]  # the checkout whose studio is measured (`--server-root`)

from bench.live_latency import free_port  # noqa: E402
from bench.windmill import (  # noqa: E402
    drop_database,
    flush_redis_queue,
    mode_env,
    percentile,
    scratch_database,
)

PREPARE = """
import django, json; django.setup()
from django.core.management import call_command; call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from engine import api
from tests.live_support import session_cookie
from studio.models import ApiToken
user = get_user_model().objects.create_user("bench")
routine = api.create_routine("human", ["t_wait", "bench_trivial"], owner=user)
flows = [api.start_flow(routine, user) for _ in range({flows})]
print(json.dumps([[[f.pk, f.seq] for f in flows], session_cookie(user),
                  ApiToken.issue(user, "bench")[1]]))
"""


class Browser:
    """The page's HTTP connection to the studio, kept alive between requests as a browser
    keeps it (a new TCP connection per request cost the client and the server about 2 ms
    more)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, token: str, flow_id: int, method: str = "POST") -> float:
        """ms to POST the input (or, `method` GET, to read the flow: the floor of a
        request)."""
        started = time.perf_counter()
        post = method == "POST"
        self.connection.request(
            method,
            f"/api/flows/{flow_id}" + ("/input" if post else ""),
            body=json.dumps({"data": {"answer": 1}}).encode() if post else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = self.connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        return (time.perf_counter() - started) * 1000


async def measure(port: int, cookie: str, token: str, watched: list[list[int]]) -> dict:
    import websockets

    latencies, posts, gets = [], [], []
    phases: list[tuple[float, float, float, float]] = []
    shown: list[float] = []
    browser = Browser(port)
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/live/",
        additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
        max_size=None,
    ) as ws:
        await ws.recv()
        for flow_id, seq in watched:
            await ws.send(json.dumps({"action": "watch_flow", "flow": flow_id, "since": seq}))
            while json.loads(await ws.recv()).get("type") != "watching":
                pass
            await asyncio.sleep(0.2)  # the consumer is idle again
            started, wall = time.perf_counter(), time.time()
            post = asyncio.create_task(asyncio.to_thread(browser.request, token, flow_id))
            committed: dict[str, datetime] = {}
            step_seq = None
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                event = message.get("event") or {}
                if message.get("type") == "event" and message.get("id") == flow_id:
                    # the first of each kind: the answered step's (the next step's follow)
                    committed.setdefault(
                        str(event.get("kind")), datetime.fromisoformat(event["created"])
                    )
                    if event.get("kind") == "step.completed" and step_seq is None:
                        step_seq = event["seq"]
                        latencies.append((time.perf_counter() - started) * 1000)
                        arrived = time.time()
                if (
                    message.get("type") == "fragments"
                    and message.get("id") == flow_id
                    and step_seq is not None
                    and message["seq"] >= step_seq
                ):
                    # the page's live area shows the step done: what the user sees
                    shown.append((time.perf_counter() - started) * 1000)
                    break
            answered = committed["input.pushed"].timestamp()
            claimed = committed.get("flow.running", committed["step.completed"]).timestamp()
            done = committed["step.completed"].timestamp()
            phases.append((answered - wall, claimed - answered, done - claimed, arrived - done))
            posts.append(await post)
            gets.append(await asyncio.to_thread(browser.request, token, flow_id, "GET"))
    return {
        "median": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
        "shown_median": statistics.median(shown),
        "shown_p99": percentile(shown, 0.99),
        "post_median": statistics.median(posts),
        "get_median": statistics.median(gets),
        # where the time went, by the events' `created` (the engine's clock as each write
        # begins, not its commit): to the input's write, from it to the run's claim (the
        # input's transaction and commit, its events published, the enqueue, the worker
        # woken, the dequeue, the flow read), to the step's write, to the page
        "to_input": statistics.median(p[0] for p in phases) * 1000,
        "to_claim": statistics.median(p[1] for p in phases) * 1000,
        "to_step": statistics.median(p[2] for p in phases) * 1000,
        "to_page": statistics.median(p[3] for p in phases) * 1000,
    }


def wait_for_port(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the studio did not start")


def run_round(mode: str, flows: int) -> dict:
    server = database = None
    if mode == "scaled":
        server, database = scratch_database()
    env = mode_env(mode, database)
    env["FLOWSTUDIO_SCRIPT_MODULES"] = "bench.workload,tests.catalog"
    env["FLOWSTUDIO_API_RATE"] = "off"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        out = subprocess.run(
            [sys.executable, "-c", PREPARE.format(flows=flows)],
            cwd=SERVER[0],
            env=dict(env, HUEY_IMMEDIATE="1"),
            capture_output=True,
            text=True,
        )
        if out.returncode:
            raise RuntimeError(out.stderr[-3000:])
        watched, cookie, token = json.loads(out.stdout.strip().splitlines()[-1])
        port = free_port()
        args = [sys.executable, "manage.py", "studio", "--port", str(port)]
        log = open(Path(env["FLOWSTUDIO_VAR_DIR"]) / "studio.log", "wb")  # noqa: SIM115
        if mode == "scaled":
            args.append("--no-consumer")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "run_engine", "-w", "2"],
                    cwd=SERVER[0],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        procs.append(
            subprocess.Popen(args, cwd=SERVER[0], env=env, stdout=log, stderr=subprocess.STDOUT)
        )
        wait_for_port(port, procs[-1])
        time.sleep(1)
        return asyncio.run(measure(port, cookie, token, watched))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(15)
        if server and database:
            flush_redis_queue(env)
            drop_database(server, database)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="embedded,polling,scaled")
    parser.add_argument(
        "--server-root",
        default="",
        help="comma-separated checkouts whose studio is measured in turn, round by round "
        "(default: this one); each row is labelled with its directory's name",
    )
    args = parser.parse_args()
    roots = [Path(root).resolve() for root in args.server_root.split(",") if root] or [ROOT]
    runs = [
        (mode, root, mode if len(roots) == 1 else f"{mode} ({root.name})")
        for mode in args.modes.split(",")
        if mode
        for root in roots
    ]
    load_before = os.getloadavg()
    results: dict[str, list[dict]] = {label: [] for _, _, label in runs}
    for number in range(args.rounds):
        for mode, root, label in runs:
            SERVER[0] = root
            results[label].append(run_round(mode, args.flows))
            print(f"round {number + 1} {label}: {json.dumps(results[label][-1])}", file=sys.stderr)
    load_after = os.getloadavg()
    print(
        f"input POSTed -> step.completed on the page's websocket, {args.flows} flows one after "
        f"another; {os.cpu_count()} cores; {args.rounds} rounds; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print()
    print(
        "| mode | step on the page (event), median ms | p99 ms | the page's live area shows it, "
        "median ms | p99 ms | POST answered, median ms | GET of the flow, median ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode, rows in results.items():
        cells = []
        keys = ("median", "p99", "shown_median", "shown_p99", "post_median", "get_median")
        for key in keys:
            low, high = min(r[key] for r in rows), max(r[key] for r in rows)
            cells.append(f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f}")
        print(f"| {mode} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
