"""PostgreSQL connections are bounded: every process draws them from a pool of its own size.

Measured before the pool: 200 simultaneous input pushes to one daphne server answered 114 of
them 503 ("too many clients already") and locked every client out of PostgreSQL for seconds;
each of the server's request threads kept a connection of its own.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, connections

from engine import api, dbpool
from engine.flows import lease
from engine.models import Flow, FlowEvent
from studio.models import ApiToken
from tests.conftest import wait_until
from tests.db_support import ConnectionSampler, checked_out
from tests.live_support import Studio, scaled_out

pytestmark = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="connection pools are PostgreSQL's (scale-out mode): tests/test_scaleout.py runs "
    "this module on PostgreSQL, or set DATABASE_URL=postgres://…",
)

PUSHES = 200
SERVER_POOL = 4  # small, so that the bound is far below one connection per request


@pytest.fixture
def pooled_studio(consumer, tmp_path):
    """The studio's daphne server with a pool of SERVER_POOL connections and no API rate
    limit, beside the consumer processes (scaled out; embedded, the consumer is inside it)."""
    if not scaled_out():
        consumer.stop()
    env = {**consumer.env, "DATABASE_POOL_SIZE": str(SERVER_POOL), "FLOWSTUDIO_API_RATE": "off"}
    server = Studio(env, tmp_path / "studio.log", with_consumer=not scaled_out())
    try:
        yield server
    finally:
        server.stop()


def push(port: int, token: str, flow_id: int, value: int, start: threading.Barrier):
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        body = json.dumps({"data": {"answer": value}})
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        start.wait()
        client.request("POST", f"/api/flows/{flow_id}/input", body, headers)
        response = client.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        client.close()


def test_200_simultaneous_pushes_stay_within_the_pools(pooled_studio, consumer, routine, user):
    flow = api.start_flow(routine("t_wait"), user)
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "waiting"), consumer.logs()
    _, token = ApiToken.issue(user, "load")
    consumers = consumer.alive()
    consumer_pool = settings.DATABASE_POOL_SIZE or dbpool.consumer_pool_size(2)
    bound = SERVER_POOL + len(consumers) * consumer_pool
    # Each process says the size it gave its pool (a consumer that the others left no work
    # to may still be starting: it says so once it is up).
    assert f"database pool of {SERVER_POOL}" in pooled_studio.log.read_text()
    for n in range(1, len(consumers) + 1):
        log = consumer.log_dir / f"consumer-{n}.log"
        said = f"database pool of {consumer_pool}"
        assert wait_until(lambda log=log, said=said: said in log.read_text()), log.read_text()

    start = threading.Barrier(PUSHES)
    began = time.monotonic()
    with ConnectionSampler(every=0.02) as sampler, ThreadPoolExecutor(PUSHES) as clients:
        answers = list(
            clients.map(lambda i: push(pooled_studio.port, token, flow.pk, i, start), range(PUSHES))
        )

    took = time.monotonic() - began
    codes = Counter(status for status, _ in answers)
    per_process = {
        name: count for name, count in sampler.max_by_name.items() if name not in sampler.exclude
    }
    print(
        f"\n{PUSHES} simultaneous pushes to one daphne (pool {SERVER_POOL}) beside "
        f"{len(consumers)} consumers (pool {consumer_pool} each): codes {dict(codes)} in "
        f"{took:.1f} s; "
        f"most connections at once {sampler.max_total} (bound {bound}; per process "
        f"{per_process}; {sampler.samples} samples)"
    )
    assert codes == {200: 1, 409: PUSHES - 1}, [body for status, body in answers if status >= 500]
    assert all("waiting" in body["detail"] for status, body in answers if status == 409)
    # The server's connections were seen (each process names its own: see the settings).
    assert any(re.match(r"flowstudio studio \d+$", name) for name in per_process), per_process
    assert sampler.max_total <= bound
    for name, count in per_process.items():
        if re.match(r"flowstudio studio \d+$", name):
            assert count <= SERVER_POOL, name
        elif re.match(r"flowstudio run_engine \d+$", name):
            assert count <= consumer_pool, name

    # The winner's input is the one recorded, and its step ran once with it.
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "complete"), consumer.logs()
    pushed = FlowEvent.objects.get(flow=flow, kind="input.pushed")
    assert Flow.objects.get(pk=flow.pk).results == [{"got": pushed.data["input"]}]


@pytest.fixture
def short_pool_timeout():
    """This process's pool gives up after a fraction of a second while the test holds
    every one of its connections."""
    pool = connection.pool
    saved = pool.timeout
    pool.timeout = 0.5
    try:
        yield pool
    finally:
        pool.timeout = saved


def in_thread(call: Any) -> Any:
    """`call()` in a thread of its own (with a database connection of its own, given back
    afterwards: Django's test client, unlike a server, leaves it open)."""

    def run() -> Any:
        try:
            return call()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(run).result()


@pytest.mark.django_db(transaction=True)
def test_no_free_connection_is_a_503_with_retry_after(short_pool_timeout, user, client):
    from psycopg_pool import PoolTimeout

    from tests.conftest import bearer

    api_client = bearer(user)
    client.force_login(user)
    held = []
    try:
        while True:  # every connection of the pool, until it has none left to give
            held.append(short_pool_timeout.getconn(timeout=0.5))
    except PoolTimeout:
        pass
    try:
        rest = in_thread(lambda: api_client.get("/api/flows"))
        page = in_thread(lambda: client.get("/"))
    finally:
        for conn in held:
            short_pool_timeout.putconn(conn)
    print(
        f"\nwith all {len(held)} free connections taken: API {rest.status_code}, page "
        f"{page.status_code}: {rest.json()['detail']!r}"
    )
    assert rest.status_code == 503
    assert rest["Retry-After"] == "1"
    assert "no database connection became free within 0.5 s" in rest.json()["detail"]
    assert page.status_code == 503
    assert page["Retry-After"] == "1"
    assert "no database connection became free" in page.content.decode()
    # With the connections back, the same calls are answered.
    assert in_thread(lambda: api_client.get("/api/flows")).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_threads_give_their_connection_back_to_the_pool(routine, user, monkeypatch):
    """A thread that keeps running after its work (housekeeping, a Huey worker, the
    websocket consumer's database thread, a server thread) holds no pooled connection
    between rounds."""
    from channels.db import database_sync_to_async
    from huey.contrib.djhuey import HUEY

    from engine.housekeeping import Housekeeper
    from engine.huey_tasks import run_flow_task

    flow = api.start_flow(routine("t_wait"), user)
    before = checked_out()

    # The consumer's housekeeping thread: lease renewal, sweeps and re-checks, then a pause.
    monkeypatch.setitem(settings.FLOWSTUDIO, "SWEEP_SECONDS", 0.01)
    monkeypatch.setitem(settings.FLOWSTUDIO, "RECHECK_SECONDS", 0.01)
    keeper = Housekeeper()
    rounds = []
    real_renew = lease.renew
    monkeypatch.setattr(lease, "renew", lambda: rounds.append(1) or real_renew())
    keeper.start()
    assert wait_until(lambda: len(rounds) >= 3)
    keeper.stop()
    keeper.join(10)
    assert checked_out() == before, "the housekeeping thread kept its connection"

    # A Huey task (db_task) executed by a consumer's worker thread.
    monkeypatch.setattr(HUEY, "immediate", False)
    task = run_flow_task.s(flow.pk)
    worker = threading.Thread(target=HUEY.execute, args=(task,))
    worker.start()
    worker.join(30)
    assert checked_out() == before, "a Huey worker kept its connection after a task"

    # Channels' database thread (database_sync_to_async), which outlives the call.
    count = database_sync_to_async(lambda: Flow.objects.count())
    assert in_thread(lambda: asyncio.run(count())) >= 1
    assert checked_out() == before, "database_sync_to_async kept its connection"
