"""Flow states, in one small module (the pure core uses the same strings)."""

from django.db import models

from engine.core.flows import outcome


class FlowState(models.TextChoices):
    PENDING = outcome.PENDING, "Pending"
    RUNNING = outcome.RUNNING, "Running"
    WAITING = outcome.WAITING, "Waiting"
    COMPLETE = outcome.COMPLETE, "Complete"
    KILLED = outcome.KILLED, "Killed"
    FAILED = outcome.FAILED, "Failed"


FINISHED = frozenset({FlowState.COMPLETE, FlowState.KILLED, FlowState.FAILED})
ACTIVE = frozenset({FlowState.PENDING, FlowState.RUNNING, FlowState.WAITING})
