"""The flows slice's service: start a flow, push input to a waiting one, and the operator's
overrides (move, retry, skip, kill, resume). `engine.api` is the door to these.

Every action checks that the user may act on the flow (`engine.access`), that the flow's
state is in the action's row of `engine.flows.status.ACTIONS`, and writes with a
compare-and-set plus an event naming the acting user; a flow that is to run again is queued
once the write commits. A call that does not fit the flow's state raises `FlowStateError`
with a message the user can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.utils import timezone

from engine import access
from engine.core import jsondiff
from engine.core.errors import FlowStateError, StaleFlowError
from engine.core.flows import script as script_registry
from engine.flows import codec, humans
from engine.flows.models import Flow, FlowEvent, Routine
from engine.flows.models import latest_events as _latest_events
from engine.flows.retries import new_visit_key
from engine.flows.runner import create_and_run, enqueue_run, recheck, runs_at_once, starting
from engine.flows.status import ACTIONS, FlowState, actions_for
from engine.flows.store import (
    EventSpec,
    ItemAt,
    creating,
    load_flow,
    routine_steps,
    write_flow,
)
from engine.jsonsafe import check_text, ensure_json
from engine.leases import queue_deadline

_ATTEMPTS = 5  # re-reads when another writer slipped in between read and write


def can_operate(user: Any, flow: Flow) -> bool:
    """Whether `user` may see and act on `flow`."""
    return access.may_act(user, flow.owner_id)


def visible_flows(user: Any) -> QuerySet[Flow]:
    """The flows `user` may see."""
    return access.visible(user, Flow.objects.select_related("routine", "owner"))


def read_flow(flow_id: int) -> Flow | None:
    """The flow with its owner, its routine and its wait's assignees (None: no such flow),
    in one statement written once: what a request about one flow reads first, before it
    checks who may see it and answer it."""
    return load_flow(flow_id, with_routine=True)


def can_see_flow(user: Any, flow: Flow) -> bool:
    """Whether `user` may see `flow`'s page: its owner and operators, and the assignees of
    its wait while it waits for them."""
    return humans.may_see(user, flow)


def available_actions(flow: Flow, user: Any) -> list[str]:
    """What `user` may do to `flow` as it is now: "input" (`push_input`) and the overrides
    "move", "retry", "skip", "kill", "resume" that the flow's state admits: exactly what the
    calls below accept (they check again: the flow may change in between). An assignee who
    is not the owner may only answer; nothing for a user who may not act on the flow."""
    actions = actions_for(flow.state) if can_operate(user, flow) else []
    answer = "input" in actions_for(flow.state) and humans.may_answer(user, flow)
    actions = [a for a in actions if a != "input"]
    return ["input", *actions] if answer else actions


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
    steps = routine_steps(routine.pk)
    if not steps:
        raise FlowStateError(f"routine {routine.name!r} has no steps; add one before starting it")
    known = script_registry.registry()
    missing = [step["script"] for step in steps if step["script"] not in known]
    if missing:
        raise FlowStateError(f"routine {routine.name!r} uses unregistered scripts: {missing}")
    flow = Flow(
        routine=routine,
        routine_version=routine.version,
        steps=steps,
        owner=user,
        data=data,
        lease_until=queue_deadline(),
        visit_key=new_visit_key(),
    )
    created = ("flow.created", {"actor": user, "data": {"routine": routine.name}})
    at_once = runs_at_once()
    with starting(flow), creating():
        create_and_run(flow, [created], at_once=at_once)
    # As it is now: as committed, or as its run left it when the queue ran it inline (at the
    # commit, in this thread): the run writes through this very object.
    return flow


# --- actions -----------------------------------------------------------------------------------

Build = Callable[[Flow], tuple[dict[str, Any], list[EventSpec], bool]]


def _act(
    flow_ref: Flow | int,
    user: Any,
    allowed: frozenset[str],
    refuse: Callable[[Flow], str],
    build: Build,
    version: int | None = None,
    may: Callable[[Any, Flow], bool] | None = None,
) -> Flow:
    """Read the flow, check access and state, write `build(flow)` with a compare-and-set.

    `version` (the version the caller saw, e.g. on its page) makes a changed flow an error
    (`StaleFlowError`) instead of re-reading it. `may` replaces the owner-or-operator rule
    (input: whoever may answer the wait).

    A `Flow` the caller passes is taken as read (a request's view has just read it to check
    that the caller may see it): no second read. The compare-and-set makes that safe: the
    write wins only if the flow is still at the version the caller's object has, so the
    checks and `build` saw the flow as it is. If the object is stale the write loses and the
    flow is read again; if a check or `build` refuses it, the refusal is decided again on
    the flow read afresh. The caller's object is brought up to date at the end (from the
    object written; no `refresh_from_db()`)."""
    flow_id = flow_ref.pk if isinstance(flow_ref, Flow) else int(flow_ref)

    def prepare(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        if may is None:
            access.require(user, flow.owner_id, "flow")
        elif not may(user, flow):
            raise PermissionDenied("you may not answer this flow")
        if version is not None and flow.version != version:
            raise StaleFlowError(
                f"flow {flow_id} changed since you loaded it (it is now {flow.state} at step "
                f"{flow.position + 1}); reload and try again"
            )
        if flow.state not in allowed:
            raise FlowStateError(refuse(flow))
        return build(flow)

    given = flow_ref if isinstance(flow_ref, Flow) else None
    for _ in range(_ATTEMPTS):
        flow = given or _read_for_action(flow_id)
        try:
            changes, events, requeue = prepare(flow)
        except Exception:
            if given is None:
                raise
            flow = _read_for_action(flow_id)  # decided on the flow as it is, not as passed
            changes, events, requeue = prepare(flow)
        given = None
        # The write is its own transaction (on PostgreSQL one statement that commits by
        # itself); the run is queued once it is committed (at once here, or at the end of a
        # caller's transaction). A transaction around it only cost BEGIN and COMMIT trips.
        if write_flow(flow, changes, events, expect_state=flow.state):
            if requeue:
                with starting(flow):  # (a run inline, at the commit, writes through `flow`)
                    enqueue_run(flow.pk)
            break
        if version is not None:
            raise StaleFlowError(f"flow {flow_id} changed while you acted; reload and try again")
    else:
        raise StaleFlowError(f"flow {flow_id} keeps changing; try again")
    # As it is now: as written, or as its run left it when the queue ran it inline (at the
    # commit, in this thread): no read back.
    if isinstance(flow_ref, Flow) and flow_ref is not flow:
        flow_ref.refresh_from(flow)
    return flow


def _read_for_action(flow_id: int) -> Flow:
    flow = load_flow(flow_id, with_routine=True)
    if flow is None:
        raise Flow.DoesNotExist(f"flow {flow_id} does not exist")
    return flow


def _restart_changes(position: int, *, new_visit: bool = False) -> dict[str, Any]:
    """Fields of a flow that is to (re)run from `position` at once. `new_visit`: the flow
    comes to the step anew (moved there, or on to it), so its attempts count from 1 again
    and it gets a new idempotency key; otherwise it is the same visit of the step (input,
    resume, retry) and keeps its key."""
    changes = {
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
        "deadline": None,
        "remind_at": None,
        "retry_at": None,
        "step_deadline": None,
        "attempt": 1,
    }
    if new_visit:
        changes["visit_key"] = new_visit_key()
    return changes


def _edits(
    flow: Flow, position: int, data: Any, params: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An operator's edits of the flow's data and of the params of the step at `position`,
    made as the flow is rerun: (the changes to write, what the event records: each edit as
    a diff). None leaves a thing as it is. Raises ValueError (nothing written) when an edit
    is not a JSON object."""
    changes: dict[str, Any] = {}
    record: dict[str, Any] = {}
    if data is not None:
        if not isinstance(data, dict):
            raise ValueError("a flow's data must be a JSON object")
        ensure_json(data, "data")
        changed = jsondiff.diff(flow.data, data)
        if changed:
            changes["data"] = data
            record["data"] = changed
    if params is not None:
        if not isinstance(params, dict):
            raise ValueError("a step's params must be a JSON object")
        ensure_json(params, "params")
        steps = [dict(step) for step in flow.steps]
        changed = jsondiff.diff(steps[position].get("params") or {}, params)
        if changed:
            steps[position]["params"] = params
            changes["steps"] = steps
            record["params"] = {"step": position, "changes": changed}
    return changes, record


def _edited(
    kind: str, user: Any, data: dict[str, Any], reason: str, record: dict[str, Any], bulk: Any
) -> EventSpec:
    """An override's event: the user, the reason, the edits made with it, its bulk action."""
    message = reason
    if record:
        data = {**data, "edits": record}
        lines = []
        if "data" in record:
            lines.append("data edited:\n" + jsondiff.describe(record["data"]))
        if "params" in record:
            step = record["params"]["step"] + 1
            lines.append(
                f"step {step} params edited:\n" + jsondiff.describe(record["params"]["changes"])
            )
        message = "\n".join(filter(None, [reason, *lines]))
    if bulk is not None:
        data = {**data, "bulk": bulk}
    return (kind, {"actor": user, "data": data, "message": message})


def _where(flow: Flow) -> str:
    return f"flow {flow.pk} is {flow.state} at step {flow.position + 1} of {flow.length}"


def push_input(flow: Flow | int, data: Any, user: Any, version: int | None = None) -> Flow:
    """Give a WAITING flow the input its step waits for; the step is performed again and sees
    it as `self.input`.

    Who may: the wait's assignees (directly or through a group) and operators; the owner
    when nobody is assigned. A step whose script has an `input_form` takes what validates
    with it (its cleaned data, JSON-safe); invalid input raises
    `django.core.exceptions.ValidationError` with the field errors, stores nothing and
    leaves the flow waiting."""
    ensure_json(data, "input")

    def build(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        cleaned = humans.clean_input(flow, data)
        changes = {**_restart_changes(flow.position), "input": cleaned, "has_input": True}
        event_data: dict[str, Any] = {"step": flow.position, "input": cleaned}
        message = ""
        if isinstance(cleaned, dict) and cleaned.get("decision") in ("approve", "reject"):
            event_data["decision"] = cleaned["decision"]
            message = str(cleaned.get("comment") or "")
        event = ("input.pushed", {"actor": user, "data": event_data, "message": message})
        return changes, [event], True

    return _act(
        flow,
        user,
        ACTIONS["input"],
        lambda f: f"{_where(f)}; input can only be pushed to a waiting flow",
        build,
        version,
        may=humans.may_answer,
    )


def move_to(
    flow: Flow | int,
    position: int,
    user: Any,
    reason: str = "",
    version: int | None = None,
    *,
    data: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    bulk: int | None = None,
) -> Flow:
    """Move the flow to step `position` (0-based) and run it from there at once (a new
    visit of that step). `data` replaces the flow's data and `params` the params of the
    step at `position` (the edits, as diffs, are in the event)."""
    check_text(reason, "reason")

    def build(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        if isinstance(position, bool) or not isinstance(position, int):
            raise FlowStateError(f"position {position!r} is not a step number")
        if not 0 <= position < flow.length:
            raise FlowStateError(
                f"position {position} is out of range: this flow has steps 0 to {flow.length - 1}"
            )
        edits, record = _edits(flow, position, data, params)
        info = {"from": flow.position, "to": position, "reason": reason}
        event = _edited("manual.move", user, info, reason, record, bulk)
        return {**_restart_changes(position, new_visit=True), **edits}, [event], True

    return _act(
        flow,
        user,
        ACTIONS["move"],
        lambda f: f"{_where(f)}; a step is running: wait for it or kill the flow first",
        build,
        version,
    )


def retry(
    flow: Flow | int,
    user: Any,
    version: int | None = None,
    *,
    reason: str = "",
    data: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    bulk: int | None = None,
) -> Flow:
    """Perform a failed (or killed) flow's current step again, with its attempts counted
    afresh; a RETRYING flow's next attempt at once ("retry now", its attempt count goes
    on). The same visit of the step: its idempotency key is kept. `data` and `params` edit
    the flow's data and the step's params first (see `move_to`)."""
    check_text(reason, "reason")

    def build(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        edits, record = _edits(flow, flow.position, data, params)
        info = {"step": flow.position, "error": flow.error, "was": flow.state}
        changes = _restart_changes(flow.position)
        if flow.state == FlowState.RETRYING:
            changes["attempt"] = flow.attempt  # the attempt that was due, now
            info["attempt"] = flow.attempt
        event = _edited("manual.retry", user, info, reason, record, bulk)
        return {**changes, **edits}, [event], True

    return _act(
        flow,
        user,
        ACTIONS["retry"],
        lambda f: f"{_where(f)}; only a failed, killed or retrying flow can be retried",
        build,
        version,
    )


def give_up(flow: Flow | int, user: Any, reason: str = "", version: int | None = None) -> Flow:
    """Stop a RETRYING flow's automatic retries: it fails with its last attempt's error (an
    operator may still retry, skip or resume it)."""
    check_text(reason, "reason")

    def build(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        changes = {
            "state": FlowState.FAILED,
            "retry_at": None,
            "lease_until": None,
            "finished": timezone.now(),
            "error": flow.error or "gave up retrying",
        }
        info = {"step": flow.position, "attempt": flow.attempt - 1, "reason": reason}
        event = ("manual.give_up", {"actor": user, "data": info, "message": reason})
        return changes, [event], False

    return _act(
        flow,
        user,
        ACTIONS["give_up"],
        lambda f: f"{_where(f)}; only a flow waiting to retry can give up retrying",
        build,
        version,
    )


def skip(
    flow: Flow | int,
    user: Any,
    reason: str = "",
    version: int | None = None,
    *,
    bulk: int | None = None,
) -> Flow:
    """Skip the current step (its result is None) and go on with the next one."""
    check_text(reason, "reason")

    def build(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        results = ItemAt(flow.position, None)  # the step's row: no result
        event = _edited("manual.skip", user, {"step": flow.position}, reason, {}, bulk)
        if flow.position + 1 >= flow.length:
            changes = {
                **_restart_changes(flow.position),
                "state": FlowState.COMPLETE,
                "lease_until": None,
                "finished": timezone.now(),
                "stored_results": results,
            }
            return changes, [event, ("flow.complete", {"data": {"step": flow.position}})], False
        following = _restart_changes(flow.position + 1, new_visit=True)
        return {**following, "stored_results": results}, [event], True

    return _act(
        flow,
        user,
        ACTIONS["skip"],
        lambda f: (
            f"{_where(f)}; a running step cannot be skipped, and a complete flow has "
            "nothing left to skip"
        ),
        build,
        version,
    )


def kill_flow(
    flow: Flow | int,
    user: Any,
    reason: str = "",
    version: int | None = None,
    *,
    bulk: int | None = None,
) -> Flow:
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
            "retry_at": None,
            "step_deadline": None,
        }
        data = {"step": flow.position, "reason": reason}
        return changes, [_edited("manual.kill", user, data, reason, {}, bulk)], False

    return _act(
        flow,
        user,
        ACTIONS["kill"],
        lambda f: f"{_where(f)}; it has already ended",
        build,
        version,
    )


def resume(
    flow: Flow | int,
    user: Any,
    version: int | None = None,
    *,
    reason: str = "",
    data: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    bulk: int | None = None,
) -> Flow:
    """Run a waiting, killed or failed flow again from its current step (a waiting step is
    performed again without input). `data` and `params` edit the flow's data and the step's
    params first (see `move_to`)."""
    check_text(reason, "reason")

    def build(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        edits, record = _edits(flow, flow.position, data, params)
        info = {"step": flow.position, "was": flow.state}
        event = _edited("manual.resume", user, info, reason, record, bulk)
        return {**_restart_changes(flow.position), **edits}, [event], True

    return _act(
        flow,
        user,
        ACTIONS["resume"],
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


def latest_events(flow: Flow, limit: int = 200) -> list[FlowEvent]:
    """The flow's `limit` latest events, newest first, each with its actor (its page's
    timeline)."""
    return _latest_events(flow.pk, limit)


def results_for_display(flow: Flow) -> list[Any]:
    """Step results as the studio shows them (pickled values as their repr)."""
    stored = list(flow.stored_results) + [None] * (flow.length - len(flow.stored_results))
    return [codec.display(item) for item in stored]
