"""Records of the flows slice: Task (a named use of a registered script), Routine (ordered steps),
Flow (a routine run for a user) and FlowEvent (its append-only history)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, models, router

from engine.core.flows import script as scripts
from engine.flows import codec
from engine.flows.status import FlowState
from engine.history import EventRow
from engine.rows import Table


def validate_script_name(value: str) -> None:
    if value not in scripts.registry():
        raise ValidationError(
            "%(value)s is not a registered Task script", params={"value": value}, code="unknown"
        )


class Task(models.Model):
    """A friendly name for a registered script, with default params."""

    name = models.CharField(max_length=200)
    script = models.CharField(max_length=100, validators=[validate_script_name])
    params = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.script})"


class Routine(models.Model):
    """Ordered steps of Tasks. Each edit bumps `version`; flows pin their steps at start."""

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="routines",
    )
    version = models.PositiveIntegerField(default=1)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def snapshot(self) -> list[dict[str, Any]]:
        """The steps as a flow pins them: name, script and merged params of each."""
        return [step.snapshot() for step in self.steps.select_related("task")]


class RoutineStep(models.Model):
    routine = models.ForeignKey(Routine, on_delete=models.CASCADE, related_name="steps")
    order = models.PositiveIntegerField()
    task = models.ForeignKey(Task, on_delete=models.PROTECT, related_name="steps")
    label = models.CharField(max_length=200, blank=True)
    params = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    # The step's identity across versions (kept when the step is edited or moved), so that a
    # flow moved onto another version goes on at the same step.
    key = models.CharField(max_length=32, blank=True, default="")
    # This step's overrides of its script's retry settings and time limit (see
    # engine.flows.retries.SETTINGS): e.g. {"retries": 5, "retry_delay": 10}.
    overrides = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)

    class Meta:
        ordering = ["routine", "order", "id"]

    def __str__(self) -> str:
        return f"{self.routine} #{self.order}: {self.label or self.task.name}"

    def snapshot(self) -> dict[str, Any]:
        step = {
            "name": self.label or self.task.name,
            "script": self.task.script,
            "params": {**self.task.params, **self.params},
        }
        if self.key:
            step["key"] = self.key
        if self.overrides:
            step["overrides"] = dict(self.overrides)
        return step


class RoutineVersion(models.Model):
    """Each version of a routine as it was saved: its name, description and steps (with
    their identities), kept for good, so that any two can be compared and a flow moved
    from one onto another."""

    routine = models.ForeignKey(Routine, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # [{"key", "label", "script", "params", "overrides"}, ...] as the builder saved them
    steps = models.JSONField(default=list, encoder=DjangoJSONEncoder)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["routine", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["routine", "number"], name="routineversion_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.routine_id} v{self.number}"


class Flow(models.Model):
    """A routine run for a user: its position, state, data and per-step results."""

    # (Lookups by routine and by owner use the indexes that begin with them, below: a plain
    # index of each would only cost every flow's insert.)
    routine = models.ForeignKey(
        Routine, on_delete=models.PROTECT, related_name="flows", db_index=False
    )
    routine_version = models.PositiveIntegerField()
    steps = models.JSONField(encoder=DjangoJSONEncoder)  # pinned at start
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="flows", db_index=False
    )
    state = models.CharField(max_length=16, choices=FlowState.choices, default=FlowState.PENDING)
    position = models.PositiveIntegerField(default=0)
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    wait_reason = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    # Input pushed while the current step waited, handed to its next perform().
    input = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    has_input = models.BooleanField(default=False)
    job_id = models.CharField(max_length=64, blank=True)  # the offloaded Huey task
    # The consumer process that last took charge of the flow (see engine.liveness).
    worker = models.CharField(max_length=100, blank=True, default="")
    # Compare-and-set counter: every write checks and bumps it, so no step commits twice.
    version = models.PositiveIntegerField(default=0)
    seq = models.PositiveIntegerField(default=0)  # last event's sequence number
    lease_until = models.DateTimeField(null=True, blank=True)
    # Position whose non-rerunnable step has begun (cleared when its outcome commits).
    started_position = models.IntegerField(null=True, blank=True)
    # Human steps: each committed wait is numbered (notifications are once per wait); a wait
    # with a timeout has a deadline, and a reminder before it when its script asks for one.
    wait_number = models.PositiveIntegerField(default=0)
    deadline = models.DateTimeField(null=True, blank=True)
    remind_at = models.DateTimeField(null=True, blank=True)
    # Recovery: the attempt of the current step visit (1 on its first), when a RETRYING flow
    # tries again, the visit's idempotency key (new each time the flow comes to a step), and
    # when the running step passes its script's time limit.
    attempt = models.PositiveIntegerField(default=1)
    retry_at = models.DateTimeField(null=True, blank=True)
    visit_key = models.CharField(max_length=32, blank=True, default="")
    step_deadline = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated", "-id"]
        indexes = [
            models.Index(fields=["state", "lease_until"], name="flow_state_lease"),
            models.Index(fields=["-updated", "-id"], name="flow_recent"),
            # The dashboard's filters, each in the lists' order (keyset pages, counts that
            # stop at a limit: an index range, never a sort of every match).
            models.Index(fields=["state", "-updated", "-id"], name="flow_state_recent"),
            models.Index(fields=["owner", "-updated", "-id"], name="flow_owner_recent"),
            models.Index(fields=["owner", "state", "-updated", "-id"], name="flow_owner_state"),
            models.Index(fields=["routine", "-updated", "-id"], name="flow_routine_recent"),
            # The sweeps' searches for what is due (`<= now`); most flows have none of these
            # times, and an entry of them would only cost every flow's insert.
            models.Index(
                fields=["state", "deadline"],
                name="flow_state_deadline",
                condition=models.Q(deadline__isnull=False),
            ),
            models.Index(
                fields=["state", "retry_at"],
                name="flow_state_retry",
                condition=models.Q(retry_at__isnull=False),
            ),
            models.Index(
                fields=["state", "step_deadline"],
                name="flow_state_time_limit",
                condition=models.Q(step_deadline__isnull=False),
            ),
        ]
        permissions = [("operate_flow", "Can see and override every user's flows")]

    def __str__(self) -> str:
        return f"Flow {self.pk} of {self.routine_id} ({self.state} at {self.position})"

    @property
    def stored_results(self) -> list[Any]:
        """Each performed step's stored result (see engine.codec), by position up to the last
        one stored (None where there is none): the flow's `FlowResult` rows, read once when
        first asked for and then kept in step with the flow's own writes (`write_flow`)."""
        cached: list[Any] | None = self.__dict__.get("_stored_results")
        if cached is None:
            cached = [] if self.pk is None else result_list(self.pk)
            self.__dict__["_stored_results"] = cached
        return cached

    @stored_results.setter
    def stored_results(self, value: list[Any]) -> None:
        """What is kept in memory (written by `write_flow`'s `stored_results` change)."""
        self.__dict__["_stored_results"] = list(value)

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        super().refresh_from_db(*args, **kwargs)
        self.__dict__.pop("_stored_results", None)  # read again when next asked for

    def refresh_from(self, fresh: Flow) -> None:
        """What `refresh_from_db()` does, from `fresh`, the same flow read just now, with no
        query: its columns and the owner and routine read with it; nothing prefetched."""
        for field in self._meta.concrete_fields:
            setattr(self, field.attname, getattr(fresh, field.attname))
        if Flow.owner.is_cached(fresh):
            self.owner = fresh.owner
        if Flow.routine.is_cached(fresh):
            self.routine = fresh.routine
        self.__dict__.pop("_prefetched_objects_cache", None)
        self.__dict__.pop("_stored_results", None)
        self._state.db = fresh._state.db

    @property
    def results(self) -> list[Any]:
        """Each step's latest result (None where not performed), decoded."""
        stored = list(self.stored_results) + [None] * (len(self.steps) - len(self.stored_results))
        return [codec.decode(item) for item in stored]

    @property
    def length(self) -> int:
        return len(self.steps)

    @property
    def current_step(self) -> dict[str, Any] | None:
        return self.steps[self.position] if self.position < len(self.steps) else None

    @property
    def offloaded(self) -> bool:
        return self.state == FlowState.RUNNING and bool(self.job_id)


class FlowResult(models.Model):
    """The latest stored result of one step of a flow (see engine.codec; NULL for a step
    performed or skipped without one). A row per step, not an array in the flow's row: a
    step's write then costs the same at step 1,000 as at step 10."""

    # The unique constraint's index (flow, position) serves lookups by flow: no index of its own.
    flow = models.ForeignKey(
        Flow, on_delete=models.CASCADE, related_name="result_rows", db_index=False
    )
    position = models.PositiveIntegerField()
    value = models.JSONField(null=True, encoder=DjangoJSONEncoder)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["flow", "position"], name="flowresult_unique_step"),
        ]

    def __str__(self) -> str:
        return f"{self.flow_id} step {self.position}"


def result_list(flow_id: int) -> list[Any]:
    """A flow's stored results as a list by position, up to its last row (None between)."""
    stored: list[Any] = []
    for row in _RESULTS.rows(_read_db(FlowResult), order=("position",), flow=flow_id):
        stored.extend([None] * (row.position - len(stored)))
        stored.append(row.value)
    return stored


def latest_events(flow_id: int, limit: int) -> list[FlowEvent]:
    """A flow's `limit` latest events, newest first, each with its actor: what
    `flow.events.select_related("actor").order_by("-seq")[:limit]` reads (statements written
    once: a flow's page reads both at every render of its live area)."""
    return list(
        _EVENTS.rows(
            _read_db(FlowEvent), related="actor", order=("-seq",), limit=limit, flow=flow_id
        )
    )


def _read_db(model: type[models.Model]) -> Any:
    return connections[router.db_for_read(model)]


class FlowEvent(EventRow):
    """One entry of a flow's append-only history; `seq` numbers them per flow from 1."""

    # The unique constraint's index (flow, seq) serves lookups by flow: no index of its own.
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="events", db_index=False)
    state = models.CharField(max_length=16, choices=FlowState.choices)
    position = models.PositiveIntegerField()
    message = models.TextField(blank=True)

    feed_type = "flow.event"

    class Meta:
        ordering = ["flow", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["flow", "seq"], name="flowevent_unique_seq"),
        ]
        indexes = [EventRow.actor_index("flowevent_actor")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind} ({self.flow_id})"

    def subject(self) -> dict[str, Any]:
        return {"flow": self.flow_id, "position": self.position, "message": self.message}


# Read by `result_list` and `latest_events`.
_RESULTS, _EVENTS = Table(FlowResult), Table(FlowEvent)


class FlowAssignee(models.Model):
    """Who may answer a flow's current wait: a user or a group (rows of the current wait
    only; they go when the flow stops waiting)."""

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="assignees")
    # (Indexed by the named indexes below: the keys' own would be the same index twice.)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    group = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )

    class Meta:
        indexes = [
            models.Index(fields=["user"], name="flowassignee_user"),
            models.Index(fields=["group"], name="flowassignee_group"),
        ]

    def __str__(self) -> str:
        return f"{self.user or self.group} may answer flow {self.flow_id}"


class Notification(models.Model):
    """An in-app notification of a user, about a flow's wait (once per wait and user), and
    the e-mail it sends: `emailed` is set by the one process that sends it."""

    WAITING, REMINDER = "waiting", "reminder"
    KINDS = [(WAITING, "Waiting for you"), (REMINDER, "Deadline soon")]

    user = models.ForeignKey(  # (notification_user_open begins with it)
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="flow_notifications",
        db_index=False,
    )
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="notifications")
    wait_number = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=KINDS, default=WAITING)
    message = models.CharField(max_length=500)
    created = models.DateTimeField(auto_now_add=True)
    cleared = models.DateTimeField(null=True, blank=True)  # the wait was answered or ended
    emailed = models.DateTimeField(null=True, blank=True)
    email_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "flow", "wait_number", "kind"], name="notification_once"
            ),
        ]
        indexes = [
            models.Index(fields=["user", "cleared"], name="notification_user_open"),
            models.Index(fields=["emailed"], name="notification_to_email"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for {self.user_id}: flow {self.flow_id}"


class Schedule(models.Model):
    """Flows of a routine started on a cron expression, in a time zone, with data, for an
    owner (engine.flows.schedules). `next_run` is the next due time; the consumer that
    records a due time's `ScheduleRun` first is the one that starts its flow."""

    routine = models.ForeignKey(Routine, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=200, blank=True)
    cron = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC")
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="flow_schedules"
    )
    paused = models.BooleanField(default=False)
    next_run = models.DateTimeField(null=True, blank=True)
    last_run = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=0)  # compare-and-set, as flows
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["next_run", "id"]
        indexes = [models.Index(fields=["paused", "next_run"], name="schedule_due")]

    def __str__(self) -> str:
        return f"schedule {self.pk} of {self.routine_id} ({self.cron})"


class ScheduleRun(models.Model):
    """One due time of a schedule and what came of it: the flow started, or why none was.
    Unique per (schedule, due): a due time starts at most one flow, whatever the consumers."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="runs")
    due = models.DateTimeField()
    flow = models.ForeignKey(
        Flow, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    missed = models.PositiveIntegerField(default=0)  # due times skipped by this catch-up
    error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["schedule", "-due"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "due"], name="schedulerun_once"),
        ]

    def __str__(self) -> str:
        return f"run of schedule {self.schedule_id} due {self.due}"


class BulkAction(models.Model):
    """One operator action over many flows (engine.flows.bulk), run in the background: what
    was asked (`selection`: ids or a filter), how far it got, and what was refused and why."""

    QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
    STATES = [(QUEUED, "Queued"), (RUNNING, "Running"), (DONE, "Done"), (FAILED, "Failed")]

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bulk_actions"
    )
    action = models.CharField(max_length=16)  # retry, resume, skip, kill
    reason = models.TextField(blank=True)
    selection = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    flow_ids = models.JSONField(default=list)  # the flows it covers, fixed when it starts
    state = models.CharField(max_length=16, choices=STATES, default=QUEUED)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    # {"why": {"count": n, "flows": [first ids]}} of the flows the action did not apply to
    refused = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    error = models.TextField(blank=True)
    # Held by the worker running it; one whose lease ran out is taken up again where it
    # stopped (`processed`), by the housekeeping of any consumer.
    lease_until = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["state", "lease_until"], name="bulk_state_lease")]

    def __str__(self) -> str:
        return f"bulk {self.action} {self.pk} ({self.processed}/{self.total})"


class AuditEntry(models.Model):
    """Who did what to something that has no event history of its own (schedules, bulk
    actions): kept when the object is deleted."""

    kind = models.CharField(max_length=40)  # e.g. "schedule.paused", "bulk.started"
    object_type = models.CharField(max_length=40)
    object_id = models.PositiveBigIntegerField(null=True, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object")]

    def __str__(self) -> str:
        return f"{self.kind} {self.object_type} {self.object_id}"
