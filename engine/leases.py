"""Leases, for both slices: how long a worker's hold on running work lasts, how long queued
work may wait, and the work this process holds now (its leases are renewed by the
housekeeping thread, and its heartbeat lists it: see engine.liveness)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.utils import timezone

from engine import config


def lease_until(seconds: float | None = None) -> datetime:
    """Deadline of a worker's hold on running work."""
    base = config.seconds("LEASE_SECONDS")
    return timezone.now() + timedelta(seconds=max(base, seconds or 0))


def queue_deadline() -> datetime:
    """Deadline of work that waits in the queue (a pending flow, an offloaded job not yet
    started). Queued tasks survive a consumer's death; this only catches one lost between
    dequeue and claim that nothing else caught, so it is long enough not to re-queue a mere
    backlog."""
    return timezone.now() + timedelta(seconds=config.seconds("QUEUE_GRACE_SECONDS"))


class Held:
    """Ids of what this process's workers are running now (a flow may be held twice: a
    blocking loop and the tail of an offloaded job), with the thread that holds each and
    since when (its heartbeat tells, see engine.liveness)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # key -> one (thread name, since) per hold, oldest first
        self._holds: dict[int, list[tuple[str, datetime]]] = {}

    @contextmanager
    def hold(self, key: int) -> Iterator[None]:
        entry = (threading.current_thread().name, timezone.now())
        with self._lock:
            self._holds.setdefault(key, []).append(entry)
        try:
            yield
        finally:
            with self._lock:
                holds = self._holds[key]
                holds.remove(entry)
                if not holds:
                    del self._holds[key]

    def ids(self) -> list[int]:
        with self._lock:
            return list(self._holds)

    def threads(self) -> dict[str, dict[str, str]]:
        """``{"<key>": {"thread": name, "since": iso time}}``: for each key held now, the
        thread of its latest hold (the one doing the work now) and when that hold began."""
        with self._lock:
            latest = {key: holds[-1] for key, holds in self._holds.items()}
        return {
            str(key): {"thread": thread, "since": since.isoformat()}
            for key, (thread, since) in latest.items()
        }
