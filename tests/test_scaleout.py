"""The engine's integration and crash tests again, scaled out: PostgreSQL, Redis-backed Huey
and 3 consumer processes — the same code, chosen by DATABASE_URL and REDIS_URL.

It runs the `consumer` and `bothmodes` tests, and the modules named in `runs`, in further
pytest processes with that environment. Where PostgreSQL or Redis is not running it skips with
the reason; under CI=true it must run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/flowstudio")
REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unreachable() -> str | None:
    for name, host, port in (("PostgreSQL", "127.0.0.1", 5432), ("Redis", "127.0.0.1", 6379)):
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError as exc:
            return f"{name} is not reachable at {host}:{port} ({exc})"
    return None


RUNS = [
    # the engine's integration, crash and live tests (not the browser checks of what pages
    # show, which no database or queue changes: escaping, the console, the history control)
    [
        "-m",
        "consumer or bothmodes",
        "--ignore=tests/browser/test_xss.py",
        "--ignore=tests/browser/test_console_clean.py",
        "--ignore=tests/browser/test_ltm_history_browser.py",
    ],
    # 500 concurrent input pushes over HTTP, in a process of its own: its server threads
    # share this process's PostgreSQL connection pool
    ["tests/system/test_rest_concurrency.py"],
    # every process within its connection pool: 200 simultaneous pushes to a daphne
    # beside 3 consumers, pg_stat_activity sampled meanwhile; a full pool is a 503
    ["tests/engine/test_dbpool.py"],
]


class ScaleOutPass:
    """The scale-out runs, one after the other (they share one test database name), in a
    thread of this session: started as soon as the tests are collected, so that they run
    beside the embedded tests instead of after them (both mostly wait on processes)."""

    def __init__(self) -> None:
        self.results: list[tuple[list[str], subprocess.CompletedProcess[str]]] = []
        self.thread: threading.Thread | None = None
        self.process: subprocess.Popen[str] | None = None
        self.stopping = False

    def start(self) -> None:
        if self.thread is None and unreachable() is None:
            self.thread = threading.Thread(target=self._run, name="scale-out pass", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"FLOWSTUDIO_VAR_DIR", "HUEY_NAME", "DATABASE_URL", "REDIS_URL"}
        }
        env.update(
            DATABASE_URL=f"{PG}_{os.getpid()}",  # pytest-django creates and drops test_<name>
            REDIS_URL=REDIS,
            TEST_CONSUMERS="3",
        )
        for args in RUNS:
            if self.stopping:
                return
            command = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider", "-s"]
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # so that stopping it stops its consumers too
            )
            try:
                out, err = self.process.communicate(timeout=1200)  # a hang must fail the suite
            except subprocess.TimeoutExpired:
                self._kill()
                out, err = self.process.communicate()
                err += "\n(timed out after 1200 s)"
            self.results.append(
                (args, subprocess.CompletedProcess(command, self.process.returncode, out, err))
            )

    def stop(self) -> None:
        """The session ends early: stop the run in progress."""
        self.stopping = True
        self._kill()

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)

    def wait(self) -> list[tuple[list[str], subprocess.CompletedProcess[str]]]:
        self.start()
        assert self.thread is not None
        self.thread.join()
        return self.results


scaleout_pass = ScaleOutPass()


def why(output: str) -> str:
    """The lines that say why a run failed (its assertions and summary), so that the reason
    is in this test's own failure line, not only in its captured output."""
    lines = [
        line
        for line in output.splitlines()
        if line.startswith(("E ", "FAILED", "ERROR")) and line.strip() != "E"
    ]
    return "\n".join(lines[:40])[:3000]


@pytest.mark.scaleout
def test_engine_suite_on_postgresql_redis_and_three_consumers():
    reason = unreachable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"scale-out tests are required under CI: {reason}")
        pytest.skip(f"scale-out tests need PostgreSQL and Redis: {reason}")
    results = scaleout_pass.wait()
    assert [args for args, _ in results] == RUNS
    for args, run in results:
        print(run.stdout[-6000:], run.stderr[-3000:])
        assert run.returncode == 0, (
            f"the scale-out run {args} failed (its output is above): " + why(run.stdout)
        )
        assert " passed" in run.stdout and " failed" not in run.stdout
