"""LTM runs: list, start, get (global state, instances, latest events), fire a transition,
retry failed states, kill, and the event log after a sequence number; and the time machine:
a run as it was after any event, rolled back to it, or copied from it into a new run."""

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
    LtmCopyIn,
    LtmEventPage,
    LtmKillIn,
    LtmRollbackIn,
    LtmRunAt,
    LtmRunDetail,
    LtmRunPage,
    LtmStartIn,
    PathInt,
    TransitionIn,
)

router = Router(tags=["ltm runs"])

RunId = Path(..., description="the run's id (a UUID)")
Seq = Path(..., ge=0, le=MAX_ID, description="an event of the run: `history_from` to its `seq`")
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
        "history_from": run.history_from,
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


def instance_at(instance: Any) -> dict[str, Any]:
    """One state of a run's view as `engine_api.ltm_at` gives it (an `InstanceView`)."""
    return {
        "fqn": instance.fqn,
        "name": instance.name,
        "status": instance.status,
        "state": dict(instance.state),
        "params": dict(instance.params),
        "error": instance.error or "",
        "entry": instance.entry,
    }


@router.get("/ltm-runs/{run_id}/at/{seq}", response=LtmRunAt, summary="An LTM run as it was")
def run_at(request: HttpRequest, run_id: uuid.UUID = RunId, seq: PathInt = Seq) -> dict[str, Any]:
    """The run as committed right after its event `seq`: its state and error, the global
    state and every state's status and data then. `at` is the last event of the write that
    holds `seq` (one write may make several events). 400 naming the range for a `seq`
    outside `history_from` to `latest`."""
    run = get_visible(request, run_id)
    view = engine_api.ltm_at(run.pk, seq, current_user(request))
    record = view.run
    assert record is not None  # ltm_at always describes the run
    # Read after the view, so that `latest` is never below the event it shows.
    history_from, latest = LtmRun.objects.values_list("history_from", "seq").get(pk=run.pk)
    return {
        "id": str(run.pk),
        "ltm": run.name,
        "seq": record.seq,
        "at": record.version,
        "state": record.state,
        "error": record.error or "",
        "global_state": dict(view.state),
        "instances": [instance_at(view.instances[fqn]) for fqn in sorted(view.instances)],
        "history_from": history_from,
        "latest": latest,
    }


@router.post("/ltm-runs/{run_id}/rollback", response=LtmRunDetail, summary="Roll an LTM run back")
def rollback(request: HttpRequest, payload: LtmRollbackIn, run_id: uuid.UUID = RunId) -> Any:
    """Take the run back to how it was right after event `seq`: every state's status and
    data, the global state, and the executions queued or running then (queued again). It goes
    on from there with the code deployed now. Nothing is erased: the rollback is an event of
    its own (kind `rollback`) naming you and `reason`, and can be rolled back in turn.

    400 for a blank `reason` or a `seq` outside the run's history; 409 for a killed run, a
    run already as it was then, an execution running now (unless `discard_running`), or a
    run whose `seq` is no longer `expected_seq`."""
    run = get_visible(request, run_id)
    engine_api.rollback_ltm(
        run.pk,
        payload.seq,
        current_user(request),
        payload.reason,
        discard_running=payload.discard_running,
        expected_seq=payload.expected_seq,
    )
    return run_detail(get_visible(request, run_id))


@router.post("/ltm-runs/{run_id}/copy", response={201: LtmRunDetail}, summary="Copy an LTM run")
def copy(request: HttpRequest, payload: LtmCopyIn | None = None, run_id: uuid.UUID = RunId) -> Any:
    """A new, independent run of the same LTM, owned by you, that is the run as it was right
    after event `seq` (default: as it is now). What had finished by then does not run again;
    what was queued or running then is queued in the copy. 400 for a `seq` outside the run's
    history."""
    run = get_visible(request, run_id)
    seq = payload.seq if payload else None
    new_id = engine_api.copy_ltm(run.pk, current_user(request), seq)
    return Status(201, run_detail(get_visible(request, uuid.UUID(str(new_id)))))
