"""Leases of the flows this process is working on, kept alive by a heartbeat.

A running step (blocking, or an offloaded job) registers its flow here while it performs;
the consumer's housekeeping thread renews those leases every few seconds. A flow whose lease
runs out is therefore one whose worker is gone, however long its steps take.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from engine.models import Flow
from engine.status import FlowState
from engine.store import lease_until

_lock = threading.Lock()
_held: dict[int, int] = {}  # flow id -> how many workers of this process hold it


@contextmanager
def holding(flow_id: int) -> Iterator[None]:
    with _lock:
        _held[flow_id] = _held.get(flow_id, 0) + 1
    try:
        yield
    finally:
        with _lock:
            if _held[flow_id] <= 1:
                del _held[flow_id]
            else:
                _held[flow_id] -= 1


def held() -> list[int]:
    with _lock:
        return list(_held)


def renew() -> int:
    """Extend the leases of the flows held here. The version is left alone: a renewal must
    not make a worker's own next write look stale."""
    ids = held()
    if not ids:
        return 0
    return Flow.objects.filter(pk__in=ids, state=FlowState.RUNNING).update(
        lease_until=lease_until()
    )
