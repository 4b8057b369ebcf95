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
    blocking loop and the tail of an offloaded job)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[int, int] = {}

    @contextmanager
    def hold(self, key: int) -> Iterator[None]:
        with self._lock:
            self._count[key] = self._count.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                if self._count[key] <= 1:
                    del self._count[key]
                else:
                    self._count[key] -= 1

    def ids(self) -> list[int]:
        with self._lock:
            return list(self._count)
