"""The SQLite-backed queue's doorbell (engine/queue.py): an enqueue wakes an idle consumer in
another process at once, and a missed ring loses nothing (the workers still poll)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from huey.contrib.djhuey import HUEY

from engine import api
from engine.models import Flow
from engine.queue import Doorbell, QuickSqliteStorage
from tests.conftest import Consumer, database_url, wait_until

sqlite_queue = pytest.mark.skipif(
    bool(os.environ.get("REDIS_URL")), reason="the doorbell is the SQLite-backed queue's"
)


@pytest.fixture
def start_consumer(transactional_db, tmp_path) -> Iterator[Callable[..., Consumer]]:
    """Start a consumer process whose idle workers look at the queue only every
    `poll_seconds` unless the doorbell rings; nothing else queues the flow again meanwhile
    (no re-queue of a flow still waiting in the queue for 10 minutes)."""
    HUEY.immediate = False
    HUEY.storage.flush_all()
    started: list[Consumer] = []

    def start(poll_seconds: float) -> Consumer:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="tests.settings",
            DATABASE_URL=database_url(),
            HUEY_IMMEDIATE="0",
            HUEY_POLL_SECONDS=str(poll_seconds),
            FLOW_QUEUE_GRACE_SECONDS="600",
            PYTHONUNBUFFERED="1",
            TEST_PERFORM_LOG=str(tmp_path / "performed.log"),
        )
        consumer = Consumer(env, tmp_path)
        consumer.start_one()
        started.append(consumer)
        return consumer

    try:
        yield start
    finally:
        for consumer in started:
            consumer.stop()
        HUEY.storage.flush_all()
        HUEY.immediate = True


def listening(consumer: Consumer) -> bool:
    """The consumer's workers have looked at the queue once and wait for the doorbell."""
    storage = HUEY.storage
    assert isinstance(storage, QuickSqliteStorage) and storage.doorbell is not None
    directory = Path(storage.doorbell.directory)
    pids = {str(p.pid) for p in consumer.alive()}
    return directory.is_dir() and any(p.name.split("-")[0] in pids for p in directory.iterdir())


@sqlite_queue
@pytest.mark.consumer
def test_the_doorbell_wakes_an_idle_consumer_that_would_not_look_for_an_hour(start_consumer, user):
    consumer = start_consumer(poll_seconds=3600)
    assert wait_until(lambda: listening(consumer), timeout=60), consumer.logs()[-3000:]
    # Both workers looked at the empty queue at start-up; the next look is an hour away.
    wait_until(lambda: False, timeout=1.5)
    flow = api.start_flow(api.create_routine("rung", ["t_echo"] * 3, owner=user), user)
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "complete", timeout=60), (
        consumer.logs()[-3000:]
    )


@sqlite_queue
@pytest.mark.consumer
def test_work_enqueued_without_a_ring_is_found_by_polling(start_consumer, user, monkeypatch):
    consumer = start_consumer(poll_seconds=0.5)
    assert wait_until(lambda: listening(consumer), timeout=60), consumer.logs()[-3000:]
    wait_until(lambda: False, timeout=1.5)
    monkeypatch.setattr(Doorbell, "ring", lambda self: None)  # every ring of this process missed
    routine = api.create_routine("missed", ["t_echo"] * 3, owner=user)
    ids = [api.start_flow(routine, user).pk for _ in range(5)]
    assert wait_until(
        lambda: Flow.objects.filter(pk__in=ids, state="complete").count() == 5, timeout=60
    ), consumer.logs()[-3000:]


def test_a_ring_reaches_a_listener_and_clears_a_dead_ones_socket(tmp_path):
    directory = tmp_path / "bell"
    listener, ringer = Doorbell(str(directory)), Doorbell(str(directory))
    assert listener.listen()
    # A consumer killed without removing its socket: nobody reads it any more.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "1-dead"))
    dead.close()
    seen = listener.rings()
    ringer.ring()
    assert listener.wait(seen, timeout=30) > seen
    assert not (directory / "1-dead").exists()
    listener.close()
    assert list(directory.iterdir()) == []
    ringer.ring()  # nobody listens: nothing fails
