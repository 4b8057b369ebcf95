"""This process's PostgreSQL connection pool: its size, and what a full pool means to a caller.

Every process draws its connections from one bounded pool (Django's psycopg pool, configured in
the settings; SQLite has none). A thread takes a connection at its first query and gives it
back at the end of its request, Huey task or housekeeping round (`CONN_MAX_AGE = 0`: Django's
`close_old_connections()` then returns it to the pool). So a process opens at most its pool's
size, however many threads it runs, and a thread that finds every connection taken waits for
one, up to `DATABASE_POOL_TIMEOUT` seconds.

The size is `DATABASE_POOL_SIZE` when set; otherwise it follows what the process runs: a web
server `DATABASE_WEB_POOL_SIZE` (requests queue for a connection; more rarely makes a server
faster), an engine consumer one connection per worker thread plus one for its housekeeping
thread and one spare, so a worker never waits. The commands call `configure` before their
first query.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

# A consumer's threads besides its workers that use the database: the housekeeping thread,
# and one spare (the command's own thread at start-up, a signal handler).
CONSUMER_EXTRA_CONNECTIONS = 2


def consumer_pool_size(workers: int) -> int:
    """The connections an engine consumer with `workers` worker threads needs at most."""
    return workers + CONSUMER_EXTRA_CONNECTIONS


def pool_options() -> dict[str, Any] | None:
    """The default database's pool options (None: no pool, as on SQLite)."""
    from django.db import connection

    return connection.settings_dict.get("OPTIONS", {}).get("pool") or None


def configure(*, web: bool, workers: int = 0) -> int | None:
    """Size this process's pool for what it runs: a web server (`web`) and/or an engine
    consumer with `workers` worker threads. Call it before the process's first query; a pool
    already made is closed so the next connection opens the new one. Returns the size (None
    without a pool)."""
    from django.conf import settings
    from django.db import connection

    options = pool_options()
    if options is None:
        return None
    consumer = consumer_pool_size(workers) if workers else 0
    explicit = settings.DATABASE_POOL_SIZE
    size = explicit or (settings.DATABASE_WEB_POOL_SIZE if web else 0) + consumer
    if explicit and explicit < consumer:
        logger.warning(
            "DATABASE_POOL_SIZE=%s is below what %s worker threads and housekeeping need (%s): "
            "they will wait for connections",
            explicit,
            workers,
            consumer,
        )
    if options.get("max_size") != size:
        connection.close()
        # Made anew, with the new size, at the next connection. PostgreSQL's connection has
        # close_pool() since Django 5.1; django-stubs do not declare it.
        connection.close_pool()  # type: ignore[attr-defined]
        options["max_size"] = size
        options["min_size"] = min(options.get("min_size", 1), size)
    return size


def is_pool_timeout(error: BaseException) -> bool:
    """Whether a database error means no pooled connection became free in time."""
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # pragma: no cover  (installed with the project)
        return False
    seen: set[int] = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, PoolTimeout):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def busy_message() -> str:
    """What a client is told when no connection became free within the pool's timeout."""
    from django.db import connection

    pool = getattr(connection, "pool", None)
    timeout = pool.timeout if pool is not None else (pool_options() or {}).get("timeout", 30)
    return (
        f"The server is busy: no database connection became free within {timeout:g} s. "
        "Try again shortly."
    )
