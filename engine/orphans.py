"""Work whose queued task vanished: taken from the queue by a consumer that died before it
claimed it.

Huey does not acknowledge tasks, so a consumer killed between taking a task from the queue and
claiming its flow (or LTM execution) loses it, and nothing in the database names that
consumer. Such work is *pending* (a flow waiting for its run, an LTM execution queued) or
*running with an offloaded job*, while its task is neither in the queue nor held by any live
worker (each worker lists what it holds in its heartbeat row). Claiming takes milliseconds, so
work seen like that in two checks at least a worker timeout apart, unchanged meanwhile, was
lost: it is queued again at once (a second task is harmless, claims are compare-and-sets).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db.models.functions import Now
from django.utils import timezone

from engine import dispatch, liveness
from engine.flows.models import Flow
from engine.flows.runner import enqueue_run
from engine.flows.status import FlowState
from engine.flows.store import write_flow
from engine.flows.sweep import hand_on_flows
from engine.leases import queue_deadline
from engine.liveness import Worker
from engine.ltm import store as ltm_store
from engine.ltm.models import LtmExecution
from engine.ltm.status import ExecutionStatus

logger = logging.getLogger(__name__)

Key = tuple[str, int]


class OrphanWatch:
    """Kept by one housekeeping thread: what looked lost at the last check, and since when."""

    def __init__(self, limit: int = 2000) -> None:
        self.limit = limit
        self.suspects: dict[Key, tuple[Any, float]] = {}

    def check(self) -> int:
        """Queue again what stayed lost for a worker timeout; returns how many."""
        seen = self._unaccounted()
        now = time.monotonic()
        patience = liveness.timeout().total_seconds()
        lost = [key for key, mark in seen.items() if self._still(key, mark, now, patience)]
        self.suspects = {
            key: self._since(key, mark, now) for key, mark in seen.items() if key not in lost
        }
        return sum(self._hand_on(key, seen[key]) for key in lost)

    def _since(self, key: Key, mark: Any, now: float) -> tuple[Any, float]:
        """Since when `key` looks lost with this mark (now, if it moved since)."""
        earlier = self.suspects.get(key)
        return earlier if earlier is not None and earlier[0] == mark else (mark, now)

    def _still(self, key: Key, mark: Any, now: float, patience: float) -> bool:
        earlier = self.suspects.get(key)
        return earlier is not None and earlier[0] == mark and now - earlier[1] >= patience

    def _unaccounted(self) -> dict[Key, Any]:
        """Pending or queued work that neither the queue nor a live worker accounts for,
        with a mark that changes whenever the work moves on."""
        flows = list(
            Flow.objects.filter(state__in=[FlowState.PENDING, FlowState.RUNNING])
            .exclude(state=FlowState.RUNNING, job_id="")
            .order_by("updated")
            .values_list("pk", "version", "state", "job_id")[: self.limit]
        )
        executions = list(
            LtmExecution.objects.filter(status=ExecutionStatus.QUEUED)
            .order_by("id")
            .values_list("pk", "dispatched_at")[: self.limit]
        )
        if not flows and not executions:
            return {}
        queued = dispatch.queued()
        held = _held_by_live_workers()
        found: dict[Key, Any] = {}
        for pk, version, state, job_id in flows:
            if state == FlowState.PENDING:
                lost = ("run", pk) not in queued
            else:
                lost = ("job", job_id) not in queued and pk not in held
            if lost:
                found[("flow", pk)] = version
        for pk, dispatched in executions:
            if ("ltm", pk) not in queued:
                found[("ltm", pk)] = dispatched
        return found

    def _hand_on(self, key: Key, mark: Any) -> int:
        kind, pk = key
        if kind == "ltm":
            if LtmExecution.objects.filter(
                pk=pk, status=ExecutionStatus.QUEUED, dispatched_at=mark
            ).update(dispatched_at=timezone.now()):
                ltm_store.dispatch([pk])
                logger.warning("LTM execution %s: its queued task was lost; sent again", pk)
                return 1
            return 0
        flow = Flow.objects.filter(pk=pk, version=mark).first()
        if flow is None:
            return 0
        if flow.state == FlowState.PENDING:
            if write_flow(flow, {"lease_until": queue_deadline()}, expect_state=FlowState.PENDING):
                enqueue_run(flow.pk)
                logger.warning("flow %s: its queued run was lost; queued again", pk)
                return 1
            return 0
        return hand_on_flows([flow], "its queued job was lost")


def _held_by_live_workers() -> set[int]:
    """Flows whose steps live workers are performing, as their last beats listed them."""
    live = Worker.objects.filter(beat__gte=Now() - liveness.timeout())
    held: set[int] = set()
    for flows in live.values_list("held", flat=True):
        held.update(flows or [])
    return held
