"""The embedded database's write-ahead log is checkpointed every 10,000 pages, not SQLite's
default 1,000 (studio/settings.py: `SQLITE_CHECKPOINT_PAGES`): commits past 1,000 pages do
not copy the log into the database file."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection

pytestmark = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the write-ahead log is SQLite's (embedded mode)"
)


@pytest.mark.django_db(transaction=True)
def test_commits_past_a_thousand_pages_leave_them_in_the_log():
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        assert cursor.fetchone()[0] == settings.SQLITE_CHECKPOINT_PAGES == 10_000
        cursor.execute("PRAGMA journal_size_limit")
        assert cursor.fetchone()[0] == 64 * 1024 * 1024
        cursor.execute("CREATE TABLE wal_probe (id INTEGER PRIMARY KEY, body BLOB)")
    try:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # an empty log to start from
            assert cursor.fetchone()[0] == 0  # (not busy: it did empty it)
            # 1,500 commits (autocommit: each statement its own), each of a row of 3 KB,
            # its own page: more than 1,500 pages written to the log
            for _ in range(1500):
                cursor.execute("INSERT INTO wal_probe (body) VALUES (zeroblob(3000))")
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            busy, in_log, copied = cursor.fetchone()
        # With SQLite's default a commit would have checkpointed at 1,000 pages, and the
        # next ones begun the log again: it would hold a few hundred.
        assert busy == 0 and in_log > 1500 and copied == in_log
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE wal_probe")
