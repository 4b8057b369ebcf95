"""Routine versions: list a routine's versions, get one, compare any two side by side, and
move a flow onto another version of its routine.

Who: whoever sees the routine sees its versions (404 otherwise, like a missing one); a flow's
owner and operators move it (404 for anyone else, assignees included)."""

from typing import Any

from django.http import Http404, HttpRequest
from ninja import Path, Query, Router

from engine import api as engine_api
from engine.models import RoutineVersion
from studio.api.auth import current_user
from studio.api.flows import get_visible as get_visible_flow
from studio.api.present import flow_out, username
from studio.api.routines import get_visible as get_visible_routine
from studio.api.schemas import (
    MAX_ID,
    ChangeVersionIn,
    FlowOut,
    PathInt,
    VersionDetail,
    VersionDiffOut,
    VersionList,
)

router = Router()

RoutineId = Path(..., ge=1, le=MAX_ID)
FlowId = Path(..., ge=1, le=MAX_ID)
Number = Path(..., ge=1, le=MAX_ID, description="the version's number")
A = Query(..., ge=1, le=MAX_ID, description="the version on the left")
B = Query(..., ge=1, le=MAX_ID, description="the version on the right")


def _steps(version: RoutineVersion) -> list[dict[str, Any]]:
    return [
        {
            "key": step.key,
            "label": step.label,
            "name": step.name,
            "script": step.script,
            "params": step.params,
            "overrides": step.overrides,
        }
        for step in engine_api.version_steps(version)
    ]


def version_out(version: RoutineVersion, steps: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "number": version.number,
        "name": version.name,
        "description": version.description,
        "author": username(version.author),
        "created": version.created,
        "step_count": len(version.steps) if isinstance(version.steps, list) else 0,
    }
    if steps:
        out["steps"] = _steps(version)
    return out


@router.get(
    "/routines/{routine_id}/versions",
    response=VersionList,
    tags=["routines"],
    summary="List a routine's versions",
)
def list_versions(request: HttpRequest, routine_id: int = RoutineId) -> dict[str, Any]:
    """Every version of the routine, newest first: each save makes the next one."""
    routine = get_visible_routine(request, routine_id)
    return {
        "routine": routine.pk,
        "current": routine.version,
        "items": [version_out(v) for v in engine_api.routine_versions(routine)],
    }


@router.get(
    "/routines/{routine_id}/versions/{number}",
    response=VersionDetail,
    tags=["routines"],
    summary="Get a version of a routine",
)
def get_version(
    request: HttpRequest, routine_id: int = RoutineId, number: PathInt = Number
) -> dict[str, Any]:
    """The version as it was saved: its name, description and steps, each with its `key`
    (the step's identity across versions)."""
    routine = get_visible_routine(request, routine_id)
    version = engine_api.routine_versions(routine).filter(number=number).first()
    if version is None:
        raise Http404
    return version_out(version, steps=True)


@router.get(
    "/routines/{routine_id}/diff",
    response=VersionDiffOut,
    tags=["routines"],
    summary="Compare two versions of a routine",
)
def diff_versions(
    request: HttpRequest, routine_id: int = RoutineId, a: int = A, b: int = B
) -> dict[str, Any]:
    """Versions `a` and `b` side by side: steps aligned by key where they have one (else by
    position), each row with what changed. 400 naming the routine's versions when `a` or `b`
    is not one of them."""
    routine = get_visible_routine(request, routine_id)
    return engine_api.version_diff(routine, a, b).as_dict()


@router.post(
    "/flows/{flow_id}/change-version",
    response=FlowOut,
    tags=["flows"],
    summary="Move a flow onto another version of its routine",
)
def change_version(request: HttpRequest, payload: ChangeVersionIn, flow_id: int = FlowId) -> Any:
    """Move a pending, waiting, failed or killed flow onto `version` of its routine and run it
    at once from `position` (by default the step with the identity of its current step). The
    results of the steps that version keeps are kept (re-indexed), the others dropped (the
    event `manual.change_version` records them). 400 for a version the routine does not have
    (the message names those it has); 409 for the version it is on, a running or ended flow,
    no step to go on at, a position out of range, a version whose scripts are not
    registered, or a `flow_version` that is stale."""
    flow = get_visible_flow(request, flow_id)
    moved = engine_api.change_version(
        flow.pk,
        payload.version,
        current_user(request),
        position=payload.position,
        reason=payload.reason,
        version=payload.flow_version,
    )
    return flow_out(get_visible_flow(request, moved.pk))
