"""Statuses of LTM runs, of their instances and of their executions: one small module (the
pure core uses the same strings for instances)."""

from __future__ import annotations

from django.db import models

from engine.core.ltm import records


class LtmRunState(models.TextChoices):
    PENDING = "pending", "Pending"  # created, the root has not executed yet
    RUNNING = "running", "Running"  # something is queued or executing
    COMPLETE = "complete", "Complete"  # nothing left to execute, nothing failed
    FAILED = "failed", "Failed"  # nothing left to execute, some state failed
    KILLED = "killed", "Killed"  # stopped by an operator


class LtmStatus(models.TextChoices):
    """An instance's status: the strings of the pure core's records."""

    INIT = records.INIT, "Init"
    QUEUED = records.QUEUED, "Queued"
    ACTIVE = records.ACTIVE, "Active"
    COMPLETED = records.COMPLETED, "Completed"
    FAILED = records.FAILED, "Failed"


class ExecutionStatus(models.TextChoices):
    QUEUED = "queued", "Queued"  # in the outbox, dispatched (or about to be) to Huey
    CLAIMED = "claimed", "Claimed"  # a worker executes it; `lease_until` says until when
    DONE = "done", "Done"
    FAILED = "failed", "Failed"  # its run() raised
    STALE = "stale", "Stale"  # its state moved on (or the run was killed) before it ran


# Executions still to finish, and runs that are over.
OPEN = (ExecutionStatus.QUEUED, ExecutionStatus.CLAIMED)
FINISHED = (LtmRunState.COMPLETE, LtmRunState.FAILED, LtmRunState.KILLED)
