"""Shared fixtures: users, routines from the script catalog, and a real Huey consumer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.management.color import no_style
from django.db import connection, connections
from django.test import TransactionTestCase
from huey.contrib.djhuey import HUEY

import tests.catalog  # noqa: F401  (registers the catalog's scripts in this process)
from engine import api

ROOT = Path(__file__).resolve().parent.parent

# What the migrations wrote and no test changes: the content types and the permissions.
KEPT_BY_FLUSH = frozenset({"django_content_type", "auth_permission"})


def _flush_keeping_what_migrations_wrote(self: TransactionTestCase) -> None:
    """A transactional test's teardown: every table emptied as `manage.py flush` empties
    them, but for the content types and permissions, which Django's teardown emptied and
    then made again through the `post_migrate` signal (about 40 ms a test, most of its
    teardown; some thousand tests here). Kept, they are what that signal would make, with
    the same ids in every test."""
    for alias in self._databases_names(include_mirrors=False):
        db = connections[alias]
        tables = db.introspection.django_table_names(only_existing=True, include_views=False)
        emptied = [table for table in tables if table not in KEPT_BY_FLUSH]
        db.ops.execute_sql_flush(db.ops.sql_flush(no_style(), emptied, reset_sequences=False))


TransactionTestCase._fixture_teardown = _flush_keeping_what_migrations_wrote  # type: ignore[method-assign]


@pytest.fixture
def make_user(django_user_model):
    def make(username: str = "alice", **extra):
        return django_user_model.objects.create_user(
            username=username, password="pw-" + username, **extra
        )

    return make


@pytest.fixture
def user(make_user):
    return make_user("alice")


@pytest.fixture
def other_user(make_user):
    return make_user("bob")


@pytest.fixture
def routine(user) -> Callable[..., object]:
    """`routine("t_echo", "t_wait")` creates a routine of those catalog scripts."""

    def make(*scripts, name: str = "test routine"):
        return api.create_routine(name, list(scripts), owner=user)

    return make


@pytest.fixture
def queued(routine, user) -> Callable[..., object]:
    """`queued("t_echo", "t_echo")`: a flow of those catalog scripts created and queued
    (PENDING), not run: a worker's `run_flow` runs it."""

    def make(*scripts):
        immediate, HUEY.immediate = HUEY.immediate, False
        try:
            return api.start_flow(routine(*scripts), user)
        finally:
            HUEY.immediate = immediate
            HUEY.storage.flush_all()

    return make


def database_url() -> str:
    """The URL of the database this test session uses (its test database), for processes
    started by the tests."""
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return "sqlite:///" + str(config["NAME"])
    user = config.get("USER") or ""
    password = f":{config['PASSWORD']}" if config.get("PASSWORD") else ""
    host = config.get("HOST") or "127.0.0.1"
    port = f":{config['PORT']}" if config.get("PORT") else ""
    return f"postgres://{user}{password}@{host}{port}/{config['NAME']}"


class Consumer:
    """Real `manage.py run_engine` processes on the test database (TEST_CONSUMERS of them,
    default 1; the scale-out suite runs 3)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.count = int(os.environ.get("TEST_CONSUMERS", "1"))
        self.starts = 0

    def start_one(self, workers: int = 2) -> subprocess.Popen[bytes]:
        self.starts += 1
        log = open(self.log_dir / f"consumer-{self.starts}.log", "wb")  # noqa: SIM115
        # (--skip-checks: the system checks run once, in tests/system/test_deploy.py; each
        # start would spend 0.2-0.5 s of CPU on them, and the suite starts a few hundred)
        command = ["manage.py", "run_engine", "-w", str(workers), "--no-live", "--skip-checks"]
        process = subprocess.Popen(
            [sys.executable, *command],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def start(self, workers: int = 2) -> None:
        for _ in range(self.count):
            self.start_one(workers)

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def kill9(self, process: subprocess.Popen[bytes] | None = None) -> None:
        """SIGKILL one process, or all of them."""
        for victim in [process] if process else self.alive():
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)

    def stop(self, grace: float = 15) -> None:
        """Stop them as an operator would (SIGINT: each finishes what its workers hold),
        killing any still up after `grace` seconds."""
        for process in self.alive():
            process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def performed(self) -> Counter[tuple[int, int, str]]:
        """How many times each (flow, position, script) was performed, by any process (see
        `tests.catalog.note_performed`)."""
        log = Path(self.env["TEST_PERFORM_LOG"])
        lines = log.read_text().splitlines() if log.exists() else []
        rows = (line.split() for line in lines)
        return Counter((int(flow), int(position), name) for flow, position, name in rows)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


@pytest.fixture
def engine_queue(transactional_db, tmp_path) -> Iterator[Consumer]:
    """Switch this process's Huey to its real queue, with consumer processes ready to run on
    it (none started: see `consumer`). Flows started by the test are enqueued there."""
    HUEY.immediate = False
    HUEY.storage.flush_all()
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=database_url(),
        HUEY_IMMEDIATE="0",
        FLOW_LEASE_SECONDS=env.get("TEST_FLOW_LEASE_SECONDS", "3"),
        FLOW_SWEEP_SECONDS="0.5",
        FLOW_QUEUE_GRACE_SECONDS="10",
        FLOW_RECHECK_SECONDS="0.5",
        # the live check (a lost message found, notification counts every 5th): 0.5 s, not 2
        FLOWSTUDIO_LIVE_CHECK_SECONDS="0.5",
        PYTHONUNBUFFERED="1",
        TEST_PERFORM_LOG=str(tmp_path / "performed.log"),
    )
    runner = Consumer(env, tmp_path)
    try:
        yield runner
    finally:
        # (A test may leave a worker in a state that runs until told to stop: what the
        # test checked is over, so its consumers get a short grace.)
        runner.stop(grace=3)
        HUEY.storage.flush_all()
        HUEY.immediate = True


@pytest.fixture
def consumer(engine_queue) -> Consumer:
    """Real consumer processes on this process's real queue (`engine_queue`): flows started
    by the test are performed by them."""
    engine_queue.start()
    return engine_queue


@pytest.fixture
def studio(engine_queue, tmp_path):
    """The studio's daphne server (`manage.py studio`) on the test database. In embedded mode
    the engine's consumer runs inside it, and no other (the `consumer` fixture's processes,
    if a test asked for them too, are stopped first); scaled out (REDIS_URL), consumer
    processes run beside it."""
    from tests.live_support import Studio, scaled_out

    if scaled_out():
        if not engine_queue.alive():
            engine_queue.start()
    else:
        engine_queue.stop()
    server = Studio(engine_queue.env, tmp_path / "studio.log", with_consumer=not scaled_out())
    try:
        yield server
    finally:
        server.stop()


def forget_rate_counts() -> None:
    """Drop the API's rate counts: they live in the cache keyed by user id, and ids repeat after
    each flush. Only those keys: scaled out the cache is Redis, whose clear() would flush the
    whole Redis database."""
    from django.core.cache import cache

    from studio.api.throttling import rate_key

    cache.delete_many([rate_key(pk) for pk in range(1, 1000)])


@pytest.fixture
def fresh_rate_counts() -> Iterator[None]:
    """API tests start and end with no rate counts."""
    forget_rate_counts()
    yield
    forget_rate_counts()


def bearer(user):
    """A test client that authenticates with a new API token of `user`."""
    from django.test import Client

    from studio.models import ApiToken

    return Client(headers={"Authorization": f"Bearer {ApiToken.issue(user, 't')[1]}"})


def wait_until(predicate: Callable[[], bool], timeout: float = 60, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def pytest_collection_finish(session) -> None:
    """The scale-out pass, when collected, starts at once and runs beside the other tests."""
    if any(item.nodeid.startswith("tests/test_scaleout.py") for item in session.items):
        from tests.test_scaleout import scaleout_pass

        scaleout_pass.start()


def pytest_sessionfinish(session, exitstatus) -> None:
    """Stop a scale-out pass still running (the session ended early), and remove this run's
    own runtime directory (tests/settings.py made it in the temp dir)."""
    import sys

    scaleout = sys.modules.get("tests.test_scaleout")
    if scaleout is not None:
        scaleout.scaleout_pass.stop()
    import shutil
    import tempfile

    var_dir = os.environ.get("FLOWSTUDIO_VAR_DIR", "")
    name = Path(var_dir).name
    if name.startswith("flowstudio-test-") and Path(var_dir).parent == Path(tempfile.gettempdir()):
        shutil.rmtree(var_dir, ignore_errors=True)


def stall_report(ids, consumer: Consumer | None = None) -> str:
    """What an unfinished flow looks like, for a failing crash test's message: each unfinished
    flow's row, whether its job is still queued, lock waits (PostgreSQL) and every consumer's
    thread stacks."""
    from django.utils import timezone

    from engine.models import Flow, FlowEvent

    now = timezone.now()
    try:
        queued = {task.id for task in HUEY.pending()}
    except Exception as exc:  # noqa: BLE001  (a report must not hide the failure)
        queued = {f"<pending() failed: {exc}>"}
    lines = [f"now={now.isoformat()} queued jobs={len(queued)}"]
    rows = Flow.objects.filter(pk__in=ids).exclude(state__in=["complete", "failed", "killed"])
    for flow in rows[:20]:
        last = list(
            FlowEvent.objects.filter(flow=flow).order_by("-seq").values_list("seq", "kind")[:4]
        )
        lease = (flow.lease_until - now).total_seconds() if flow.lease_until else None
        lines.append(
            f"flow {flow.pk}: {flow.state} pos={flow.position} started={flow.started_position} "
            f"v={flow.version} lease_in={lease} job={flow.job_id or '-'} "
            f"queued={flow.job_id in queued} last_events={last}"
        )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, state, wait_event_type, wait_event, left(query, 120), "
                "now() - xact_start FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
            lines += [f"pg: {row}" for row in cursor.fetchall()]
    if consumer is not None:
        for process in consumer.alive():
            process.send_signal(signal.SIGUSR1)
        time.sleep(1)
        lines.append(consumer.logs()[-12000:])
    return "\n".join(lines)
