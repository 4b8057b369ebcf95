"""LTM runs: list, start, get (global state, instances, latest events), fire a transition,
retry failed states, kill, and the event log after a sequence number."""

import uuid
from typing import Any

from django.http import Http404, HttpRequest
from ninja import Path, Query, Router, Status

from engine import api as engine_api
from engine.models import LtmEvent, LtmInstance, LtmRun
from studio.api.auth import current_user
from studio.api.present import EVENTS_IN_DETAIL, username
from studio.api.schemas import (
    DEFAULT_LIMIT,
    MAX_ID,
    MAX_LIMIT,
    LtmEventPage,
    LtmKillIn,
    LtmRunDetail,
    LtmRunPage,
    LtmStartIn,
    TransitionIn,
)

router = Router(tags=["ltm runs"])

RunId = Path(..., description="the run's id (a UUID)")
MAX_EVENTS = 500


def get_visible(request: HttpRequest, run_id: uuid.UUID) -> LtmRun:
    """The run if the caller may see it; 404 otherwise (foreign looks like missing)."""
    run = engine_api.visible_ltm_runs(current_user(request)).filter(pk=run_id).first()
    if run is None:
        raise Http404
    return run


def event_out(event: LtmEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "kind": event.kind,
        "fqn": event.fqn,
        "actor": username(event.actor),
        "state": event.state,
        "data": event.data,
        "created": event.created,
    }


def run_out(run: LtmRun) -> dict[str, Any]:
    return {
        "id": str(run.pk),
        "ltm": run.name,
        "owner": username(run.owner),
        "state": run.state,
        "error": run.error,
        "version": run.version,
        "seq": run.seq,
        "created": run.created,
        "updated": run.updated,
        "finished": run.finished,
    }


def run_detail(run: LtmRun) -> dict[str, Any]:
    instances = LtmInstance.objects.filter(run=run).order_by("fqn")
    latest = list(
        LtmEvent.objects.filter(run=run)
        .select_related("actor")
        .order_by("-seq")[: EVENTS_IN_DETAIL + 1]
    )
    return {
        **run_out(run),
        "global_state": run.global_state,
        "instances": [
            {
                "fqn": row.fqn,
                "status": row.status,
                "state": row.state,
                "params": row.params,
                "error": row.error,
            }
            for row in instances
        ],
        "events": [event_out(event) for event in reversed(latest[:EVENTS_IN_DETAIL])],
        "events_truncated": len(latest) > EVENTS_IN_DETAIL,
    }


@router.get("/ltm-runs", response=LtmRunPage, summary="List LTM runs")
def list_runs(
    request: HttpRequest,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0, le=MAX_ID),
) -> dict[str, Any]:
    """The LTM runs you may see, most recently updated first."""
    runs = engine_api.visible_ltm_runs(current_user(request)).order_by("-updated", "-created")
    return {
        "count": runs.count(),
        "limit": limit,
        "offset": offset,
        "items": [run_out(run) for run in runs[offset : offset + limit]],
    }


@router.post("/ltm-runs", response={201: LtmRunDetail}, summary="Start an LTM run")
def start_run(request: HttpRequest, payload: LtmStartIn) -> Status[Any]:
    """Start the registered LTM `ltm`; 400 for a name that is not registered."""
    run_id = engine_api.start_ltm(payload.ltm, current_user(request), payload.payload)
    return Status(201, run_detail(get_visible(request, uuid.UUID(str(run_id)))))


@router.get("/ltm-runs/{run_id}", response=LtmRunDetail, summary="Get an LTM run")
def get_run(request: HttpRequest, run_id: uuid.UUID = RunId) -> Any:
    return run_detail(get_visible(request, run_id))


@router.post("/ltm-runs/{run_id}/transitions", response=LtmRunDetail, summary="Fire a transition")
def fire(request: HttpRequest, payload: TransitionIn, run_id: uuid.UUID = RunId) -> Any:
    """Fire `label` (in `namespace`, default the root machine's); 409 when it moves
    nothing or the run was killed."""
    run = get_visible(request, run_id)
    engine_api.fire_transition(
        run.pk,
        payload.label,
        current_user(request),
        payload=payload.payload,
        namespace=payload.namespace,
        params=payload.params,
    )
    return run_detail(get_visible(request, run_id))


@router.post("/ltm-runs/{run_id}/retry", response=LtmRunDetail, summary="Retry an LTM run")
def retry(request: HttpRequest, run_id: uuid.UUID = RunId) -> Any:
    """Execute the run's failed states again; 409 when none failed."""
    run = get_visible(request, run_id)
    engine_api.retry_ltm(run.pk, current_user(request))
    return run_detail(get_visible(request, run_id))


@router.post("/ltm-runs/{run_id}/kill", response=LtmRunDetail, summary="Kill an LTM run")
def kill(request: HttpRequest, payload: LtmKillIn | None = None, run_id: uuid.UUID = RunId) -> Any:
    """End the run as killed; 409 when it was killed already."""
    run = get_visible(request, run_id)
    reason = payload.reason if payload else ""
    engine_api.kill_ltm(run.pk, current_user(request), reason)
    return run_detail(get_visible(request, run_id))


@router.get("/ltm-runs/{run_id}/events", response=LtmEventPage, summary="An LTM run's events")
def run_events(
    request: HttpRequest,
    run_id: uuid.UUID = RunId,
    since: int = Query(0, ge=0, le=MAX_ID, description="the last sequence number you have"),
    limit: int = Query(MAX_EVENTS, ge=1, le=MAX_EVENTS),
) -> dict[str, Any]:
    """Events with a sequence number above `since`, oldest first."""
    run = get_visible(request, run_id)
    rows = list(
        LtmEvent.objects.filter(run=run, seq__gt=since)
        .select_related("actor")
        .order_by("seq")[: limit + 1]
    )
    return {
        "run": str(run.pk),
        "since": since,
        "seq": run.seq,
        "more": len(rows) > limit,
        "events": [event_out(event) for event in rows[:limit]],
    }
