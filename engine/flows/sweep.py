"""Durability comes from the database, not the queue.

Huey does not acknowledge tasks: a worker killed mid-task loses it, with no signal and no
post-execute hook. Every PENDING or RUNNING flow therefore holds a lease; `sweep()` finds the
expired ones and hands them on again. It is safe to run from several consumers at once: each
hand-over is a compare-and-set.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.utils import timezone

from engine import dispatch
from engine.core.flows import script as scripts
from engine.flows.models import Flow
from engine.flows.runner import enqueue_run
from engine.flows.status import FlowState
from engine.flows.store import EventSpec, write_flow
from engine.leases import lease_until, queue_deadline

logger = logging.getLogger(__name__)


def sweep(limit: int = 500) -> int:
    """Re-dispatch flows whose lease expired. Returns how many were handed on."""
    now = timezone.now()
    expired = Flow.objects.filter(
        state__in=[FlowState.PENDING, FlowState.RUNNING], lease_until__lt=now
    ).order_by("lease_until")[:limit]
    return _hand_on(expired, now, "lease expired")


def hand_on_from(workers: list[str], limit: int = 5000) -> int:
    """Hand on at once the pending and running flows of workers that stopped beating
    (see engine.liveness), whatever their leases say."""
    held = Flow.objects.filter(
        state__in=[FlowState.PENDING, FlowState.RUNNING], worker__in=workers
    ).order_by("id")[:limit]
    return _hand_on(held, timezone.now(), "its worker stopped")


def hand_on_flows(flows: Any, why: str) -> int:
    """Hand these pending or running flows on again, as the sweep does."""
    return _hand_on(flows, timezone.now(), why)


def _hand_on(flows: Any, now: datetime, why: str) -> int:
    moved = extended = 0
    queued_jobs: set[str] | None = None
    for flow in flows:
        if flow.state == FlowState.PENDING:
            # Its run_flow task was lost (or is still queued: claiming is idempotent).
            if write_flow(flow, {"lease_until": queue_deadline()}, expect_state=FlowState.PENDING):
                enqueue_run(flow.pk)
                moved += 1
            continue
        if flow.job_id:
            if queued_jobs is None:
                queued_jobs = _queued_job_ids()
            if flow.job_id in queued_jobs:
                # Still waiting in the queue behind other work: not lost, only late. Only
                # the lease moves, and nobody is in charge until a worker takes the job: it
                # carries the flow's version and runs only if it is unchanged, so a version
                # bump here would make it a no-op and hand the step on again and again while
                # the backlog lasts.
                extended += Flow.objects.filter(
                    pk=flow.pk, version=flow.version, state=FlowState.RUNNING, job_id=flow.job_id
                ).update(lease_until=lease_until(), worker="")
                continue
        if _interrupted_for_good(flow):
            changes = {
                "state": FlowState.FAILED,
                "error": "interrupted: the worker running this step stopped, and the script "
                "must not run twice. Retry or skip the step.",
                "lease_until": None,
                "job_id": "",
                "finished": now,
            }
            stopped: EventSpec = ("flow.interrupted", {"data": {"step": flow.position, "why": why}})
            if write_flow(flow, changes, [stopped], expect_state=FlowState.RUNNING):
                moved += 1
            continue
        changes = {
            "state": FlowState.PENDING,
            "lease_until": queue_deadline(),
            "job_id": "",
            "started_position": None,
        }
        requeued: EventSpec = (
            "flow.requeued",
            {"message": f"{why}; the step runs again", "data": {"why": why}},
        )
        if write_flow(flow, changes, [requeued], expect_state=FlowState.RUNNING):
            enqueue_run(flow.pk)
            moved += 1
    if moved:
        logger.warning("sweep handed on %d flow(s): %s", moved, why)
    if extended:
        logger.info("sweep extended %d lease(s) of job(s) still queued", extended)
    return moved


def _queued_job_ids() -> set[str]:
    return {key for kind, key in dispatch.queued() if kind == "job"}


def _interrupted_for_good(flow: Flow) -> bool:
    if flow.started_position != flow.position:
        return False
    try:
        return not scripts.get_script(flow.steps[flow.position]["script"]).rerunnable
    except (LookupError, IndexError):
        return False
