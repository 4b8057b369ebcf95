"""Latency of live updates: from the engine's commit of a flow event to its arrival at
websocket clients, in embedded mode (engine inside the daphne process, thread-safe in-memory
channel layer) and in Redis mode (a separate consumer process, Redis channel layer).

    .venv/bin/python bench/live_latency.py [--flows 77] [--steps 10] [--clients 1,100]
                                           [--modes embedded,redis]

Each event's commit time is its `created` timestamp (taken just before the commit); arrival is
the client's clock on the same machine. Prints median and p99 per mode and client count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup_env(mode: str) -> dict[str, str]:
    scratch = tempfile.mkdtemp(prefix=f"flowstudio-live-{mode}-")
    env = dict(os.environ)
    for key in ("DATABASE_URL", "REDIS_URL"):
        env.pop(key, None)
    env.update(
        DJANGO_SETTINGS_MODULE="studio.settings",
        FLOWSTUDIO_VAR_DIR=scratch,
        HUEY_IMMEDIATE="0",
        HUEY_NAME=f"flowstudio-bench-{os.getpid()}",
        FLOWSTUDIO_SCRIPT_MODULES="bench.workload",
        ENGINE_LOG_LEVEL="WARNING",
    )
    if mode == "redis":
        env["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    return env


def prepare(env: dict[str, str], flows: int, steps: int) -> tuple[list[list[int]], str, str]:
    """Migrate, create a user, its session, an API token and `flows` flows parked on a
    waiting first step; returns ([[flow id, its last sequence number], ...], session cookie,
    token)."""
    code = f"""
import django, json; django.setup()
from django.core.management import call_command; call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from engine import api
from tests.live_support import session_cookie
user = get_user_model().objects.create_user("bench")
steps = ["t_wait"] + [{{"script": "t_sleep", "params": {{"sleep": 0.02}}}}] * {steps}
routine = api.create_routine("latency", steps, owner=user)
flows = [api.start_flow(routine, user) for _ in range({flows})]
from studio.models import ApiToken
token = ApiToken.issue(user, "bench")[1]
print(json.dumps([[[f.pk, f.seq] for f in flows], session_cookie(user), token]))
"""
    prep_env = dict(env, HUEY_IMMEDIATE="1")
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=prep_env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    watched, cookie, token = json.loads(out.strip().splitlines()[-1])
    return watched, cookie, token


async def client(
    port: int,
    cookie: str,
    watched: list[list[int]],
    latencies: list[float],
    ready: asyncio.Event,
    counter: list[int],
    view: str,
) -> None:
    """One browser's socket. `view` "flows": it watches every flow (as flow pages do) and
    times each event; "page": it watches one flow (its index `counter[2]` picks which), as
    one open flow page; "dashboard": it watches the dashboard and times each row update."""
    import websockets

    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/live/",
        additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
        max_size=None,
    ) as ws:
        await ws.recv()
        if view == "dashboard":
            await ws.send(json.dumps({"action": "watch_dashboard"}))
            expected = 1
        elif view == "page":
            watched = [watched[counter[2] % len(watched)]]
            counter[2] += 1
            flow_id, seq = watched[0]
            await ws.send(json.dumps({"action": "watch_flow", "flow": flow_id, "since": seq}))
            expected = 1
        else:
            for flow_id, seq in watched:
                message = {"action": "watch_flow", "flow": flow_id, "since": seq}
                await ws.send(json.dumps(message))
            expected = len(watched)
        acknowledged = 0
        while acknowledged < expected:  # subscribed (and caught up) before the clock runs
            acknowledged += json.loads(await ws.recv()).get("type") == "watching"
        counter[0] += 1
        if counter[0] == counter[1]:
            ready.set()
        complete = 0
        wanted = "row" if view == "dashboard" else "event"
        while complete < len(watched):
            message = json.loads(await ws.recv())
            arrived = time.time()
            if message.get("type") != wanted:
                continue
            event = message if view == "dashboard" else message["event"]
            created = datetime.fromisoformat(event["created"]).timestamp()
            latencies.append((arrived - created) * 1000)
            complete += event["kind"] == "flow.complete"


def push_inputs(port: int, token: str, ids: list[int], interval: float) -> None:
    for flow_id in ids:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/flows/{flow_id}/input",
            data=json.dumps({"data": {"answer": 1}}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200, response.status
        time.sleep(interval)


def run_mode(
    mode: str, flows: int, steps: int, clients: int, interval: float, view: str
) -> tuple[float, float, int]:
    env = setup_env(mode)
    env["FLOWSTUDIO_SCRIPT_MODULES"] = "bench.workload,tests.catalog"
    watched, cookie, token = prepare(env, flows, steps)
    port = free_port()
    procs = []
    args = [sys.executable, "manage.py", "studio", "--port", str(port)]
    if mode == "redis":
        args.append("--no-consumer")
        procs.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "run_engine", "-w", "2"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    log = open(Path(env["FLOWSTUDIO_VAR_DIR"]) / "studio.log", "wb")  # noqa: SIM115
    procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    latencies: list[float] = []
    try:
        time.sleep(3)

        async def main() -> None:
            ready = asyncio.Event()
            counter = [0, clients, 0]
            tasks = [
                asyncio.create_task(client(port, cookie, watched, latencies, ready, counter, view))
                for _ in range(clients)
            ]
            await asyncio.wait_for(ready.wait(), 120)
            # Input is pushed over the REST API, as a user's client would: the server
            # commits it and publishes its event (in embedded mode a separate process could
            # not reach the in-process channel layer).
            ids = [flow_id for flow_id, _ in watched]
            await asyncio.to_thread(push_inputs, port, token, ids, interval)
            await asyncio.wait_for(asyncio.gather(*tasks), 900)

        asyncio.run(main())
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    return statistics.median(latencies), p99, len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=77, help="flows watched by every client")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between starting two flows"
    )
    parser.add_argument("--clients", default="1,100")
    parser.add_argument("--modes", default="embedded,redis")
    parser.add_argument(
        "--views",
        default="flows,dashboard",
        help="what each client watches: flows (all of them), page (one flow), dashboard",
    )
    parser.add_argument(
        "--capacity",
        action="store_true",
        help="instead: raise the number of dashboard clients of one daphne process until "
        "p99 reaches 250 ms, and print the largest that stayed under",
    )
    args = parser.parse_args()
    if args.capacity:
        capacity(args)
        return
    events = args.flows * (args.steps + 3)  # input, running, one per step, complete
    print(
        f"commit-to-client latency: {args.flows} flows x {args.steps} steps watched by each "
        f"client, {events} events per client"
    )
    for mode in args.modes.split(","):
        for view in args.views.split(","):
            for clients in (int(c) for c in args.clients.split(",")):
                try:
                    median, p99, count = run_mode(
                        mode, args.flows, args.steps, clients, args.interval, view
                    )
                except Exception as exc:  # report the configuration that broke, go on
                    print(f"  {mode:9s} {view:9s} {clients:4d} client(s): failed: {exc!r}")
                    continue
                print(
                    f"  {mode:9s} {view:9s} {clients:4d} client(s): median {median:6.1f} ms   "
                    f"p99 {p99:6.1f} ms   ({count} deliveries)"
                )


def capacity(args: argparse.Namespace) -> None:
    print(
        f"clients of one daphne process watching the dashboard, {args.flows} flows x "
        f"{args.steps} steps, p99 target 250 ms"
    )
    for mode in args.modes.split(","):
        served = 0
        for clients in (50, 100, 150, 200, 300, 400, 600, 800):
            try:
                median, p99, count = run_mode(
                    mode, args.flows, args.steps, clients, args.interval, "dashboard"
                )
            except Exception as exc:
                print(f"  {mode:9s} {clients:4d} clients: failed: {exc!r}")
                break
            print(
                f"  {mode:9s} {clients:4d} clients: median {median:6.1f} ms   p99 {p99:6.1f} ms"
                f"   ({count} deliveries)",
                flush=True,
            )
            if p99 >= 250:
                break
            served = clients
        print(f"  {mode}: one daphne process served {served} clients with p99 under 250 ms")


if __name__ == "__main__":
    main()
