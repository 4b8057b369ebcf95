"""Django's SQLite backend, with a pool of open connections per database file.

Daphne runs each HTTP request in a thread of its own, and Django keeps connections per
thread, so every request opened the database afresh: connecting, registering Django's SQL
functions, the pragmas, then SQLite reading the schema and preparing each statement again on
a connection whose caches are empty. That cost 3-4 ms a request (a page or an API call of
9-12 ms), and as much each time a live page re-rendered. Here a closed connection (Django
closes it at the end of each request, task and housekeeping round: `CONN_MAX_AGE` 0) goes
back to a pool of its file, outside any transaction, and the next connection of the process
to that file takes it.

A connection is handed on only when it is idle: never inside a transaction (one closed there
is closed for good), never across a fork, never to a file that was replaced meanwhile (a
test database created again), never for an in-memory database. SQLite connections may move
between threads (Django opens them with `check_same_thread=False`); the pool hands each to
one thread at a time.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from django.db.backends.sqlite3 import base

# Idle connections kept per database file; more are closed.
IDLE = 16


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.idle: dict[tuple[str, str], list[tuple[Any, int]]] = {}

    @staticmethod
    def _inode(path: str) -> int | None:
        try:
            return os.stat(path).st_ino
        except OSError:
            return None

    def take(self, key: tuple[str, str]) -> Any:
        """An idle connection to the file as it is now, or None."""
        inode = self._inode(key[0])
        with self.lock:
            if self.pid != os.getpid():  # forked: the parent's connections are not ours
                self.idle, self.pid = {}, os.getpid()
            kept = self.idle.get(key)
            while kept:
                connection, opened_on = kept.pop()
                if opened_on == inode:
                    return connection
                connection.close()  # the file was replaced (or removed) since
        return None

    def give(self, key: tuple[str, str], connection: Any) -> bool:
        """Keep `connection` for the next taker; False if the pool is full."""
        inode = self._inode(key[0])
        if inode is None:
            return False
        with self.lock:
            if self.pid != os.getpid():
                return False
            kept = self.idle.setdefault(key, [])
            if len(kept) >= IDLE:
                return False
            kept.append((connection, inode))
            return True

    def clear(self) -> None:
        with self.lock:
            kept, self.idle = self.idle, {}
        for connections in kept.values():
            for connection, _ in connections:
                connection.close()


pool = _Pool()


class DatabaseWrapper(base.DatabaseWrapper):
    def _pool_key(self, params: dict[str, Any] | None = None) -> tuple[str, str] | None:
        if self.is_in_memory_db():
            return None
        params = self.get_connection_params() if params is None else params
        database = str(params.get("database", ""))
        if not database or database.startswith("file:"):
            return None  # (a URI: may name a memory database or shared cache)
        settings = repr(sorted((k, repr(v)) for k, v in params.items() if k != "database"))
        return os.path.abspath(database), settings + repr(getattr(self, "init_commands", ()))

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        key = self._pool_key(conn_params)
        if key is not None:
            connection = pool.take(key)
            if connection is not None:
                return connection
        return super().get_new_connection(conn_params)

    def _close(self) -> None:
        connection = self.connection
        key = None if connection is None else self._pool_key()
        if (
            key is not None
            and not self.in_atomic_block
            and not connection.in_transaction
            and pool.give(key, connection)
        ):
            return
        super()._close()  # type: ignore[misc]  # (not in django-stubs)
