"""PostgreSQL connections of the test database, counted while a test runs."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from django.db import connection


def own_label() -> str:
    """The application_name of this process's connections (the settings name each process's
    connections `flowstudio <command> <pid>`)."""
    return connection.settings_dict["OPTIONS"]["application_name"]


def checked_out() -> int:
    """How many connections of this process's pool are taken (not idle in the pool)."""
    stats = connection.pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


class ConnectionSampler(threading.Thread):
    """Counts the test database's connections in pg_stat_activity every `every` seconds, from
    a connection of its own, per application_name; connections named in `exclude` (this
    process's own, by default) are left out of `max_total`."""

    def __init__(self, every: float = 0.02, exclude: tuple[str, ...] | None = None) -> None:
        super().__init__(name="pg-connection-sampler", daemon=True)
        self.every = every
        self.exclude = set(exclude if exclude is not None else (own_label(),))
        self.stopping = threading.Event()
        self.samples = 0
        self.max_total = 0
        self.max_by_name: Counter[str] = Counter()
        self.error: BaseException | None = None
        config = connection.settings_dict
        self.params: dict[str, Any] = {
            "dbname": config["NAME"],
            "user": config.get("USER") or None,
            "password": config.get("PASSWORD") or None,
            "host": config.get("HOST") or "127.0.0.1",
            "port": config.get("PORT") or None,
            "application_name": "flowstudio test sampler",
            "autocommit": True,
        }

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(**{k: v for k, v in self.params.items() if v is not None}) as db:
                while True:
                    rows = db.execute(
                        "SELECT application_name, count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                        "GROUP BY application_name"
                    ).fetchall()
                    self.record(dict(rows))
                    if self.stopping.wait(self.every):
                        break
        except BaseException as exc:  # noqa: BLE001  (reported by stop())
            self.error = exc

    def record(self, counts: dict[str, int]) -> None:
        self.samples += 1
        total = sum(n for name, n in counts.items() if name not in self.exclude)
        self.max_total = max(self.max_total, total)
        for name, n in counts.items():
            self.max_by_name[name] = max(self.max_by_name[name], n)

    def __enter__(self) -> ConnectionSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        if self.error is not None:
            raise RuntimeError(f"sampling pg_stat_activity failed: {self.error}")
