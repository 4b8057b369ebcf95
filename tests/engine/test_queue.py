"""The SQLite-backed queue's doorbell (engine/queue.py): an enqueue wakes an idle consumer in
another process at once, and a missed ring loses nothing (the workers still poll)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from huey.contrib.djhuey import HUEY

from engine import api
from engine.models import Flow
from engine.queue import Doorbell, EngineRedisHuey, QuickSqliteHuey, QuickSqliteStorage
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


def test_a_ring_wakes_one_idle_worker_for_each_enqueue(tmp_path):
    """One enqueue, one task: a ring wakes one of the process's idle workers, not all of them
    (the others would only look at the queue while the first takes the task)."""
    bell = Doorbell(str(tmp_path / "bell"))
    assert bell.listen()
    seen = bell.rings()
    woken: list[int] = []
    waiters = [
        threading.Thread(target=lambda: woken.append(bell.wait(seen, timeout=60))) for _ in range(2)
    ]
    for waiter in waiters:
        waiter.start()
    # The threads waiting on the bell's condition (threading.Condition's own list).
    waiting = bell._rung._waiters  # type: ignore[attr-defined]
    assert wait_until(lambda: len(waiting) == 2, timeout=30)
    bell.ring()
    # notify() takes the waiters it wakes off the condition at once: one is left waiting.
    assert len(waiting) == 1
    bell.ring()
    for waiter in waiters:
        waiter.join(30)
    assert len(woken) == 2 and all(rings > seen for rings in woken)
    bell.close()


def test_rings_from_another_process_wake_a_worker_each(tmp_path):
    directory = str(tmp_path / "bell")
    listener, ringer = Doorbell(directory), Doorbell(directory)
    assert listener.listen()
    seen = listener.rings()
    woken: list[int] = []
    waiters = [
        threading.Thread(target=lambda: woken.append(listener.wait(seen, timeout=60)))
        for _ in range(2)
    ]
    for waiter in waiters:
        waiter.start()
    waiting = listener._rung._waiters  # type: ignore[attr-defined]
    assert wait_until(lambda: len(waiting) == 2, timeout=30)
    ringer.ring()
    ringer.ring()  # heard together or one by one: two rings, two workers
    for waiter in waiters:
        waiter.join(30)
    assert len(woken) == 2 and listener.rings() == seen + 2
    listener.close()


def test_the_queue_takes_and_gives_a_task_in_one_statement_each(tmp_path):
    """An enqueue is one INSERT and a worker takes a task with one DELETE … RETURNING (each
    its own transaction), in Huey's order: priority first, then first in first out."""
    storage = QuickSqliteStorage("q", str(tmp_path / "queue.sqlite3"), doorbell=False)
    statements: list[str] = []
    storage.conn.set_trace_callback(statements.append)
    storage.enqueue(b"first")
    assert [s.split()[0].lower() for s in statements] == ["insert"]
    storage.enqueue(b"second")
    storage.enqueue(b"urgent", priority=5)
    statements.clear()
    assert storage.take() == b"urgent"
    assert [s.split()[0].lower() for s in statements] == ["delete"]
    assert [storage.take(), storage.take(), storage.take()] == [b"first", b"second", None]
    statements.clear()
    assert storage.take(look_first=True) is None  # a poll of an empty queue: a read alone
    assert [s.split()[0].lower() for s in statements] == ["select"]
    storage.enqueue(b"polled")
    assert storage.take(look_first=True) == b"polled"
    assert storage.queue_size() == 0


def test_a_graceful_stop_wakes_the_idle_workers_at_once(tmp_path, monkeypatch):
    """Stopping the consumer (Ctrl-C, the end of `manage.py studio`) does not wait for its idle
    workers' wait for work to run out: here an hour, so a stop that waited would never end
    within the test."""
    from engine import queue
    from engine.huey_tasks import EngineConsumer

    monkeypatch.setattr(queue, "IDLE_SLICE_SECONDS", 3600)
    huey = queue.QuickSqliteHuey("stop", filename=str(tmp_path / "queue.db"), poll_seconds=3600)
    consumer = EngineConsumer(huey, workers=2, worker_type="thread")
    storage = huey.storage
    assert isinstance(storage, QuickSqliteStorage) and storage.doorbell is not None
    consumer.start()
    waiting = storage.doorbell._rung._waiters  # type: ignore[attr-defined]
    try:
        assert wait_until(lambda: len(waiting) == 2, timeout=30)  # both idle, for an hour
        stopper = threading.Thread(target=consumer.stop, kwargs={"graceful": True})
        stopper.start()
        stopper.join(30)
        assert not stopper.is_alive()
        assert not any(worker.is_alive() for _, worker in consumer.worker_threads)
    finally:
        consumer.stop_flag.set()
        storage.doorbell.wake_all()
        storage.doorbell.close()


def test_a_consumer_leaves_what_the_process_holds_at_its_start_out_of_garbage_collection():
    """`create_consumer` (`run_engine`, `manage.py studio`) freezes the objects the process
    holds by then (modules, classes, registries), which every collector round walked again."""
    import gc

    from engine.huey_tasks import create_consumer

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        consumer = create_consumer(workers=1)
        assert gc.get_freeze_count() > 10_000
        assert consumer.workers == 1
    finally:
        gc.unfreeze()


def _revocations_seen(huey) -> tuple[bool, bool]:
    """(the engine's task revoked?, an application's task revoked?) as `huey` answers, after
    both were revoked in its store (the engine's by its id: revoking it by its class is
    refused)."""
    from engine.huey_tasks import run_flow_task

    @huey.task()
    def application_task() -> None:
        pass

    engine_task = run_flow_task.task_class((1,), {})
    huey.revoke_by_id(engine_task.id)
    huey.revoke_all(application_task.task_class)
    return huey.is_revoked(engine_task, peek=False), huey.is_revoked(application_task.s())


def test_the_engines_tasks_run_without_a_revocation_lookup(tmp_path):
    """Huey reads its store for each task it runs, to see if it was revoked. The engine never
    revokes its own (a flow is stopped by its state): no read for them, though a revocation
    is stored; an application's task on the same queue is still looked up, and revoked. And
    revoking the engine's tasks, a no-op, is refused with what to do instead."""
    from engine.huey_tasks import run_flow_task

    huey = QuickSqliteHuey("q", filename=str(tmp_path / "queue.sqlite3"), doorbell=False)
    statements: list[str] = []
    huey.storage.conn.set_trace_callback(statements.append)
    engine_task = run_flow_task.task_class((1,), {})
    huey.revoke_by_id(engine_task.id)
    statements.clear()
    assert huey.is_revoked(engine_task, peek=False) is False
    assert statements == []  # not even a look
    assert _revocations_seen(huey) == (False, True)
    for refused in (
        lambda: huey.revoke(engine_task),
        lambda: huey.revoke_all(run_flow_task.task_class),
        lambda: huey.revoke_all(run_flow_task),
    ):
        with pytest.raises(ValueError, match="kill the flow"):
            refused()
    with pytest.raises(ValueError, match="not revoked"):
        HUEY.revoke_all(run_flow_task.task_class)  # (the studio's own queue)


def test_the_redis_queue_skips_the_lookup_for_the_engines_tasks_alone():
    """The same on Redis-backed Huey (scaled out), whose lookup is a round trip per task."""
    import redis

    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required under CI: {error}")
        pytest.skip(f"Redis is not running at {url}: {error}")
    name = f"flowstudio-test-revoke-{os.getpid()}"
    huey = EngineRedisHuey(name, url=url)
    try:
        assert _revocations_seen(huey) == (False, True)
    finally:
        huey.storage.flush_all()


@pytest.mark.bothmodes
def test_the_studios_queue_is_one_that_skips_the_lookup():
    from engine.queue import EngineTasksNotRevoked

    assert isinstance(HUEY, EngineTasksNotRevoked)
    assert type(HUEY).__name__ == (
        "EngineRedisHuey" if os.environ.get("REDIS_URL") else "QuickSqliteHuey"
    )
