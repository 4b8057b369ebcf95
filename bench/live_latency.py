"""Latency of live updates: from the engine's commit of a flow event to its arrival at
websocket clients, in embedded mode (engine inside the daphne process, thread-safe in-memory
channel layer) and in Redis mode (a separate consumer process, Redis channel layer).

    .venv/bin/python bench/live_latency.py [--events 1000] [--clients 1,100] [--modes embedded,redis]

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


def prepare(env: dict[str, str], steps: int) -> tuple[int, int, str]:
    """Migrate, create a user, its session and a parked flow; returns (flow id, its last
    sequence number, session cookie)."""
    code = f"""
import django, json; django.setup()
from django.core.management import call_command; call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from engine import api
from tests.live_support import session_cookie
user = get_user_model().objects.create_user("bench")
routine = api.create_routine("latency", ["t_wait"] + [{{"script": "t_sleep", "params": {{"sleep": 0.004}}}}] * {steps}, owner=user)
flow = api.start_flow(routine, user)
flow.refresh_from_db()
print(json.dumps([flow.pk, flow.seq, session_cookie(user)]))
"""
    prep_env = dict(
        env, HUEY_IMMEDIATE="1", FLOWSTUDIO_SCRIPT_MODULES="bench.workload,tests.catalog"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=prep_env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


async def client(
    port: int,
    cookie: str,
    flow_id: int,
    seq: int,
    latencies: list[float],
    want: int,
    ready: asyncio.Event,
    counter: list[int],
) -> None:
    import websockets

    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/live/",
        additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
        max_size=None,
    ) as ws:
        await ws.recv()
        await ws.send(json.dumps({"action": "watch_flow", "flow": flow_id, "since": seq}))
        counter[0] += 1
        if counter[0] == counter[1]:
            ready.set()
        got = 0
        while got < want:
            message = json.loads(await ws.recv())
            arrived = time.time()
            if message.get("type") != "event":
                continue
            created = datetime.fromisoformat(message["event"]["created"]).timestamp()
            latencies.append((arrived - created) * 1000)
            got += 1


def run_mode(mode: str, events: int, clients: int) -> tuple[float, float, int]:
    env = setup_env(mode)
    env["FLOWSTUDIO_SCRIPT_MODULES"] = "bench.workload,tests.catalog"
    flow_id, seq, cookie = prepare(env, events)
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
    procs.append(
        subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    )
    try:
        time.sleep(3)
        latencies: list[float] = []

        async def main() -> None:
            ready = asyncio.Event()
            counter = [0, clients]
            # events - 1 step results + input + running + complete ... collect `events` each
            tasks = [
                asyncio.create_task(
                    client(port, cookie, flow_id, seq, latencies, events, ready, counter)
                )
                for _ in range(clients)
            ]
            await asyncio.wait_for(ready.wait(), 60)
            push = f"""
import django; django.setup()
from django.contrib.auth import get_user_model
from engine import api
api.push_input({flow_id}, {{"go": 1}}, get_user_model().objects.get(username="bench"))
"""
            subprocess.run(
                [sys.executable, "-c", push],
                cwd=ROOT,
                check=True,
                env=dict(env, HUEY_IMMEDIATE="0"),
            )
            await asyncio.wait_for(asyncio.gather(*tasks), 600)

        asyncio.run(main())
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    return statistics.median(latencies), p99, len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--clients", default="1,100")
    parser.add_argument("--modes", default="embedded,redis")
    args = parser.parse_args()
    print(f"commit-to-client latency over {args.events} events per client")
    for mode in args.modes.split(","):
        for clients in (int(c) for c in args.clients.split(",")):
            median, p99, count = run_mode(mode, args.events, clients)
            print(
                f"  {mode:9s} {clients:4d} client(s): median {median:6.1f} ms   "
                f"p99 {p99:6.1f} ms   ({count} deliveries)"
            )


if __name__ == "__main__":
    main()
