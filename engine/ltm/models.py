"""Records of LTM runs: the run (owner, overall state, global state, version for the
compare-and-set), its tree of instances, its outbox of executions, the keys of its atomic
appends, and its append-only event log.

A run's id is a UUID; the pure core sees it as a string (`str(run.pk)`).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from engine.history import EventRow
from engine.ltm.status import ExecutionStatus, LtmRunState, LtmStatus


class LtmRun(models.Model):
    """One run of a registered root LTM."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)  # the registered root's name
    # Null for runs started from code (`MyLtm().start()`): only staff see those.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="ltm_runs",
        db_index=False,  # (ltmrun_owner_state begins with it)
    )
    state = models.CharField(
        max_length=16, choices=LtmRunState.choices, default=LtmRunState.PENDING
    )
    global_state = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    # Compare-and-set counter: every write of the run's tree checks and bumps it.
    version = models.PositiveIntegerField(default=0)
    seq = models.PositiveIntegerField(default=0)  # last event's sequence number
    error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    finished = models.DateTimeField(null=True, blank=True)
    # The first event the time machine can show (runs older than it kept no changes).
    history_from = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-updated", "-created"]
        indexes = [
            models.Index(fields=["owner", "state"], name="ltmrun_owner_state"),
            models.Index(fields=["-updated"], name="ltmrun_recent"),
        ]

    def __str__(self) -> str:
        return f"LTM run {self.pk} of {self.name} ({self.state})"

    @property
    def run_id(self) -> str:
        return str(self.pk)


class LtmInstance(models.Model):
    """One node of a run's tree. The root's state lives in `LtmRun.global_state`."""

    # (Lookups by run: the unique (run, fqn) index.)
    run = models.ForeignKey(
        LtmRun, on_delete=models.CASCADE, related_name="instances", db_index=False
    )
    fqn = models.CharField(max_length=500)
    name = models.CharField(max_length=200)
    declared_name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=LtmStatus.choices, default=LtmStatus.INIT)
    state = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    params = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    error = models.TextField(blank=True)
    # Which visit of the state this is (see InstanceRecord.entry): executions of an earlier
    # visit, still in the outbox when the state began a new one, find it so and do nothing.
    entry = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["run", "fqn"]
        constraints = [
            models.UniqueConstraint(fields=["run", "fqn"], name="ltminstance_unique_fqn"),
        ]

    def __str__(self) -> str:
        return f"{self.fqn} ({self.status})"


class LtmExecution(models.Model):
    """The outbox: one queued execution of an instance, written in the transaction that
    queued it and dispatched to Huey after the commit (again by the sweep if lost)."""

    # (Lookups by run: the (run, status) and (run, queued_seq) indexes.)
    run = models.ForeignKey(
        LtmRun, on_delete=models.CASCADE, related_name="executions", db_index=False
    )
    fqn = models.CharField(max_length=500)
    payload = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    status = models.CharField(
        max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.QUEUED
    )
    entry = models.PositiveIntegerField(default=0)  # the visit of its instance it belongs to
    attempts = models.PositiveIntegerField(default=0)  # claims so far
    lease_until = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=100, blank=True, default="")  # who claimed it
    created = models.DateTimeField(auto_now_add=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    # The run's history: queued by the write that ended at event `queued_seq`, closed (done,
    # failed, stale) by the one that ended at `closed_seq`. What was open after event n is
    # what the time machine queues again when it goes back to n.
    queued_seq = models.PositiveIntegerField(default=0)
    closed_seq = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["status", "dispatched_at"], name="ltmexec_status_dispatch"),
            models.Index(fields=["status", "lease_until"], name="ltmexec_status_lease"),
            models.Index(fields=["run", "status"], name="ltmexec_run_status"),
            models.Index(fields=["run", "queued_seq"], name="ltmexec_run_queued"),
        ]

    def __str__(self) -> str:
        return f"execution {self.pk} of {self.fqn} ({self.status})"


class LtmAppend(models.Model):
    """One done `atomic_state_append` call: a re-run of the same execution repeating the
    call (same calling instance, same order) finds it here and does not append again."""

    # (Lookups by execution: the unique (execution, fqn, call_index) index.)
    execution = models.ForeignKey(
        LtmExecution, on_delete=models.CASCADE, related_name="appends", db_index=False
    )
    fqn = models.CharField(max_length=500)  # the calling (executing) instance
    call_index = models.PositiveIntegerField()
    target = models.CharField(max_length=500)  # the instance whose list grew
    key = models.CharField(max_length=200)
    seq = models.PositiveIntegerField(default=0)  # the run's `state.appended` event
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["execution", "call_index"]
        constraints = [
            models.UniqueConstraint(
                fields=["execution", "fqn", "call_index"], name="ltmappend_unique_call"
            ),
        ]

    def __str__(self) -> str:
        return f"append #{self.call_index} of {self.fqn} to {self.target}.{self.key}"


class LtmEvent(EventRow):
    """One entry of a run's history; `seq` numbers them per run from 1."""

    # The unique constraint's index (run, seq) serves lookups by run: no index of its own.
    run = models.ForeignKey(LtmRun, on_delete=models.CASCADE, related_name="events", db_index=False)
    fqn = models.CharField(max_length=500, blank=True)
    state = models.CharField(max_length=16, choices=LtmRunState.choices)  # the run's, after it
    # On the last event of each write: what that write changed (engine.core.ltm.history's
    # change: whole records of the instances that changed or went, the run's state and error).
    change = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)

    feed_type = "ltm.event"

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="ltmevent_unique_seq"),
        ]
        indexes = [EventRow.actor_index("ltmevent_actor")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind} {self.fqn}"

    def subject(self) -> dict[str, Any]:
        return {"run": str(self.run_id), "fqn": self.fqn}


class LtmCheckpoint(models.Model):
    """The whole of a run (every record, its state and error) as committed after event
    `seq`, written every `LTM_CHECKPOINT_EVERY` events and after a write that changed much
    of the run (a rollback): the time machine starts from the nearest one and replays the
    changes after it."""

    # (Lookups by run: the unique (run, seq) index.)
    run = models.ForeignKey(
        LtmRun, on_delete=models.CASCADE, related_name="checkpoints", db_index=False
    )
    seq = models.PositiveIntegerField()
    snapshot = models.JSONField(encoder=DjangoJSONEncoder)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="ltmcheckpoint_unique_seq"),
        ]

    def __str__(self) -> str:
        return f"checkpoint of {self.run_id} at #{self.seq}"
