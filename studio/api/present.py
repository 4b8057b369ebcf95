"""Records as the API shows them. Step results go through `engine.api.results_for_display`,
which never unpickles anything: a stored pickled value is shown by its repr."""

from typing import Any

from engine import api as engine_api
from engine.models import Flow, FlowEvent, Routine

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
            }
            for step in steps
        ],
    }


def event_out(event: FlowEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "kind": event.kind,
        "actor": username(event.actor),
        "state": event.state,
        "position": event.position,
        "message": event.message,
        "data": event.data,
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
    }


def flow_detail(flow: Flow) -> dict[str, Any]:
    latest = list(
        FlowEvent.objects.filter(flow=flow)
        .select_related("actor")
        .order_by("-seq")[: EVENTS_IN_DETAIL + 1]
    )
    truncated = len(latest) > EVENTS_IN_DETAIL
    events = [event_out(event) for event in reversed(latest[:EVENTS_IN_DETAIL])]
    return {
        **flow_out(flow),
        "steps": flow.steps,
        "data": flow.data,
        "results": engine_api.results_for_display(flow),
        "traceback": flow.traceback,
        "events": events,
        "events_truncated": truncated,
    }
