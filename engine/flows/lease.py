"""Leases of the flows this process is working on, kept alive by the housekeeping thread.

A running step (blocking, or an offloaded job) holds its flow here while it performs; the
housekeeping thread renews those leases every few seconds and lists them in this process's
heartbeat. A flow whose lease runs out is therefore one whose worker is gone, however long
its steps take.
"""

from __future__ import annotations

from engine.flows.models import Flow
from engine.flows.status import FlowState
from engine.leases import Held, lease_until

flows = Held()
holding = flows.hold


def held() -> list[int]:
    return flows.ids()


def threads() -> dict[str, dict[str, str]]:
    """Which thread of this process holds each flow held here, and since when."""
    return flows.threads()


def renew() -> int:
    """Extend the leases of the flows held here. The version is left alone: a renewal must
    not make a worker's own next write look stale."""
    ids = held()
    if not ids:
        return 0
    return Flow.objects.filter(pk__in=ids, state=FlowState.RUNNING).update(
        lease_until=lease_until()
    )
