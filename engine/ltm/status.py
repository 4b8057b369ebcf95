"""Statuses of LTM runs, of their instances and of their executions: one small module."""

from __future__ import annotations

from django.db import models


class LtmRunState(models.TextChoices):
    PENDING = "pending", "Pending"  # created, the root has not executed yet
    RUNNING = "running", "Running"  # something is queued or executing
    COMPLETE = "complete", "Complete"  # nothing left to execute, nothing failed
    FAILED = "failed", "Failed"  # nothing left to execute, some state failed
    KILLED = "killed", "Killed"  # stopped by an operator


class LtmStatus(models.TextChoices):
    INIT = "init", "Init"
    QUEUED = "queued", "Queued"
    ACTIVE = "active", "Active"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


class ExecutionStatus(models.TextChoices):
    QUEUED = "queued", "Queued"  # in the outbox, dispatched (or about to be) to Huey
    CLAIMED = "claimed", "Claimed"  # a worker executes it; `lease_until` says until when
    DONE = "done", "Done"
    FAILED = "failed", "Failed"  # its run() raised
    STALE = "stale", "Stale"  # its state moved on (or the run was killed) before it ran


# Executions still to finish, and runs that are over.
OPEN = (ExecutionStatus.QUEUED, ExecutionStatus.CLAIMED)
FINISHED = (LtmRunState.COMPLETE, LtmRunState.FAILED, LtmRunState.KILLED)
