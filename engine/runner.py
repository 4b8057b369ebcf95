"""Running a flow: claim it, perform its steps, commit each outcome, hand on what is left.

Every write goes through `engine.store.write_flow` (compare-and-set on the flow's version), so
two workers never commit the same step twice: a step may be *performed* again after a crash,
but its result is *recorded* once. No transaction is open while a script performs.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from engine import codec
from engine.core import outcome as core
from engine.core import script as scripts
from engine.models import Flow
from engine.status import FINISHED, FlowState
from engine.store import lease_until, write_flow

logger = logging.getLogger(__name__)


def _tasks() -> Any:
    from engine import tasks  # the Huey tasks call back into this module

    return tasks


def load(flow_id: int) -> Flow | None:
    return Flow.objects.select_related("owner").filter(pk=flow_id).first()


def enqueue_run(flow_id: int) -> None:
    """Queue `run_flow` once the current transaction (if any) commits."""
    transaction.on_commit(lambda: _tasks().run_flow_task(flow_id))


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
        results=flow.results[: flow.position],
        data=flow.data,
        params=dict(step.get("params") or {}),
    )


def perform(flow: Flow, cls: type[scripts.Task], method: str = "perform") -> core.Outcome:
    task = build_task(flow, cls)
    return core.perform_script(getattr(task, method))


def commit_outcome(
    flow: Flow,
    result: core.Outcome,
    *,
    expect_state: str,
    then: str = FlowState.RUNNING,
) -> core.Decision | None:
    """Write what `result` makes of the flow. `then` is the state a flow that moves on is left
    in: RUNNING inside the blocking loop, PENDING (and queued) elsewhere. Returns the decision,
    or None when the flow changed meanwhile (the outcome is then discarded)."""
    performed = flow.position
    decision = core.decide(performed, flow.length, result)
    state = decision.state
    if state == FlowState.RUNNING:
        state = then
    changes: dict[str, Any] = {
        "state": state,
        "position": decision.position,
        "wait_reason": decision.wait_reason,
        "error": decision.error,
        "traceback": decision.traceback,
        "input": None,
        "has_input": False,
        "job_id": "",
        "started_position": None,
        "lease_until": lease_until() if state in (FlowState.RUNNING, FlowState.PENDING) else None,
    }
    if state in FINISHED:
        changes["finished"] = timezone.now()
    events: list[tuple[str, dict[str, Any]]] = []
    if decision.store_result:
        stored = codec.encode(decision.result)
        results = list(flow.stored_results)
        results.extend([None] * (performed + 1 - len(results)))
        results[performed] = stored
        changes["stored_results"] = results
        events.append(
            ("step.completed", {"data": {"step": performed, "result": codec.display(stored)}})
        )
    if decision.event and decision.event != "step.completed":
        message = decision.wait_reason or decision.error
        events.append((decision.event, {"message": message, "data": {"step": performed}}))
    if not write_flow(flow, changes, events, expect_state=expect_state):
        logger.info("flow %s changed while step %s ran; its outcome is discarded", flow.pk, performed)
        return None
    if state == FlowState.PENDING:
        enqueue_run(flow.pk)
    return decision


def fail_unknown_script(flow: Flow, expect_state: str, error: LookupError) -> None:
    failure = core.Outcome(core.Kind.FAIL, reason=str(error))
    commit_outcome(flow, failure, expect_state=expect_state)


def run_flow(flow_id: int) -> None:
    """Claim a PENDING flow and run it: consecutive blocking steps in one loop; a non-blocking
    step is offloaded to its own Huey task, whose completion resumes the flow."""
    flow = load(flow_id)
    if flow is None or flow.state != FlowState.PENDING:
        return  # already claimed by another worker, or moved on: nothing to do
    claim = {"state": FlowState.RUNNING, "lease_until": lease_until(), "job_id": ""}
    if not write_flow(flow, claim, [("flow.running", {})], expect_state=FlowState.PENDING):
        return
    while flow.state == FlowState.RUNNING:
        try:
            cls = script_for(flow)
        except LookupError as error:
            fail_unknown_script(flow, FlowState.RUNNING, error)
            return
        if not cls.blocking:
            offload(flow)
            return
        if not cls.rerunnable and not mark_started(flow, cls):
            return
        if cls.lease_seconds:
            if not write_flow(flow, {"lease_until": lease_until(cls.lease_seconds)}):
                return
        if commit_outcome(flow, perform(flow, cls), expect_state=FlowState.RUNNING) is None:
            return


def mark_started(flow: Flow, cls: type[scripts.Task]) -> bool:
    """Record that a step which must never run twice is about to run."""
    changes = {"started_position": flow.position, "lease_until": lease_until(cls.lease_seconds)}
    return write_flow(flow, changes, expect_state=FlowState.RUNNING)


def offload(flow: Flow) -> None:
    """Hand the current (non-blocking) step to its own Huey task."""
    task = _tasks().perform_offloaded_task.s(flow.pk, flow.version + 1)
    cls = script_for(flow)
    changes = {"job_id": task.id, "lease_until": lease_until(cls.lease_seconds)}
    event = ("step.offloaded", {"data": {"step": flow.position, "job": task.id}})
    if write_flow(flow, changes, [event], expect_state=FlowState.RUNNING):
        huey = _tasks().HUEY
        transaction.on_commit(lambda: huey.enqueue(task))


def perform_offloaded(flow_id: int, version: int) -> None:
    """Body of the offloaded job: perform the step, commit its outcome, leave the flow PENDING
    for the post-execute hook to resume."""
    flow = load(flow_id)
    if flow is None or flow.version != version or flow.state != FlowState.RUNNING:
        return  # killed, moved or swept meanwhile
    try:
        cls = script_for(flow)
    except LookupError as error:
        fail_unknown_script(flow, FlowState.RUNNING, error)
        return
    if not cls.rerunnable and not mark_started(flow, cls):
        return
    commit_outcome(flow, perform(flow, cls), expect_state=FlowState.RUNNING, then=FlowState.PENDING)


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
    return (
        commit_outcome(flow, result, expect_state=FlowState.WAITING, then=FlowState.PENDING)
        is not None
    )
