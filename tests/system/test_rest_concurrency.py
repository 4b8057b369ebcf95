"""500 concurrent input pushes over real HTTP to one waiting flow: exactly one is taken,
every other one is told 409 — no lost update, no double step, no server error. On PostgreSQL
the server's threads stay within this process's connection pool."""

from __future__ import annotations

import http.client
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from urllib.parse import urlsplit

import pytest
from django.core.servers.basehttp import ThreadedWSGIServer
from django.db import connection
from pytest_django.live_server_helper import LiveServer

from engine import api
from engine.models import FlowEvent
from studio.models import ApiToken
from tests.conftest import forget_rate_counts
from tests.db_support import ConnectionSampler, own_label

PUSHES = 500
THREADS = 64


@pytest.fixture
def wide_live_server(transactional_db, monkeypatch):
    """pytest-django's threaded live server, with a listen backlog that holds every client
    thread: Django's default of 10 pending connections made the kernel reset some of the
    64 simultaneous connects before the server saw them."""
    monkeypatch.setattr(ThreadedWSGIServer, "request_queue_size", 1024)
    server = LiveServer("localhost")
    try:
        yield server
    finally:
        server.stop()


def push(base: str, token: str, flow_id: int, value: int) -> tuple[int, dict]:
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        body = json.dumps({"data": {"answer": value}})
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        connection.request("POST", f"/api/flows/{flow_id}/input", body, headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_500_concurrent_pushes_one_wins(wide_live_server, routine, user, settings):
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "API_RATE": "off"}
    forget_rate_counts()
    flow = api.start_flow(routine("t_wait"), user)
    assert flow.state == "waiting"
    _, token = ApiToken.issue(user, "load")

    # On PostgreSQL the server's threads (in this process) share its bounded pool.
    sampler = ConnectionSampler(exclude=()) if connection.vendor == "postgresql" else None
    with sampler or nullcontext(), ThreadPoolExecutor(THREADS) as pool:
        answers = list(
            pool.map(lambda i: push(wide_live_server.url, token, flow.pk, i), range(PUSHES))
        )

    codes = Counter(status for status, _ in answers)
    print(f"\n{PUSHES} concurrent pushes over HTTP ({THREADS} client threads): {dict(codes)}")
    if sampler is not None:
        bound = connection.pool.max_size
        most = sampler.max_by_name[own_label()]
        print(f"this process's connections: at most {most} at once (its pool: {bound})")
        assert 0 < most <= bound
    assert codes == {200: 1, 409: PUSHES - 1}
    winner = next(body for status, body in answers if status == 200)
    assert all("waiting" in body["detail"] for status, body in answers if status == 409)

    flow.refresh_from_db()
    assert flow.state == "complete"
    pushed = FlowEvent.objects.filter(flow=flow, kind="input.pushed")
    assert pushed.count() == 1
    # The input stored is the winner's, and the step ran once with it.
    assert flow.results == [{"got": pushed.get().data["input"]}]
    assert winner["id"] == flow.pk
    completed = FlowEvent.objects.filter(flow=flow, kind="step.completed").count()
    assert completed == 1
