"""The engine's service functions: the studio's views, the REST API and the tests all call
these, and nothing else changes a flow's state from outside the runner.

Every action checks that the user may act on the flow (its owner, staff, or a user with the
`engine.operate_flow` permission), writes with a compare-and-set plus an event naming the
acting user, and re-queues the flow once the write commits. A call that does not fit the
flow's state raises `FlowStateError` with a message the user can act on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from engine import codec
from engine.core.errors import FlowStateError, StaleFlowError
from engine.core.flows import script as script_registry
from engine.jsonsafe import check_text, ensure_json
from engine.models import Flow, Routine, RoutineStep, Task
from engine.runner import enqueue_run, recheck
from engine.status import FlowState
from engine.store import EventSpec, queue_deadline, write_flow
from engine.sweep import sweep

__all__ = [
    "FlowStateError",
    "StaleFlowError",
    "can_operate",
    "create_routine",
    "kill_flow",
    "move_to",
    "push_input",
    "recheck_waiting",
    "resume",
    "retry",
    "skip",
    "start_flow",
    "sweep",
    "visible_flows",
]

_ATTEMPTS = 5  # re-reads when another writer slipped in between read and write


# --- access ----------------------------------------------------------------------------------


def can_see_all(user: Any) -> bool:
    return bool(user and (user.is_staff or user.has_perm("engine.operate_flow")))


def can_operate(user: Any, flow: Flow) -> bool:
    """Whether `user` may see and act on `flow`."""
    if user is None or not user.is_authenticated:
        return False
    return flow.owner_id == user.pk or can_see_all(user)


def visible_flows(user: Any) -> Any:
    """The flows `user` may see."""
    flows = Flow.objects.select_related("routine", "owner")
    return flows if can_see_all(user) else flows.filter(owner_id=user.pk)


def _require(user: Any, flow: Flow) -> None:
    if not can_operate(user, flow):
        raise PermissionDenied("you may not act on this flow")


# --- routines and flows ------------------------------------------------------------------------


@transaction.atomic
def create_routine(
    name: str,
    scripts: Sequence[str | dict[str, Any]],
    owner: Any = None,
    description: str = "",
) -> Routine:
    """A routine whose steps are the named registered scripts, in order. An item may also be
    a dict ``{"script": name, "label": ..., "params": {...}}``."""
    if not name or not str(name).strip():
        raise ValueError("a routine needs a name")
    check_text(name, "name")
    check_text(description, "description")
    steps = [item if isinstance(item, dict) else {"script": item} for item in scripts]
    if not steps:
        raise ValueError("a routine needs at least one step")
    known = script_registry.registry()
    for index, step in enumerate(steps):
        if step.get("script") not in known:
            raise ValueError(
                f"step {index + 1}: {step.get('script')!r} is not a registered Task script"
            )
        check_text(step.get("label", ""), f"step {index + 1} label")
        ensure_json(step.get("params") or {}, f"step {index + 1} params")
    routine = Routine.objects.create(name=str(name).strip(), owner=owner, description=description)
    for order, step in enumerate(steps):
        cls = known[step["script"]]
        task, _ = Task.objects.get_or_create(script=cls.name, name=cls.label, params={})
        RoutineStep.objects.create(
            routine=routine,
            order=order,
            task=task,
            label=step.get("label", ""),
            params=step.get("params") or {},
        )
    return routine


def start_flow(routine: Routine | int, user: Any, data: dict[str, Any] | None = None) -> Flow:
    """Start `routine` for `user`. The flow pins the routine's steps as they are now."""
    if user is None or not user.is_authenticated:
        raise PermissionDenied("sign in to start a flow")
    if not isinstance(routine, Routine):
        routine = Routine.objects.get(pk=routine)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError("a flow's data must be a JSON object")
    ensure_json(data, "data")
    steps = routine.snapshot()
    if not steps:
        raise FlowStateError(f"routine {routine.name!r} has no steps; add one before starting it")
    known = script_registry.registry()
    missing = [step["script"] for step in steps if step["script"] not in known]
    if missing:
        raise FlowStateError(f"routine {routine.name!r} uses unregistered scripts: {missing}")
    with transaction.atomic():
        flow = Flow.objects.create(
            routine=routine,
            routine_version=routine.version,
            steps=steps,
            owner=user,
            data=data,
            lease_until=queue_deadline(),
        )
        created = ("flow.created", {"actor": user, "data": {"routine": routine.name}})
        write_flow(flow, {}, [created])
        enqueue_run(flow.pk)
    flow.refresh_from_db()
    return flow


# --- actions -----------------------------------------------------------------------------------

Build = Callable[[Flow], tuple[dict[str, Any], list[EventSpec], bool]]


def _act(
    flow_ref: Flow | int,
    user: Any,
    allowed: set[str],
    refuse: Callable[[Flow], str],
    build: Build,
    version: int | None = None,
) -> Flow:
    """Read the flow, check access and state, write `build(flow)` with a compare-and-set.

    `version` (the version the caller saw, e.g. on its page) makes a changed flow an error
    (`StaleFlowError`) instead of re-reading it."""
    flow_id = flow_ref.pk if isinstance(flow_ref, Flow) else int(flow_ref)
    for _ in range(_ATTEMPTS):
        flow = Flow.objects.select_related("owner").filter(pk=flow_id).first()
        if flow is None:
            raise Flow.DoesNotExist(f"flow {flow_id} does not exist")
        _require(user, flow)
        if version is not None and flow.version != version:
            raise StaleFlowError(
                f"flow {flow_id} changed since you loaded it (it is now {flow.state} at step "
                f"{flow.position + 1}); reload and try again"
            )
        if flow.state not in allowed:
            raise FlowStateError(refuse(flow))
        changes, events, requeue = build(flow)
        with transaction.atomic():
            if write_flow(flow, changes, events, expect_state=flow.state):
                if requeue:
                    enqueue_run(flow.pk)
                break
        if version is not None:
            raise StaleFlowError(f"flow {flow_id} changed while you acted; reload and try again")
    else:
        raise StaleFlowError(f"flow {flow_id} keeps changing; try again")
    flow.refresh_from_db()
    if isinstance(flow_ref, Flow):
        flow_ref.refresh_from_db()
    return flow


def _restart_changes(position: int) -> dict[str, Any]:
    """Fields of a flow that is to (re)run from `position` at once."""
    return {
        "state": FlowState.PENDING,
        "position": position,
        "wait_reason": "",
        "error": "",
        "traceback": "",
        "input": None,
        "has_input": False,
        "job_id": "",
        "started_position": None,
        "finished": None,
        "lease_until": queue_deadline(),
    }


def _where(flow: Flow) -> str:
    return f"flow {flow.pk} is {flow.state} at step {flow.position + 1} of {flow.length}"


def push_input(flow: Flow | int, data: Any, user: Any, version: int | None = None) -> Flow:
    """Give a WAITING flow the input its step waits for; the step is performed again and sees
    it as `self.input`."""
    ensure_json(data, "input")

    def build(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        changes = {**_restart_changes(flow.position), "input": data, "has_input": True}
        event = ("input.pushed", {"actor": user, "data": {"step": flow.position, "input": data}})
        return changes, [event], True

    return _act(
        flow,
        user,
        {FlowState.WAITING},
        lambda f: f"{_where(f)}; input can only be pushed to a waiting flow",
        build,
        version,
    )


def move_to(
    flow: Flow | int, position: int, user: Any, reason: str = "", version: int | None = None
) -> Flow:
    """Move the flow to step `position` (0-based) and run it from there at once."""
    check_text(reason, "reason")
    allowed = {
        FlowState.PENDING,
        FlowState.WAITING,
        FlowState.COMPLETE,
        FlowState.KILLED,
        FlowState.FAILED,
    }

    def build(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        if not isinstance(position, int) or not 0 <= position < flow.length:
            raise FlowStateError(
                f"position {position} is out of range: this flow has steps 0 to {flow.length - 1}"
            )
        data = {"from": flow.position, "to": position, "reason": reason}
        return (
            _restart_changes(position),
            [("manual.move", {"actor": user, "data": data, "message": reason})],
            True,
        )

    return _act(
        flow,
        user,
        allowed,
        lambda f: f"{_where(f)}; a step is running: wait for it or kill the flow first",
        build,
        version,
    )


def retry(flow: Flow | int, user: Any, version: int | None = None) -> Flow:
    """Perform a failed (or killed) flow's current step again."""

    def build(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        data = {"step": flow.position, "error": flow.error}
        return (
            _restart_changes(flow.position),
            [("manual.retry", {"actor": user, "data": data})],
            True,
        )

    return _act(
        flow,
        user,
        {FlowState.FAILED, FlowState.KILLED},
        lambda f: f"{_where(f)}; only a failed or killed flow can be retried",
        build,
        version,
    )


def skip(flow: Flow | int, user: Any, reason: str = "", version: int | None = None) -> Flow:
    """Skip the current step (its result is None) and go on with the next one."""
    check_text(reason, "reason")

    def build(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        results = list(flow.stored_results)
        results.extend([None] * (flow.position + 1 - len(results)))
        results[flow.position] = None
        event = ("manual.skip", {"actor": user, "message": reason, "data": {"step": flow.position}})
        if flow.position + 1 >= flow.length:
            changes = {
                **_restart_changes(flow.position),
                "state": FlowState.COMPLETE,
                "lease_until": None,
                "finished": timezone.now(),
                "stored_results": results,
            }
            return changes, [event, ("flow.complete", {"data": {"step": flow.position}})], False
        return {**_restart_changes(flow.position + 1), "stored_results": results}, [event], True

    return _act(
        flow,
        user,
        {FlowState.WAITING, FlowState.FAILED, FlowState.KILLED, FlowState.PENDING},
        lambda f: (
            f"{_where(f)}; a running step cannot be skipped, and a complete flow has "
            "nothing left to skip"
        ),
        build,
        version,
    )


def kill_flow(flow: Flow | int, user: Any, reason: str = "", version: int | None = None) -> Flow:
    """End the flow as KILLED; a step still running has its outcome discarded."""
    check_text(reason, "reason")

    def build(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        changes = {
            "state": FlowState.KILLED,
            "error": reason or f"killed by {user}",
            "wait_reason": "",
            "lease_until": None,
            "job_id": "",
            "finished": timezone.now(),
        }
        data = {"step": flow.position, "reason": reason}
        return changes, [("manual.kill", {"actor": user, "message": reason, "data": data})], False

    return _act(
        flow,
        user,
        {FlowState.PENDING, FlowState.RUNNING, FlowState.WAITING, FlowState.FAILED},
        lambda f: f"{_where(f)}; it has already ended",
        build,
        version,
    )


def resume(flow: Flow | int, user: Any, version: int | None = None) -> Flow:
    """Run a waiting, killed or failed flow again from its current step (a waiting step is
    performed again without input)."""

    def build(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        data = {"step": flow.position, "was": flow.state}
        return (
            _restart_changes(flow.position),
            [("manual.resume", {"actor": user, "data": data})],
            True,
        )

    return _act(
        flow,
        user,
        {FlowState.WAITING, FlowState.KILLED, FlowState.FAILED},
        lambda f: f"{_where(f)}; only a waiting, killed or failed flow can be resumed",
        build,
        version,
    )


def recheck_waiting(limit: int = 1000) -> int:
    """Call `check()` (or `pickup()`) of every waiting step that defines one; the flows whose
    check no longer waits move on. Returns how many moved."""
    moved = 0
    waiting = Flow.objects.select_related("owner").filter(state=FlowState.WAITING)
    for flow in waiting.order_by("updated")[:limit]:
        if recheck(flow):
            moved += 1
    return moved


def results_for_display(flow: Flow) -> list[Any]:
    """Step results as the studio shows them (pickled values as their repr)."""
    stored = list(flow.stored_results) + [None] * (flow.length - len(flow.stored_results))
    return [codec.display(item) for item in stored]


from engine.ltm_service import (  # noqa: E402,F401  (LTM runs: start, fire, retry, kill, load)
    fire_transition,
    kill_ltm,
    load_ltm,
    retry_ltm,
    start_ltm,
    visible_ltm_runs,
)
