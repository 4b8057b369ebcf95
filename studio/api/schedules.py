"""Schedules: list, get (with its latest runs and next due times), create, change (pause and
resume with `paused`), delete. Flows of a routine start on a cron expression in a time zone,
with data, for an owner; runs missed while nothing ran start once on catch-up.

Who: the owner and operators see a schedule and change it; anyone else gets the 404 of a
missing one. Scheduling for someone else (`owner`) takes an operator (403). A cron expression
that does not parse, an unknown time zone or data that is not a JSON object is a 400 that
says what is wrong, and changes nothing."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from ninja import Path, Query, Router, Status

from engine import api as engine_api
from engine.models import Schedule
from studio.api.auth import current_user
from studio.api.present import username
from studio.api.routines import get_visible as get_visible_routine
from studio.api.schemas import (
    DEFAULT_LIMIT,
    MAX_ID,
    MAX_LIMIT,
    ScheduleDetail,
    ScheduleIn,
    SchedulePage,
    ScheduleUpdate,
)

router = Router(tags=["schedules"])

ScheduleId = Path(..., ge=1, le=MAX_ID)
RUNS_IN_DETAIL = 20
UPCOMING = 5


def get_visible(request: HttpRequest, schedule_id: int) -> Schedule:
    """The schedule if the caller may see it; 404 otherwise (foreign looks like missing)."""
    found = engine_api.visible_schedules(current_user(request)).filter(pk=schedule_id).first()
    if found is None:
        raise Http404
    return found


def schedule_out(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.pk,
        "name": schedule.name,
        "routine": schedule.routine_id,
        "routine_name": schedule.routine.name,
        "owner": username(schedule.owner),
        "cron": schedule.cron,
        "description": engine_api.describe_cron(schedule.cron),
        "timezone": schedule.timezone,
        "data": schedule.data,
        "paused": schedule.paused,
        "next_run": schedule.next_run,
        "last_run": schedule.last_run,
        "version": schedule.version,
        "created": schedule.created,
        "updated": schedule.updated,
    }


def schedule_detail(schedule: Schedule) -> dict[str, Any]:
    runs = schedule.runs.select_related("flow").order_by("-due")[:RUNS_IN_DETAIL]
    return {
        **schedule_out(schedule),
        "upcoming": engine_api.upcoming_runs(schedule, UPCOMING),
        "runs": [
            {
                "due": run.due,
                "missed": run.missed,
                "flow": run.flow_id,
                "flow_state": run.flow.state if run.flow is not None else None,
                "error": run.error,
                "created": run.created,
            }
            for run in runs
        ],
    }


def _owner(request: HttpRequest, name: str | None) -> Any:
    """The user named `name` (None: the caller). Only operators name someone else, so that
    nobody else learns from the answer which usernames exist."""
    user = current_user(request)
    if name is None or name == user.get_username():
        return None
    if not engine_api.can_see_all(user):
        raise PermissionDenied("only operators may schedule flows for someone else")
    owner = get_user_model().objects.filter(username=name, is_active=True).first()
    if owner is None:
        raise ValueError(f"owner: there is no active user named {name!r}")
    return owner


@router.get("/schedules", response=SchedulePage, summary="List schedules")
def list_schedules(
    request: HttpRequest,
    routine: int | None = Query(None, ge=1, le=MAX_ID),
    paused: bool | None = None,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0, le=MAX_ID),
) -> dict[str, Any]:
    """The schedules you may see (yours; every one for operators), by next run (paused ones
    last)."""
    schedules = engine_api.visible_schedules(current_user(request))
    if routine:
        schedules = schedules.filter(routine_id=routine)
    if paused is not None:
        schedules = schedules.filter(paused=paused)
    schedules = schedules.order_by("paused", "next_run", "id")
    return {
        "count": schedules.count(),
        "limit": limit,
        "offset": offset,
        "items": [schedule_out(s) for s in schedules[offset : offset + limit]],
    }


@router.get("/schedules/{schedule_id}", response=ScheduleDetail, summary="Get a schedule")
def get_schedule(request: HttpRequest, schedule_id: int = ScheduleId) -> Any:
    """The schedule with its next due times and its latest runs (each with the flow it
    started, or why none could start, and how many missed due times a catch-up skipped)."""
    return schedule_detail(get_visible(request, schedule_id))


@router.post("/schedules", response={201: ScheduleDetail}, summary="Create a schedule")
def create_schedule(request: HttpRequest, payload: ScheduleIn) -> Status[Any]:
    """Start flows of a routine you may see on `cron` in `timezone`, each with `data`. 404
    for a routine you may not see; 403 for an `owner` other than you unless you are an
    operator; 400 for a cron expression, time zone or data that does not fit."""
    routine = get_visible_routine(request, payload.routine)
    user = current_user(request)
    schedule = engine_api.create_schedule(
        routine,
        user,
        payload.cron,
        timezone=payload.timezone,
        data=payload.data,
        owner=_owner(request, payload.owner),
        name=payload.name,
    )
    return Status(201, schedule_detail(get_visible(request, schedule.pk)))


@router.patch("/schedules/{schedule_id}", response=ScheduleDetail, summary="Change a schedule")
def update_schedule(
    request: HttpRequest, payload: ScheduleUpdate, schedule_id: int = ScheduleId
) -> Any:
    """Change its `name`, `cron`, `timezone` or `data`, or pause (`paused: true`) and
    resume it (`false`), in one write; fields left out stay. A new cron or time zone, or
    resuming, computes the next run from now (due times missed while paused do not start).
    400 for bad input, which changes nothing."""
    schedule = get_visible(request, schedule_id)
    engine_api.update_schedule(
        schedule,
        current_user(request),
        name=payload.name,
        cron=payload.cron,
        timezone=payload.timezone,
        data=payload.data,
        paused=payload.paused,
    )
    return schedule_detail(get_visible(request, schedule_id))


@router.delete("/schedules/{schedule_id}", response={204: None}, summary="Delete a schedule")
def delete_schedule(request: HttpRequest, schedule_id: int = ScheduleId) -> Status[None]:
    """Delete the schedule and the record of its runs; the flows it started stay, and the
    audit keeps who deleted it."""
    schedule = get_visible(request, schedule_id)
    engine_api.delete_schedule(schedule, current_user(request))
    return Status(204, None)
