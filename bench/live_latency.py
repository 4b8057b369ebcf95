"""Latency of live updates: from the engine's commit of a flow event to its arrival at
websocket clients, in embedded mode (engine inside the daphne process, thread-safe in-memory
channel layer) and in Redis mode (a separate consumer process, Redis channel layer).

    .venv/bin/python bench/live_latency.py [--flows 77] [--steps 10] [--clients 1,100]
                                           [--modes embedded,redis] [--rate 50]
                                           [--views flows,dashboard] [--client-procs 2]

Each event's commit time is its `created` timestamp (taken just before the commit); arrival is
the client's clock on the same machine. Prints median and p99 per mode and client count, the
events a second the engine made, and the server's memory per client (its resident memory
with every client connected, less before any).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
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
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The studio measured: this checkout, or another one's (`--server-root`, e.g. a worktree of an
# earlier commit, to compare with in the same run)
SERVER = [ROOT]


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


def prepare(
    env: dict[str, str], flows: int, steps: int, watchers: int = 0
) -> tuple[list[list[int]], list[str], str]:
    """Migrate, create a user, an API token and `flows` flows of theirs parked on a waiting
    first step, and the sessions the clients sign in with: the owner's own when `watchers` is
    0 (every client is the owner, in as many tabs), else that many operators (staff) of their
    own, each watching every flow as operators do. Returns ([[flow id, its last sequence
    number], ...], session cookies, token)."""
    code = f"""
import django, json; django.setup()
from django.core.management import call_command; call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from engine import api
from tests.live_support import session_cookie
User = get_user_model()
user = User.objects.create_user("bench")
steps = ["t_wait"] + [{{"script": "t_sleep", "params": {{"sleep": 0.02}}}}] * {steps}
routine = api.create_routine("latency", steps, owner=user)
flows = [api.start_flow(routine, user) for _ in range({flows})]
from studio.models import ApiToken
token = ApiToken.issue(user, "bench")[1]
staff = User.objects.bulk_create(
    User(username=f"operator{{n}}", is_staff=True) for n in range({watchers})
)
cookies = [session_cookie(watcher) for watcher in staff] or [session_cookie(user)]
print(json.dumps([[[f.pk, f.seq] for f in flows], cookies, token]))
"""
    prep_env = dict(env, HUEY_IMMEDIATE="1")
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=SERVER[0],
        env=prep_env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    watched, cookies, token = json.loads(out.strip().splitlines()[-1])
    return watched, cookies, token


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
    one open flow page; "dashboard": it watches the dashboard and times each row update.
    Like a page of the studio, it also follows the header's notification count."""
    import websockets

    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/live/",
        additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
        max_size=None,
        open_timeout=120,
    ) as ws:
        await ws.recv()
        await ws.send(json.dumps({"action": "watch_notifications"}))
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
            frame = json.loads(await ws.recv())
            arrived = time.time()
            # (several dashboard rows may come in one frame)
            for message in frame["rows"] if frame.get("type") == "rows" else [frame]:
                if message.get("type") != wanted:
                    continue
                event = message if view == "dashboard" else message["event"]
                created = datetime.fromisoformat(event["created"]).timestamp()
                latencies.append((arrived - created) * 1000)
                complete += event["kind"] == "flow.complete"


def client_process(
    port: int, cookies: list[str], watched: list[list[int]], view: str, pipe: Any
) -> None:
    """A socket for each of `cookies` in one process (the bench spreads them over a few, so
    that the clients' own decoding is not what is measured): says "ready" once all watch,
    then sends back every latency once every socket saw every flow complete."""
    clients = len(cookies)

    async def run() -> list[float]:
        latencies: list[float] = []
        ready = asyncio.Event()
        counter = [0, clients, 0]
        tasks = [
            asyncio.create_task(client(port, cookie, watched, latencies, ready, counter, view))
            for cookie in cookies
        ]
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED, timeout=180)
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if not ready.is_set():
            raise RuntimeError(f"{counter[0]} of {clients} clients watching after 180 s")
        pipe.send("ready")
        await asyncio.wait_for(asyncio.gather(*tasks), 900)
        return latencies

    try:
        pipe.send(asyncio.run(run()))
    except Exception as exc:
        pipe.send(exc)


def rss_kb(pid: int) -> int:
    """Resident memory of a process and its children, in KiB."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            total += rss_kb(int(child))
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def push_inputs(port: int, token: str, ids: list[int], interval: float) -> None:
    started = time.monotonic()
    for index, flow_id in enumerate(ids):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/flows/{flow_id}/input",
            data=json.dumps({"data": {"answer": 1}}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200, response.status
        # a steady rate: the next input at its time, however long this one took
        time.sleep(max(0.0, started + (index + 1) * interval - time.monotonic()))


class Result(NamedTuple):
    median: float
    p99: float
    deliveries: int
    per_client_kb: float
    events_per_second: float
    server_cpu: float  # the daphne process's CPU seconds per second of the run


def run_mode(
    mode: str,
    flows: int,
    steps: int,
    clients: int,
    interval: float,
    view: str,
    procs: int = 2,
    same_user: bool = False,
) -> Result:
    env = setup_env(mode)
    env["FLOWSTUDIO_SCRIPT_MODULES"] = "bench.workload,tests.catalog"
    watched, cookies, token = prepare(env, flows, steps, 0 if same_user else clients)
    cookies = (cookies * clients)[:clients]
    port = free_port()
    servers = []
    args = [sys.executable, "manage.py", "studio", "--port", str(port)]
    if mode == "redis":
        args.append("--no-consumer")
        servers.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "run_engine", "-w", "2"],
                cwd=SERVER[0],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    log = open(Path(env["FLOWSTUDIO_VAR_DIR"]) / "studio.log", "wb")  # noqa: SIM115
    studio = subprocess.Popen(args, cwd=SERVER[0], env=env, stdout=log, stderr=subprocess.STDOUT)
    servers.append(studio)
    context = multiprocessing.get_context("spawn")
    pipes, workers = [], []
    latencies: list[float] = []
    try:
        time.sleep(3)
        before = rss_kb(studio.pid)
        procs = max(1, min(procs, clients))
        for index in range(procs):
            mine, theirs = context.Pipe()
            worker = context.Process(
                target=client_process, args=(port, cookies[index::procs], watched, view, theirs)
            )
            worker.start()
            pipes.append(mine)
            workers.append(worker)
        for pipe in pipes:  # every client subscribed (and caught up) before the clock runs
            if not pipe.poll(240):
                raise RuntimeError("the clients did not connect within 240 s")
            answer = pipe.recv()
            if isinstance(answer, Exception):
                raise answer
        per_client = (rss_kb(studio.pid) - before) / clients
        # Input is pushed over the REST API, as a user's client would: the server commits it
        # and publishes its event (in embedded mode a separate process could not reach the
        # in-process channel layer).
        started, cpu = time.monotonic(), cpu_seconds(studio.pid)
        push_inputs(port, token, [flow_id for flow_id, _ in watched], interval)
        for pipe in pipes:
            if not pipe.poll(max(0.0, started + 300 - time.monotonic())):
                raise RuntimeError("the clients did not see every flow complete within 300 s")
            answer = pipe.recv()
            if isinstance(answer, Exception):
                raise answer
            latencies += answer
        elapsed = time.monotonic() - started
        server_cpu = (cpu_seconds(studio.pid) - cpu) / elapsed
    finally:
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.terminate()
        for proc in servers:
            proc.terminate()
            proc.wait(10)
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    rate = flows * (steps + 3) / elapsed
    return Result(statistics.median(latencies), p99, len(latencies), per_client, rate, server_cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=77, help="flows watched by every client")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--rate",
        type=float,
        default=50,
        help="events a second: a waiting flow is answered every (steps + 3) / rate seconds",
    )
    parser.add_argument("--clients", default="1,100")
    parser.add_argument(
        "--client-procs", type=int, default=2, help="processes the clients are spread over"
    )
    parser.add_argument(
        "--same-user",
        action="store_true",
        help="every client is the flows' owner (one user in many tabs: every input changes "
        "their notifications, and each tab is told); by default each client is an operator "
        "of its own",
    )
    parser.add_argument(
        "--server-root",
        default="",
        help="comma-separated checkouts whose studio is measured in turn, in the same run "
        "(default: this one)",
    )
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
    args.interval = (args.steps + 3) / args.rate
    print(
        f"commit-to-client latency: {args.flows} flows x {args.steps} steps watched by each "
        f"client, {events} events per client, {args.rate:g} events/s; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    roots = [Path(root).resolve() for root in args.server_root.split(",") if root] or [ROOT]
    for mode, view, clients, root in (
        (mode, view, int(clients), root)
        for mode in args.modes.split(",")
        for view in args.views.split(",")
        for clients in args.clients.split(",")
        for root in roots
    ):
        SERVER[0] = root
        if len(roots) > 1:
            print(f"  studio of {root}:")
        try:
            result = run_mode(
                mode,
                args.flows,
                args.steps,
                clients,
                args.interval,
                view,
                args.client_procs,
                args.same_user,
            )
        except Exception as exc:  # report the configuration that broke, go on
            print(f"  {mode:9s} {view:9s} {clients:4d} client(s): failed: {exc!r}")
            continue
        print(
            f"  {mode:9s} {view:9s} {clients:4d} client(s): median {result.median:6.1f} "
            f"ms   p99 {result.p99:6.1f} ms   ({result.deliveries} deliveries, "
            f"{result.events_per_second:.0f} events/s, server CPU "
            f"{result.server_cpu * 100:.0f} %, server memory "
            f"{result.per_client_kb:.0f} KiB per client; load average "
            f"{os.getloadavg()[0]:.1f})",
            flush=True,
        )


def capacity(args: argparse.Namespace) -> None:
    print(
        f"clients of one daphne process watching the dashboard, {args.flows} flows x "
        f"{args.steps} steps, p99 target 250 ms"
    )
    for mode in args.modes.split(","):
        served = 0
        for clients in (100, 200, 400, 600, 800, 1000, 1500, 2000):
            try:
                result = run_mode(
                    mode,
                    args.flows,
                    args.steps,
                    clients,
                    (args.steps + 3) / args.rate,
                    "dashboard",
                    args.client_procs,
                    args.same_user,
                )
            except Exception as exc:
                print(f"  {mode:9s} {clients:4d} clients: failed: {exc!r}")
                break
            print(
                f"  {mode:9s} {clients:4d} clients: median {result.median:6.1f} ms   p99 "
                f"{result.p99:6.1f} ms   ({result.deliveries} deliveries)",
                flush=True,
            )
            if result.p99 >= 250:
                break
            served = clients
        print(f"  {mode}: one daphne process served {served} clients with p99 under 250 ms")


if __name__ == "__main__":
    main()
