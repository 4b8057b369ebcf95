"""The queues the engine runs on, made quick (the classes `settings.HUEY` names): the
SQLite-backed queue of embedded mode, and Redis-backed Huey scaled out.

Both skip Huey's revocation lookup for the engine's own tasks (`EngineTasksNotRevoked`).

Huey's own SQLite storage polls: an idle worker sleeps up to the consumer's `max_delay`
between looks at the queue, so a task enqueued into an idle consumer waits for the next look;
and its file runs at `synchronous=FULL`, one fsync per enqueue. This storage changes both:

- its file runs at `synchronous=NORMAL` (in WAL mode): a commit survives the crash of any
  process, but may be lost with the machine (a power cut). The engine does not rely on the
  queue for that: work whose queued task vanished is found and queued again from the
  database (`engine/orphans.py`);
- each enqueue **rings a doorbell** after its commit: every consumer process listens on a Unix
  datagram socket in a directory beside the queue file, and the enqueuing process sends a byte
  to each (and wakes its own idle workers directly, as the embedded studio's requests do). An
  idle worker waits for a ring instead of sleeping. It still looks at the queue every
  `poll_seconds` whatever rang, so a missed ring (a consumer that started meanwhile, a full
  socket buffer) delays a task, never loses it;
- a ring wakes **one** idle worker of a process (one enqueue, one task): waking them all had
  the others look at the queue at the very moment the woken one took the task, and Huey's
  storage serves a process's threads through one connection under one lock. Each statement
  gives the GIL up and takes it back, which a thread waits for while the process's other
  threads run Python (the request that enqueued, the server's loop), so the woken worker
  takes its task with one statement (`DELETE … RETURNING`, its own transaction) and an
  enqueue is one `INSERT`, instead of Huey's three to five statements.

This module imports Huey beside `engine.huey_tasks`: Huey's Django integration builds the
queue from settings while `engine.huey_tasks` is being imported, so the class it names cannot
live there.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import secrets
import socket
import tempfile
import threading
import time
from typing import Any

from huey.api import RedisHuey, SqliteHuey
from huey.storage import SqliteStorage

__all__ = [
    "ENGINE_TASKS_MODULE",
    "Doorbell",
    "EngineRedisHuey",
    "EngineTasksNotRevoked",
    "QuickSqliteHuey",
    "QuickSqliteStorage",
]

# An idle worker goes back to Huey's loop at least this often: it checks its stop flag there.
IDLE_SLICE_SECONDS = 1.0
SYNCHRONOUS = {"OFF", "NORMAL", "FULL", "EXTRA"}
# A Unix socket's path holds at most 107 bytes; a listener's name takes up to 24 of them.
_MAX_DIRECTORY = 80


def bell_directory(filename: str) -> str:
    """Where the consumers of the queue in `filename` listen: beside the file, or (if that path
    is too long for a socket) in a directory of the temporary folder named after it."""
    path = os.path.abspath(filename)
    beside = path + ".bell"
    if len(beside.encode()) <= _MAX_DIRECTORY:
        return beside
    digest = hashlib.sha256(path.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"flowstudio-bell-{os.getuid()}-{digest}")


class Doorbell:
    """Wakes the idle workers of every consumer process of one queue on this machine."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._rung = threading.Condition()
        self._rings = 0
        self._lock = threading.Lock()
        self._pid = 0  # the process whose sockets these are (none after a fork)
        self._sender: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._path = ""

    # -- the enqueuing side ----------------------------------------------------------------
    def ring(self) -> None:
        """After a commit to the queue: wake this process's idle workers, and every other
        listening process's. Never fails: a ring that cannot be sent is left to polling."""
        if self._listener is not None and self._pid == os.getpid():
            self._wake_here()
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        sender = self._socket_to_send()
        if sender is None:
            return
        for name in names:
            path = os.path.join(self.directory, name)
            if path == self._path:
                continue
            try:
                sender.sendto(b"!", path)
            except BlockingIOError:
                pass  # its buffer is full of rings it has not read yet: it is awake
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # a consumer that died without removing its socket
            except OSError:
                pass

    def _socket_to_send(self) -> socket.socket | None:
        with self._lock:
            self._forget_after_fork()
            if self._sender is None:
                try:
                    self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                except OSError:
                    return None
                self._sender.setblocking(False)
            return self._sender

    # -- the consumer's side ---------------------------------------------------------------
    def rings(self) -> int:
        """How many rings this process has heard so far."""
        with self._rung:
            return self._rings

    def wait(self, seen: int, timeout: float) -> int:
        """Wait until a ring after the `seen`-th, or `timeout` seconds; the rings heard."""
        with self._rung:
            self._rung.wait_for(lambda: self._rings != seen, max(0.0, timeout))
            return self._rings

    def listen(self) -> bool:
        """Listen for rings in this process (once; a consumer's worker calls this when it first
        looks at the queue). False if it cannot: its workers then poll."""
        if self._listener is not None and self._pid == os.getpid():
            return True
        with self._lock:
            self._forget_after_fork()
            if self._listener is not None:
                return True
            try:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                if os.stat(self.directory).st_uid != os.getuid():
                    return False  # someone else's directory: do not talk to it
                path = os.path.join(self.directory, f"{os.getpid()}-{secrets.token_hex(4)}")
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                listener.bind(path)
            except OSError:
                return False
            self._listener, self._path, self._pid = listener, path, os.getpid()
            threading.Thread(
                target=self._hear, args=(listener,), name="queue-doorbell", daemon=True
            ).start()
            atexit.register(self.close)
            return True

    def close(self) -> None:
        """Stop listening and remove this process's socket."""
        with self._lock:
            listener, path = self._listener, self._path
            self._listener, self._path = None, ""
        if listener is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(path)
            listener.close()

    def _hear(self, listener: socket.socket) -> None:
        while True:
            heard = 0
            try:
                listener.recv(16)
                heard = 1
                while True:  # the rings read at once: one worker woken for each
                    listener.recv(16, socket.MSG_DONTWAIT)
                    heard += 1
            except BlockingIOError:
                pass
            except OSError:
                return  # closed
            self._wake_here(heard)

    def _wake_here(self, rings: int = 1) -> None:
        """Count `rings` and wake as many idle workers (one per enqueue: the others, woken
        too, would only look at the queue as the first takes the task, and slow it down)."""
        with self._rung:
            self._rings += rings
            self._rung.notify(rings)

    def wake_all(self) -> None:
        """Wake every idle worker of this process at once (the consumer stops: each goes back
        to Huey's loop, sees that and ends, instead of finishing its idle wait first)."""
        with self._rung:
            self._rings += 1
            self._rung.notify_all()

    def _forget_after_fork(self) -> None:
        if self._pid != os.getpid():
            self._sender = self._listener = None
            self._path = ""
            self._pid = os.getpid()


class QuickSqliteStorage(SqliteStorage):
    """Huey's SQLite storage at `synchronous=NORMAL`, whose idle workers wait for a doorbell
    (see the module's docstring). `doorbell=False` keeps Huey's polling."""

    def __init__(
        self,
        name: str = "huey",
        filename: str = "huey.db",
        synchronous: str = "NORMAL",
        doorbell: bool = True,
        poll_seconds: float = 0.5,
        **kwargs: Any,
    ) -> None:
        synchronous = (synchronous or "").upper()
        if synchronous and synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS)}")
        self._synchronous = synchronous
        self.poll_seconds = float(poll_seconds)
        self.doorbell = Doorbell(bell_directory(filename)) if doorbell else None
        # Huey's worker sleeps between empty looks unless the storage blocks in dequeue().
        self.blocking = self.doorbell is not None
        self._idle = threading.local()
        super().__init__(name, filename, **kwargs)

    def wake_idle(self) -> None:
        """Wake this process's idle workers now (see `Doorbell.wake_all`)."""
        if self.doorbell is not None:
            self.doorbell.wake_all()

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        if self._synchronous:
            conn.execute(f"pragma synchronous={self._synchronous}")
        return conn

    def enqueue(self, data: Any, priority: Any = None) -> None:
        # One statement, its own transaction (Huey's connection is in autocommit mode); Huey's
        # own enqueue wraps it in BEGIN EXCLUSIVE ... COMMIT: three statements.
        self.sql(
            "insert into task (queue, data, priority) values (?, ?, ?)",
            (self.name, self.to_blob(data), priority or 0),
        )
        if self.doorbell is not None:
            self.doorbell.ring()

    def dequeue(self) -> Any:
        bell = self.doorbell
        if bell is None or not bell.listen():
            self.blocking = False  # no doorbell here: Huey's worker polls with its backoff
            return super().dequeue()
        idle = self._idle
        now = time.monotonic()
        seen = bell.rings()  # before the look: a ring during it makes the wait below return
        before = getattr(idle, "seen", None)  # None: the first look, or one after a task
        rung = before is not None and seen != before
        if before is None or rung or now >= getattr(idle, "next_look", 0.0):
            data = self.take(look_first=not rung)
            if data is not None:
                idle.seen = None
                return data
            idle.seen, idle.next_look = seen, now + self.poll_seconds
        # Idle: wait for a ring, or until the next look is due; back in Huey's loop at least
        # every slice, where the worker sees whether the consumer stops.
        bell.wait(seen, min(idle.next_look - now, IDLE_SLICE_SECONDS))
        return None

    def take(self, look_first: bool = False) -> Any:
        """Remove the next task from the queue and return its data (None: none there), in one
        statement: its own transaction, so no two workers take the same task. `look_first`:
        read whether the queue holds any task before (a poll, which mostly finds none, then
        takes no write lock)."""
        if look_first and not self.sql(
            "select 1 from task where queue = ? limit 1", (self.name,), results=True
        ):
            return None
        rows = self.sql(
            "delete from task where id = (select id from task where queue = ? "
            "order by priority desc, id limit 1) returning data",
            (self.name,),
            results=True,
        )
        return rows[0][0] if rows else None


# Where the engine's Huey tasks are defined (each task class's `__module__`).
ENGINE_TASKS_MODULE = "engine.huey_tasks"


class EngineTasksNotRevoked:
    """Huey looks up whether each task it is about to run was revoked: a read of its store
    per task (on Redis a round trip, `HMGET`; on SQLite a query under the storage's lock),
    for every step run and every LTM execution. The engine never revokes its own tasks: a
    flow or an LTM run is stopped by its state (killed, cancelled), which each task reads
    before it does anything, and a duplicate or stale task is a no-op. So for the engine's
    tasks (`ENGINE_TASKS_MODULE`) the answer is no without a lookup; any other task (an
    application's own, on the same queue) is looked up as Huey does, and may be revoked.

    Revoking an engine task or all of them (`revoke`, `revoke_all`, a task's `.revoke()`)
    would be a silent no-op: it is refused, with what to do instead. (`revoke_by_id` names
    no task class: it is stored, and has no effect on an engine task.)"""

    def is_revoked(self, task: Any, timestamp: Any = None, peek: bool = True) -> bool:
        if _is_engine_task(task):
            return False
        revoked: bool = super().is_revoked(task, timestamp, peek)  # type: ignore[misc]
        return revoked

    def revoke(self, task: Any, revoke_until: Any = None, revoke_once: bool = False) -> None:
        _refuse_engine_task(task)
        super().revoke(task, revoke_until, revoke_once)  # type: ignore[misc]

    def revoke_all(
        self, task_class: Any, revoke_until: Any = None, revoke_once: bool = False
    ) -> None:
        _refuse_engine_task(task_class)
        super().revoke_all(task_class, revoke_until, revoke_once)  # type: ignore[misc]


def _is_engine_task(task: Any) -> bool:
    """Whether `task` (a task, a task class, or a task function's wrapper) is the engine's."""
    kind = getattr(task, "task_class", task)
    kind = kind if isinstance(kind, type) else type(kind)
    return kind.__module__ == ENGINE_TASKS_MODULE


def _refuse_engine_task(task: Any) -> None:
    if _is_engine_task(task):
        raise ValueError(
            "the engine's tasks are not revoked: a flow or an LTM run is stopped by its state "
            "(kill the flow, or the run, through engine.api or the studio)"
        )


class QuickSqliteHuey(EngineTasksNotRevoked, SqliteHuey):
    storage_class = QuickSqliteStorage


class EngineRedisHuey(EngineTasksNotRevoked, RedisHuey):
    """Redis-backed Huey (scaled out) as it comes, but for the revocation lookup."""
