"""Routines: list, get, create, and update (each update is a new version; flows already
started keep the steps they pinned)."""

from typing import Any

from django.db.models import Prefetch
from django.http import Http404, HttpRequest
from ninja import Path, Query, Router, Status

from engine import api as engine_api
from engine.models import Routine, RoutineStep
from studio.api.auth import current_user
from studio.api.present import routine_out
from studio.api.schemas import (
    DEFAULT_LIMIT,
    MAX_ID,
    MAX_LIMIT,
    RoutineIn,
    RoutineOut,
    RoutinePage,
    RoutineUpdate,
)

router = Router(tags=["routines"])

_STEPS = Prefetch("steps", queryset=RoutineStep.objects.select_related("task"))


def visible(request: HttpRequest) -> Any:
    return engine_api.visible_routines(current_user(request)).prefetch_related(_STEPS)


def get_visible(request: HttpRequest, routine_id: int) -> Routine:
    """The routine if the caller may see it; 404 otherwise (foreign looks like missing)."""
    routine = visible(request).filter(pk=routine_id).first()
    if routine is None:
        raise Http404
    return routine


@router.get("/routines", response=RoutinePage, summary="List routines")
def list_routines(
    request: HttpRequest,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0, le=MAX_ID),
) -> dict[str, Any]:
    """The routines you may see (yours and shared ones; all of them for staff)."""
    routines = visible(request).order_by("name", "id")
    page = routines[offset : offset + limit]
    return {
        "count": routines.count(),
        "limit": limit,
        "offset": offset,
        "items": [routine_out(routine) for routine in page],
    }


@router.get("/routines/{routine_id}", response=RoutineOut, summary="Get a routine")
def get_routine(request: HttpRequest, routine_id: int = Path(..., ge=1, le=MAX_ID)) -> Any:
    return routine_out(get_visible(request, routine_id))


@router.post("/routines", response={201: RoutineOut}, summary="Create a routine")
def create_routine(request: HttpRequest, payload: RoutineIn) -> Status[Any]:
    """Steps name registered scripts only; an unknown name is a 400 naming the step."""
    routine = engine_api.create_checked_routine(
        payload.name,
        [step.model_dump() for step in payload.steps],
        current_user(request),
        payload.description,
    )
    return Status(201, routine_out(get_visible(request, routine.pk)))


@router.put("/routines/{routine_id}", response=RoutineOut, summary="Update a routine")
def update_routine(
    request: HttpRequest, payload: RoutineUpdate, routine_id: int = Path(..., ge=1, le=MAX_ID)
) -> Any:
    """Replace name, description and steps as the next version. Send the `version` you
    edited to get a 409 instead of overwriting someone else's change."""
    routine = get_visible(request, routine_id)
    engine_api.update_routine(
        routine,
        payload.name,
        [step.model_dump() for step in payload.steps],
        current_user(request),
        description=payload.description,
        version=payload.version,
    )
    return routine_out(get_visible(request, routine_id))
