"""The SQLite backend's pool (engine/sqlite/base.py): a closed connection is taken again by
the next one of the process, never inside a transaction, never to a replaced file."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest
from django.db import connection, connections, transaction

from engine.sqlite import base

pytestmark = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the pool is the SQLite backend's (embedded mode)"
)


def _raw(alias: str = "default") -> Any:
    wrapper = connections[alias]
    wrapper.ensure_connection()
    return wrapper.connection


@pytest.mark.django_db(transaction=True)
def test_a_closed_connection_is_taken_again_by_the_next_thread():
    first = _raw()
    connections["default"].close()
    taken: list[Any] = []

    def request() -> None:  # as daphne runs a request: a thread of its own
        taken.append(_raw())
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM engine_flow")
        connections["default"].close()

    thread = threading.Thread(target=request)
    thread.start()
    thread.join()
    assert taken == [first]  # the same sqlite3 connection, not a new one
    assert _raw() is first  # back in the pool after that thread closed it


@pytest.mark.django_db(transaction=True)
def test_a_connection_closed_inside_a_transaction_is_closed_for_good():
    with transaction.atomic():
        inside = _raw()
        connections["default"].close()
    connections["default"].close()
    assert _raw() is not inside
    with pytest.raises(sqlite3.ProgrammingError):
        inside.execute("SELECT 1")  # closed


@pytest.mark.django_db(transaction=True)
def test_a_connection_to_a_file_replaced_since_is_not_handed_on(tmp_path):
    path = str(tmp_path / "db.sqlite3")
    key = (path, "settings")
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE t (x)")
    assert base.pool.give(key, old)
    (tmp_path / "db.sqlite3").unlink()
    sqlite3.connect(path).close()  # a new file at the same path
    assert base.pool.take(key) is None
    with pytest.raises(sqlite3.ProgrammingError):
        old.execute("SELECT 1")


def test_the_pool_keeps_no_more_than_its_limit(tmp_path):
    path = str(tmp_path / "db.sqlite3")
    sqlite3.connect(path).close()
    key = (path, "settings")
    kept = [sqlite3.connect(path) for _ in range(base.IDLE + 1)]
    given = [base.pool.give(key, each) for each in kept]
    assert given == [True] * base.IDLE + [False]
    taken = [base.pool.take(key) for _ in range(base.IDLE + 1)]
    assert taken[-1] is None and set(map(id, taken[:-1])) == set(map(id, kept[:-1]))
    for each in kept:
        each.close()
