"""Records as the API shows them. Step results go through `engine.api.results_for_display`,
which never unpickles anything: a stored pickled value is shown by its repr. An assignee
whose step hides earlier results (`engine.api.sees_results`) gets no results, and events
without the results and inputs they carry."""

from typing import Any

from django.db.models import prefetch_related_objects

from engine import api as engine_api
from engine.models import Flow, FlowEvent, Notification, Routine

# What an event's data holds of results and inputs (a version move: the results it dropped).
HIDDEN_EVENT_KEYS = ("result", "input", "dropped")
ASSIGNEE_RELATIONS = ("assignees__user", "assignees__group")  # prefetch for assignees_out

EVENTS_IN_DETAIL = 100  # the latest events a flow's detail carries; the rest via /events


def username(user: Any) -> str | None:
    return None if user is None else user.get_username()


def routine_out(routine: Routine) -> dict[str, Any]:
    # `steps` is prefetched by the callers that list routines.
    steps = sorted(routine.steps.all(), key=lambda step: (step.order, step.pk))
    return {
        "id": routine.pk,
        "name": routine.name,
        "description": routine.description,
        "owner": username(routine.owner),
        "version": routine.version,
        "created": routine.created,
        "updated": routine.updated,
        "steps": [
            {
                "order": step.order,
                "name": step.label or step.task.name,
                "script": step.task.script,
                "label": step.label,
                "params": step.params,
                "key": step.key,
                "overrides": step.overrides or {},
            }
            for step in steps
        ],
    }


def event_out(event: FlowEvent, results_shown: bool = True) -> dict[str, Any]:
    data = event.data
    if not results_shown and isinstance(data, dict):
        data = {key: value for key, value in data.items() if key not in HIDDEN_EVENT_KEYS}
    return {
        "seq": event.seq,
        "kind": event.kind,
        "actor": username(event.actor),
        "state": event.state,
        "position": event.position,
        "message": event.message,
        "data": data,
        "created": event.created,
    }


def flow_out(flow: Flow) -> dict[str, Any]:
    return {
        "id": flow.pk,
        "routine": flow.routine_id,
        "routine_name": flow.routine.name,
        "routine_version": flow.routine_version,
        "owner": username(flow.owner),
        "state": flow.state,
        "position": flow.position,
        "length": flow.length,
        "wait_reason": flow.wait_reason,
        "error": flow.error,
        "version": flow.version,
        "seq": flow.seq,
        "created": flow.created,
        "updated": flow.updated,
        "finished": flow.finished,
        "deadline": flow.deadline,
        "attempt": flow.attempt,
        "retry": (
            engine_api.retry_status(flow) if flow.state == engine_api.FlowState.RETRYING else None
        ),
        "step_deadline": flow.step_deadline,
    }


def input_schema_of(flow: Flow) -> dict[str, Any] | None:
    """The JSON Schema of what the flow's waiting step takes (None when it does not wait)."""
    step = flow.current_step
    if flow.state != engine_api.FlowState.WAITING or step is None:
        return None
    try:
        return engine_api.script_schema(step["script"])
    except LookupError:  # a script no longer registered: the step takes nothing known
        return None


def assignees_out(flow: Flow) -> dict[str, list[str]]:
    """Usernames and group names assigned to the flow's current wait (`flow.assignees` is
    prefetched with `ASSIGNEE_RELATIONS` by the callers)."""
    users: set[str] = set()
    groups: set[str] = set()
    if flow.state == engine_api.FlowState.WAITING:
        for row in flow.assignees.all():
            if row.user is not None:
                users.add(row.user.get_username())
            if row.group is not None:
                groups.add(row.group.name)
    return {"users": sorted(users), "groups": sorted(groups)}


def waiting_out(flow: Flow) -> dict[str, Any]:
    return {
        **flow_out(flow),
        "input_schema": input_schema_of(flow),
        "assignees": assignees_out(flow),
    }


def notification_out(note: Notification) -> dict[str, Any]:
    return {
        "id": note.pk,
        "flow": note.flow_id,
        "wait_number": note.wait_number,
        "kind": note.kind,
        "message": note.message,
        "created": note.created,
        "cleared": note.cleared,
    }


def flow_detail(flow: Flow, user: Any) -> dict[str, Any]:
    """The flow as `user` sees it (results hidden from an assignee when the step says so)."""
    shown = engine_api.sees_results(user, flow)
    prefetch_related_objects([flow], *ASSIGNEE_RELATIONS)
    latest = list(
        FlowEvent.objects.filter(flow=flow)
        .select_related("actor")
        .order_by("-seq")[: EVENTS_IN_DETAIL + 1]
    )
    truncated = len(latest) > EVENTS_IN_DETAIL
    events = [event_out(event, shown) for event in reversed(latest[:EVENTS_IN_DETAIL])]
    return {
        **flow_out(flow),
        "steps": flow.steps,
        "data": flow.data,
        "results": engine_api.results_for_display(flow) if shown else None,
        "results_hidden": not shown,
        "traceback": flow.traceback,
        "input_schema": input_schema_of(flow),
        "assignees": assignees_out(flow),
        "actions": engine_api.available_actions(flow, user),
        "events": events,
        "events_truncated": truncated,
        **health_out(flow, user),
    }


def health_out(flow: Flow, user: Any) -> dict[str, Any]:
    """Who holds the flow and what the housekeeping will do with it: for operators (it names
    the studio's hosts and processes); null for everyone else."""
    if not engine_api.can_see_all(user):
        return {"holder": None, "housekeeping": None}
    return {
        "holder": engine_api.flow_holder(flow),
        "housekeeping": engine_api.housekeeping_plan(flow),
    }
