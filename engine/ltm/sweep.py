"""Handing on LTM executions whose worker is gone: renew the leases of the executions this
process runs, queue again claimed executions whose lease expired or whose worker stopped
beating, and send again queued ones whose task got lost."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.utils import timezone

from engine import config
from engine.leases import lease_until
from engine.ltm import store
from engine.ltm.executor import executions
from engine.ltm.models import LtmExecution
from engine.ltm.status import ExecutionStatus, LtmRunState

logger = logging.getLogger(__name__)


def renew_leases() -> int:
    """Extend the leases of the executions this process is running."""
    ids = executions.ids()
    if not ids:
        return 0
    return LtmExecution.objects.filter(pk__in=ids, status=ExecutionStatus.CLAIMED).update(
        lease_until=lease_until()
    )


def sweep_ltm(limit: int = 500) -> int:
    """Renew this process's leases, hand on claimed executions whose worker died (lease
    expired) and re-send queued ones whose Huey task got lost. Returns how many."""
    renew_leases()
    now = timezone.now()
    moved = 0
    expired = LtmExecution.objects.filter(status=ExecutionStatus.CLAIMED, lease_until__lt=now)
    for execution in expired.order_by("lease_until")[:limit]:
        if store.commit(execution.run_id, _requeuer(execution, now)):
            moved += 1
    grace = timedelta(seconds=config.seconds("QUEUE_GRACE_SECONDS"))
    lost = LtmExecution.objects.filter(
        status=ExecutionStatus.QUEUED, dispatched_at__lt=now - grace
    ).order_by("dispatched_at")[:limit]
    for execution in lost:
        # Still in Huey's queue, perhaps: a second task is harmless, the claim is a CAS.
        resent = LtmExecution.objects.filter(
            pk=execution.pk, status=ExecutionStatus.QUEUED, dispatched_at=execution.dispatched_at
        ).update(dispatched_at=now)
        if resent:
            store.dispatch([execution.pk])
            moved += 1
    if moved:
        logger.warning("LTM sweep handed on %d execution(s)", moved)
    return moved


def hand_on_ltm_from(workers: list[str], limit: int = 5000) -> int:
    """Hand on at once the claimed executions of workers that stopped beating (see
    engine.liveness), whatever their leases say."""
    now = timezone.now()
    moved = 0
    held = LtmExecution.objects.filter(status=ExecutionStatus.CLAIMED, worker__in=workers)
    for execution in held.order_by("id")[:limit]:
        if store.commit(execution.run_id, _requeuer(execution, now, dead=True)):
            moved += 1
    if moved:
        logger.warning("LTM hand-over of %d execution(s): their worker stopped", moved)
    return moved


def _requeuer(
    execution: LtmExecution, now: Any, *, dead: bool = False
) -> Callable[[store.Snapshot], store.Write | None]:
    return lambda snap: _requeue(execution, now, dead=dead)


def _requeue(execution: LtmExecution, now: Any, *, dead: bool = False) -> store.Write | None:
    """Queue a claimed execution again: its lease expired, or (`dead`) the worker that
    claimed it stopped beating."""
    current = LtmExecution.objects.filter(pk=execution.pk).first()
    if current is None or current.status != ExecutionStatus.CLAIMED:
        return None
    if dead:
        if current.worker != execution.worker:
            return None  # claimed again meanwhile, by a live worker
    elif current.lease_until is None or current.lease_until >= now:
        return None
    changes = {
        "status": ExecutionStatus.QUEUED,
        "lease_until": None,
        "dispatched_at": now,
        "worker": "",
    }
    reason = "its worker stopped" if dead else "lease expired"
    data = {"execution": current.pk, "attempts": current.attempts, "reason": reason}
    return store.Write(
        events=[{"kind": "execution.requeued", "fqn": current.fqn, "data": data}],
        execution_changes=[(current.pk, changes)],
        redispatch=[current.pk],
        run_state=LtmRunState.RUNNING,
    )
