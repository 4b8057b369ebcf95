"""Running a flow: claim it, perform its steps, commit each outcome, hand on what is left.

Every write goes through `engine.store.write_flow` (compare-and-set on the flow's version), so
two workers never commit the same step twice: a step may be *performed* again after a crash,
but its result is *recorded* once. No transaction is open while a script performs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.db import connections, router, transaction
from django.utils import timezone

from engine import config, dispatch
from engine.core.flows import outcome as core
from engine.core.flows import script as scripts
from engine.core.flows.results import ResultsView
from engine.core.flows.retry import TimeLimitExceeded
from engine.flows import codec, humans, retries
from engine.flows.lease import holding
from engine.flows.models import Flow
from engine.flows.status import FINISHED, FlowState
from engine.flows.store import (
    STEPPING_RESOLUTION,
    EventSpec,
    ItemAt,
    claim_pending,
    claims_at_once,
    create_flow,
    load_flow,
    write_flow,
)
from engine.jsonsafe import storable_text
from engine.leases import lease_until, queue_deadline
from engine.liveness import worker_id

logger = logging.getLogger(__name__)

_WAIT_REASON_LENGTH = Flow._meta.get_field("wait_reason").max_length


_inline = threading.local()


@contextmanager
def starting(flow: Flow) -> Iterator[None]:
    """While a new flow's creation commits: when the queue runs it at once in this thread
    (inline), its run (and the jobs it queues, inline too) take this object, just written,
    instead of reading the row back. Every write is a compare-and-set on the version all the
    same, and each updates this object, so the caller sees the flow as its run left it."""
    outer = getattr(_inline, "flow", None)  # (a step of an inline run may start a flow)
    outer_claimed = getattr(_inline, "claimed", None)
    _inline.flow, _inline.claimed = flow, None
    try:
        yield
    finally:
        _inline.flow, _inline.claimed = outer, outer_claimed


def runs_at_once() -> bool:
    """Whether a flow started now runs at once, in this thread, once created: the queue is
    in immediate mode and no transaction of the caller's holds its run until it commits."""
    return dispatch.immediate() and not connections[router.db_for_write(Flow)].in_atomic_block


def create_and_run(flow: Flow, events: list[EventSpec], *, at_once: bool) -> None:
    """Create the new `flow` (inside `starting`) with its first `events`, and queue its run.

    When that runs at once (`at_once`, from `runs_at_once()` before the creation's own
    transaction, if any, began), the creation claims the flow as well, as `_claim` would
    have: RUNNING, leased, planned for its first step, its `flow.running` event after
    `events` (which record it PENDING, as it was created). The run then takes it as it is:
    one transaction fewer for each flow started inline, where the creation and the claim
    took one each."""
    if at_once:
        claim: dict[str, Any] = {"state": FlowState.RUNNING, "lease_until": lease_until()}
        running: list[tuple[str, dict[str, Any]]] = [("flow.running", {})]
        _plan_next(flow, flow.position, claim, running, in_loop=True)
        for name, value in claim.items():
            setattr(flow, name, value)
        events = [(kind, {**spec, "state": FlowState.PENDING}) for kind, spec in events]
        create_flow(flow, [*events, *running])
        _inline.claimed = flow.pk
    else:
        create_flow(flow, events)
    enqueue_run(flow.pk)


def load(flow_id: int) -> Flow | None:
    started = getattr(_inline, "flow", None)
    if started is not None and started.pk == flow_id:
        return started
    return load_flow(flow_id)


def enqueue_run(flow_id: int) -> None:
    """Queue `run_flow` once the current transaction (if any) commits."""
    dispatch.run_flow(flow_id)


def script_for(flow: Flow) -> type[scripts.Task]:
    step = flow.steps[flow.position]
    return scripts.get_script(step["script"])


def build_task(flow: Flow, cls: type[scripts.Task]) -> scripts.Task:
    step = flow.steps[flow.position]
    return cls(
        flow=flow,
        user=flow.owner,
        position=flow.position,
        input=flow.input if flow.has_input else None,
        # Read when the step first looks at them (most never do), not at every step.
        results=ResultsView(lambda: flow.stored_results, codec.decode, flow.position),
        data=flow.data,
        params=dict(step.get("params") or {}),
        attempt=flow.attempt,
        idempotency_key=retries.idempotency_key(flow),
    )


def time_limit(flow: Flow, cls: type[scripts.Task] | None, position: int | None = None) -> float:
    """Seconds one attempt of the step at `position` may take (0: no limit): the routine
    step's override, else its script's."""
    position = flow.position if position is None else position
    overrides = flow.steps[position].get("overrides") if position < flow.length else None
    if overrides and "time_limit" in overrides:
        return float(overrides["time_limit"] or 0)
    return float(getattr(cls, "time_limit", None) or 0)


def perform(flow: Flow, cls: type[scripts.Task], method: str = "perform") -> core.Outcome:
    """Perform the step's `method` and interpret it; an attempt that took longer than the
    step's time limit failed, whatever it returned (its outcome is discarded)."""
    task = build_task(flow, cls)
    limit = time_limit(flow, cls)
    began = time.monotonic()
    outcome = core.perform_script(getattr(task, method))
    took = time.monotonic() - began
    if limit and took > limit:
        return _too_long(limit, took)
    return outcome


def _too_long(limit: float, took: float | None = None) -> core.Outcome:
    spent = f" (it took {took:.3g} s)" if took is not None else ""
    return core.Outcome(
        core.Kind.FAIL,
        reason=f"took longer than {limit:g} s{spent}; its outcome is discarded",
        error_type=TimeLimitExceeded,
    )


def commit_outcome(
    flow: Flow,
    result: core.Outcome,
    *,
    expect_state: str,
    in_loop: bool = False,
    resume_by_hook: bool = False,
    retryable: bool = True,
) -> core.Decision | None:
    """Write what `result` makes of the flow, in one transaction with its events.

    A flow that moves on to a non-blocking step has that step's job queued by the same write.
    One that moves on to a blocking step stays RUNNING when `in_loop` (the blocking loop goes
    on), else it becomes PENDING and is resumed by `run_flow` (queued after the commit, or by
    the post-execute hook when `resume_by_hook`). A failed attempt that its step's retry
    policy retries (`retryable`: a step failure, not a timed-out wait) goes on at once or
    becomes RETRYING until its due time. Returns the decision, or None when the flow
    changed meanwhile: the outcome is then discarded, never recorded twice."""
    performed = flow.position
    assignees: tuple[list[int], list[int]] = ([], [])
    if result.kind is core.Kind.WAIT:
        try:
            assignees = humans.resolve_assignees(result.assign_to)
        except ValueError as exc:
            result = core.Outcome(core.Kind.FAIL, reason=str(exc))
    decision = core.decide(performed, flow.length, result)
    # A script's own words, stored as every database can (NUL characters escaped, the
    # reason cut to its column).
    wait_reason = storable_text(decision.wait_reason, _WAIT_REASON_LENGTH)
    error = storable_text(decision.error)
    changes: dict[str, Any] = {
        "state": decision.state,
        "position": decision.position,
        "wait_reason": wait_reason,
        "error": error,
        "traceback": storable_text(decision.traceback),
        "input": None,
        "has_input": False,
        "job_id": "",
        "started_position": None,
        "lease_until": None,
        "step_deadline": None,
    }
    if decision.state == FlowState.RUNNING and decision.position != performed:
        changes.update(attempt=1, visit_key=retries.new_visit_key())  # a new step visit
    if decision.state in FINISHED:
        changes["finished"] = timezone.now()
    waiting = decision.state == FlowState.WAITING
    if waiting:
        changes.update(humans.wait_changes(flow, decision.timeout, _script_at(flow, performed)))
    elif flow.deadline is not None or flow.remind_at is not None:
        changes.update(deadline=None, remind_at=None)
    events: list[tuple[str, dict[str, Any]]] = []
    if decision.store_result:
        stored, text = codec.encoded(decision.result)
        changes["stored_results"] = ItemAt(performed, stored, text)  # this step's row alone
        events.append(
            ("step.completed", {"data": {"step": performed, "result": codec.display(stored)}})
        )
    if decision.event and decision.event != "step.completed":
        message = wait_reason or error
        data: dict[str, Any] = {"step": performed}
        if waiting and changes.get("deadline"):
            data["deadline"] = changes["deadline"].isoformat()
        if waiting and (assignees[0] or assignees[1]):
            data["assignees"] = {"users": assignees[0], "groups": assignees[1]}
        events.append((decision.event, {"message": message, "data": data}))
    if result.kind is core.Kind.FAIL and retryable:
        retrying = _retry_plan(flow, performed, result, changes, events)
        if retrying is not None:
            decision = retrying
    job = None
    if decision.state == FlowState.RUNNING:
        job = _plan_next(flow, decision.position, changes, events, in_loop)
    if waiting:  # the wait's assignees and notifications in the same transaction
        with transaction.atomic():
            written = write_flow(flow, changes, events, expect_state=expect_state)
            if written:
                humans.record_wait(flow, *assignees, reason=wait_reason)
    else:  # the hot path: one transaction of write_flow's own, no savepoint
        written = write_flow(flow, changes, events, expect_state=expect_state, stepping=in_loop)
    if not written:
        logger.info(
            "flow %s changed while step %s ran; its outcome is discarded", flow.pk, performed
        )
        return None
    if job is not None:
        dispatch.perform_offloaded(flow.pk, flow.version, job)
    elif flow.state == FlowState.PENDING and not resume_by_hook:
        enqueue_run(flow.pk)
    return decision


def _retry_plan(
    flow: Flow,
    performed: int,
    result: core.Outcome,
    changes: dict[str, Any],
    events: list[tuple[str, dict[str, Any]]],
) -> core.Decision | None:
    """When the step's policy retries this failed attempt: the failed attempt's event, and
    the flow either on again at once (RUNNING) or RETRYING until its due time."""
    policy = retries.step_policy(flow, performed)
    if policy is None or not policy.retries_after(flow.attempt, result.error_type):
        return None
    error = storable_text(result.reason)
    delay = policy.delay(flow.attempt)
    following = flow.attempt + 1
    data: dict[str, Any] = {
        "step": performed,
        "attempt": flow.attempt,
        "attempts": policy.attempts,
        "error": error,
    }
    changes.update(attempt=following, finished=None)
    if delay <= 0:
        data["retry"] = "now"
        events[:] = [("step.attempt_failed", {"message": error, "data": data})]
        changes.update(state=FlowState.RUNNING, error="", traceback="")
        return core.Decision(FlowState.RUNNING, performed, False)
    due = timezone.now() + timedelta(seconds=delay)
    data["retry_at"] = due.isoformat()
    events[:] = [("step.attempt_failed", {"message": error, "data": data})]
    changes.update(state=FlowState.RETRYING, retry_at=due, error=error)
    return core.Decision(FlowState.RETRYING, performed, False)


def _script_at(flow: Flow, position: int) -> type[scripts.Task] | None:
    try:
        return scripts.get_script(flow.steps[position]["script"])
    except (LookupError, IndexError):
        return None


def _plan_next(
    flow: Flow,
    position: int,
    changes: dict[str, Any],
    events: list[tuple[str, dict[str, Any]]],
    in_loop: bool,
) -> str | None:
    """Fill in how the flow continues at `position`; returns the id of the offloaded job to
    queue (it runs on the version the write is about to make)."""
    try:
        cls = scripts.get_script(flow.steps[position]["script"])
    except LookupError:
        cls = None  # the runner fails the flow on it with a clear error
    if cls is not None and not cls.blocking:
        job = dispatch.new_job_id()
        changes.update(job_id=job, lease_until=lease_until(cls.lease_seconds))
        completed = [spec for kind, spec in events if kind == "step.completed"]
        if completed:
            # One event says both (a row less per offloaded step, which is the hot path).
            completed[0]["data"]["offloaded"] = {"step": position, "job": job}
        else:
            events.append(("step.offloaded", {"data": {"step": position, "job": job}}))
        return job
    if in_loop:
        if _lease_holds(flow):
            changes.pop("lease_until", None)  # (SQLite rewrites an index of a column SET)
        else:
            changes["lease_until"] = lease_until()
        limit = time_limit(flow, cls, position)
        if limit:
            changes["step_deadline"] = timezone.now() + timedelta(seconds=limit)
    else:
        changes.update(state=FlowState.PENDING, lease_until=queue_deadline())
    return None


def _lease_holds(flow: Flow) -> bool:
    """Whether a running flow's lease, as its last write left it, may stay as it is for its
    next blocking step: renewed less than `STEPPING_RESOLUTION` ago (a longer lease, a
    step's own, is cut back). Each step thus starts with a whole lease less at most that;
    blocking steps that run on within it leave the lease's index alone."""
    if flow.state != FlowState.RUNNING or flow.lease_until is None:
        return False
    left = (flow.lease_until - timezone.now()).total_seconds()
    lease = config.seconds("LEASE_SECONDS")
    return lease - STEPPING_RESOLUTION.total_seconds() < left <= lease


def fail_unknown_script(flow: Flow, expect_state: str, error: LookupError) -> None:
    failure = core.Outcome(core.Kind.FAIL, reason=str(error))
    commit_outcome(flow, failure, expect_state=expect_state, retryable=False)


def run_flow(flow_id: int) -> None:
    """Claim a PENDING flow and run it: consecutive blocking steps in one loop; a non-blocking
    step is offloaded to its own Huey task, whose completion resumes the flow."""
    flow = _claim(flow_id)
    if flow is None:
        return  # already claimed by another worker, or moved on: nothing to do
    job = flow.job_id or None
    if job is not None:
        dispatch.perform_offloaded(flow.pk, flow.version, job)
        return
    with holding(flow.pk):
        while flow.state == FlowState.RUNNING and not flow.job_id:
            try:
                cls = script_for(flow)
            except LookupError as error:
                fail_unknown_script(flow, FlowState.RUNNING, error)
                return
            if not cls.blocking:
                offload(flow, cls)
                return
            if not cls.rerunnable and not mark_started(flow, cls):
                return
            outcome = perform(flow, cls)
            if commit_outcome(flow, outcome, expect_state=FlowState.RUNNING, in_loop=True) is None:
                return


def _claim(flow_id: int) -> Flow | None:
    """The flow `flow_id` claimed by this worker to run its steps (RUNNING, leased, its
    `flow.running` event), planned for its first step (a time limit's deadline; an offloaded
    step's job, in `job_id`: the caller queues it); None if it is not PENDING."""
    started = getattr(_inline, "flow", None)
    if started is not None and started.pk == flow_id and _inline.claimed == flow_id:
        _inline.claimed = None
        return started  # claimed by its creation, just now (`create_and_run`)
    claim: dict[str, Any] = {"state": FlowState.RUNNING, "lease_until": lease_until(), "job_id": ""}
    events: list[tuple[str, dict[str, Any]]] = [("flow.running", {})]
    if claims_at_once() and (started is None or started.pk != flow_id):
        # PostgreSQL: claimed and read in one round trip, then planned. A first step with a
        # time limit or offloaded takes a second write, as reading it first did.
        flow = claim_pending(flow_id, claim, events)
        if flow is None:
            return None
        plan: dict[str, Any] = {}
        more: list[tuple[str, dict[str, Any]]] = []
        _plan_next(flow, flow.position, plan, more, in_loop=True)
        if set(plan) - {"lease_until"} and not write_flow(
            flow, plan, more, expect_state=FlowState.RUNNING
        ):
            return None
        return flow
    flow = load(flow_id)
    if flow is None or flow.state != FlowState.PENDING:
        return None
    # A first step that is offloaded is queued by the claim itself: one write instead of two.
    _plan_next(flow, flow.position, claim, events, in_loop=True)
    return flow if write_flow(flow, claim, events, expect_state=FlowState.PENDING) else None


def mark_started(flow: Flow, cls: type[scripts.Task]) -> bool:
    """Record that a step which must never run twice has begun."""
    changes = {"started_position": flow.position, "lease_until": lease_until(cls.lease_seconds)}
    return write_flow(flow, changes, expect_state=FlowState.RUNNING)


def offload(flow: Flow, cls: type[scripts.Task]) -> None:
    """Hand the current (non-blocking) step to its own Huey task."""
    job = dispatch.new_job_id()
    changes = {"job_id": job, "lease_until": lease_until(cls.lease_seconds)}
    event = ("step.offloaded", {"data": {"step": flow.position, "job": job}})
    if write_flow(flow, changes, [event], expect_state=FlowState.RUNNING):
        dispatch.perform_offloaded(flow.pk, flow.version, job)


def take_charge(flow: Flow) -> bool:
    """Record that this process performs the flow's offloaded step, so that the flow is
    handed on at once if this process dies. Like a lease renewal it leaves the version alone
    (the job's own commit is checked against it). False if the flow changed meanwhile."""
    me = worker_id()
    try:
        limit = time_limit(flow, script_for(flow))
    except LookupError:
        limit = 0
    if flow.worker == me and not limit:
        return True
    changes: dict[str, Any] = {"worker": me}
    if limit:  # the offloaded step's time limit counts from now, when it starts
        changes["step_deadline"] = timezone.now() + timedelta(seconds=limit)
    taken = Flow.objects.filter(pk=flow.pk, version=flow.version, state=FlowState.RUNNING)
    if not taken.update(**changes):
        return False
    for name, value in changes.items():
        setattr(flow, name, value)
    return True


def perform_offloaded(flow_id: int, version: int) -> bool:
    """Body of an offloaded job: perform the step and commit its outcome; a following
    non-blocking step is queued by the same commit. Returns True when the flow is left
    PENDING for the post-execute hook to resume."""
    flow = load(flow_id)
    if flow is None or flow.version != version or flow.state != FlowState.RUNNING:
        return False  # killed, moved or swept meanwhile
    if not take_charge(flow):
        return False
    with holding(flow.pk):
        try:
            cls = script_for(flow)
        except LookupError as error:
            fail_unknown_script(flow, FlowState.RUNNING, error)
            return False
        if not cls.rerunnable and not mark_started(flow, cls):
            return False
        outcome = perform(flow, cls)
        decision = commit_outcome(
            flow, outcome, expect_state=FlowState.RUNNING, resume_by_hook=True
        )
    return decision is not None and flow.state == FlowState.PENDING


def recheck(flow: Flow) -> bool:
    """Call the waiting step's `check()`; commit unless it still waits. True if it moved."""
    try:
        cls = script_for(flow)
    except LookupError:
        return False
    if not cls.checks_while_waiting():
        return False
    result = perform(flow, cls, "check")
    if result.kind is core.Kind.WAIT:
        return False
    return commit_outcome(flow, result, expect_state=FlowState.WAITING) is not None


# --- deadlines ---------------------------------------------------------------------------------


def fire_deadlines(now: Any = None, limit: int = 200) -> int:
    """Perform `on_timeout()` of every waiting step whose deadline has passed (or fail its
    flow as timed out); returns how many fired. Input that arrived first wins: a flow that
    stopped waiting meanwhile is left alone, and with several consumers each deadline fires
    in exactly one of them (the claim is a compare-and-set)."""
    now = now or timezone.now()
    due = Flow.objects.filter(state=FlowState.WAITING, deadline__lte=now).order_by("deadline")
    fired = 0
    for flow_id in list(due.values_list("pk", flat=True)[:limit]):
        if fire_deadline(flow_id, now):
            fired += 1
    return fired


def fire_deadline(flow_id: int, now: Any = None) -> bool:
    now = now or timezone.now()
    flow = load(flow_id)
    if flow is None or flow.state != FlowState.WAITING:
        return False
    deadline = flow.deadline
    if deadline is None or deadline > now:
        return False
    cls = _script_at(flow, flow.position)
    step = flow.position
    data = {"step": step, "deadline": deadline.isoformat()}
    claim = {
        "state": FlowState.RUNNING,
        "lease_until": lease_until(cls.lease_seconds if cls else None),
        "deadline": None,
        "remind_at": None,
        "wait_reason": "",
    }
    event = ("step.timed_out", {"data": data, "message": "no input by the deadline"})
    if not write_flow(flow, claim, [event], expect_state=FlowState.WAITING):
        return False  # input (or an operator) got there first, or another consumer did
    with holding(flow.pk):
        if cls is not None and cls.handles_timeout():
            outcome = perform(flow, cls, "on_timeout")
        else:
            name = flow.steps[step].get("name", f"step {step + 1}")
            outcome = core.Outcome(
                core.Kind.FAIL,
                reason=(
                    f"timed out: no input for step {step + 1} ({name}) by its deadline, "
                    f"{deadline:%Y-%m-%d %H:%M:%S} UTC; resume the flow to ask again"
                ),
            )
        commit_outcome(flow, outcome, expect_state=FlowState.RUNNING, retryable=False)
    return True


# --- retries and time limits ---------------------------------------------------------------


def fire_retries(now: Any = None, limit: int = 500) -> int:
    """Queue the next attempt of every RETRYING flow whose due time has come; returns how
    many. The due time is in the database, so a restart loses none, and each fires in
    exactly one consumer (a compare-and-set from RETRYING)."""
    now = now or timezone.now()
    due = Flow.objects.filter(state=FlowState.RETRYING, retry_at__lte=now).order_by("retry_at")
    fired = 0
    for flow in due.select_related("owner")[:limit]:
        status = retries.retry_status(flow) or {"attempt": flow.attempt, "attempts": "?"}
        data = {"step": flow.position, "attempt": flow.attempt, "attempts": status["attempts"]}
        event = (
            "step.retrying",
            {"message": f"attempt {flow.attempt} of {status['attempts']}", "data": data},
        )
        changes = {"state": FlowState.PENDING, "retry_at": None, "lease_until": queue_deadline()}
        if write_flow(flow, changes, [event], expect_state=FlowState.RETRYING):
            enqueue_run(flow.pk)
            fired += 1
    return fired


def expire_time_limits(now: Any = None, limit: int = 500) -> int:
    """Fail the attempt of every running step past its time limit ("took longer than N s";
    retries apply). The step's own late outcome then finds the flow changed and is
    discarded. Returns how many expired."""
    now = now or timezone.now()
    over = Flow.objects.filter(state=FlowState.RUNNING, step_deadline__lte=now)
    expired = 0
    for flow_id in list(over.order_by("step_deadline").values_list("pk", flat=True)[:limit]):
        flow = load(flow_id)
        if flow is None or flow.state != FlowState.RUNNING or flow.step_deadline is None:
            continue
        if flow.step_deadline > now:
            continue
        try:
            seconds = time_limit(flow, script_for(flow))
        except LookupError:
            seconds = 0
        outcome = _too_long(seconds or 0)
        if commit_outcome(flow, outcome, expect_state=FlowState.RUNNING) is not None:
            expired += 1
    return expired
