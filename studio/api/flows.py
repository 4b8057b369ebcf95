"""Flows: list (filters, pages), get (results and latest events), start, and the manual
actions. Each action accepts the `version` the client saw: if the flow changed since, the
answer is a 409 instead of acting on a state the client never saw."""

from typing import TYPE_CHECKING, Any, Literal

from django.db.models import Q
from django.http import Http404, HttpRequest
from ninja import Path, Query, Router, Status

from engine import api as engine_api
from engine.models import Flow
from studio.api.auth import current_user
from studio.api.present import flow_detail, flow_out
from studio.api.routines import get_visible as get_visible_routine
from studio.api.schemas import (
    DEFAULT_LIMIT,
    MAX_ID,
    MAX_LIMIT,
    FlowDetail,
    FlowOut,
    FlowPage,
    FlowStartIn,
    InputIn,
    MoveIn,
    ReasonIn,
    Text,
    VersionIn,
)

router = Router(tags=["flows"])

if TYPE_CHECKING:
    StateName = str  # a Literal built at run time is no type to a checker
else:
    StateName = Literal[tuple(engine_api.FlowState.values)]  # the API refuses any other
FlowId = Path(..., ge=1, le=MAX_ID)
OwnerQuery = Query(None, max_length=150, description="username (staff)")
SearchQuery = Query(None, max_length=200, description="in routine name and wait reason")


def get_visible(request: HttpRequest, flow_id: int) -> Flow:
    """The flow if the caller may see it; 404 otherwise (foreign looks like missing)."""
    flow = engine_api.visible_flows(current_user(request)).filter(pk=flow_id).first()
    if flow is None:
        raise Http404
    return flow


@router.get("/flows", response=FlowPage, summary="List flows")
def list_flows(
    request: HttpRequest,
    state: StateName | None = None,
    routine: int | None = Query(None, ge=1, le=MAX_ID),
    owner: Text | None = OwnerQuery,
    search: Text | None = SearchQuery,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0, le=MAX_ID),
) -> dict[str, Any]:
    """The flows you may see, most recently updated first."""
    flows = engine_api.visible_flows(current_user(request))
    if state:
        flows = flows.filter(state=state)
    if routine:
        flows = flows.filter(routine_id=routine)
    if owner:
        # Others' flows are only in the visible set for staff and operators, so for anyone
        # else this filter can only narrow down their own.
        flows = flows.filter(owner__username=owner)
    if search:
        flows = flows.filter(Q(routine__name__icontains=search) | Q(wait_reason__icontains=search))
    flows = flows.order_by("-updated", "-id")
    return {
        "count": flows.count(),
        "limit": limit,
        "offset": offset,
        "items": [flow_out(flow) for flow in flows[offset : offset + limit]],
    }


@router.get("/flows/{flow_id}", response=FlowDetail, summary="Get a flow")
def get_flow(request: HttpRequest, flow_id: int = FlowId) -> Any:
    """The flow with its pinned steps, data, results and latest events."""
    return flow_detail(get_visible(request, flow_id))


@router.post("/flows", response={201: FlowDetail}, summary="Start a flow")
def start_flow(request: HttpRequest, payload: FlowStartIn) -> Status[Any]:
    """Start a routine you may see, with optional `data` the steps read."""
    routine = get_visible_routine(request, payload.routine)
    flow = engine_api.start_flow(routine, current_user(request), data=payload.data)
    return Status(201, flow_detail(get_visible(request, flow.pk)))


def _acted(request: HttpRequest, flow: Flow) -> Any:
    return flow_out(get_visible(request, flow.pk))


@router.post("/flows/{flow_id}/input", response=FlowOut, summary="Push input to a flow")
def push_input(request: HttpRequest, payload: InputIn, flow_id: int = FlowId) -> Any:
    """Give a waiting flow its input; 409 when the flow is not waiting (any more)."""
    flow = get_visible(request, flow_id)
    user = current_user(request)
    return _acted(request, engine_api.push_input(flow.pk, payload.data, user, payload.version))


@router.post("/flows/{flow_id}/move", response=FlowOut, summary="Move a flow to a step")
def move_to(request: HttpRequest, payload: MoveIn, flow_id: int = FlowId) -> Any:
    """Run the flow from step `position` (0-based); 409 while a step is running or when
    the position is out of range."""
    flow = get_visible(request, flow_id)
    user = current_user(request)
    moved = engine_api.move_to(flow.pk, payload.position, user, payload.reason, payload.version)
    return _acted(request, moved)


@router.post("/flows/{flow_id}/retry", response=FlowOut, summary="Retry a flow's step")
def retry(request: HttpRequest, payload: VersionIn | None = None, flow_id: int = FlowId) -> Any:
    """Perform a failed or killed flow's current step again."""
    payload = payload or VersionIn()
    flow = get_visible(request, flow_id)
    return _acted(request, engine_api.retry(flow.pk, current_user(request), payload.version))


@router.post("/flows/{flow_id}/skip", response=FlowOut, summary="Skip a flow's step")
def skip(request: HttpRequest, payload: ReasonIn | None = None, flow_id: int = FlowId) -> Any:
    """Skip the current step (its result is null) and go on."""
    payload = payload or ReasonIn()
    flow = get_visible(request, flow_id)
    user = current_user(request)
    return _acted(request, engine_api.skip(flow.pk, user, payload.reason, payload.version))


@router.post("/flows/{flow_id}/kill", response=FlowOut, summary="Kill a flow")
def kill(request: HttpRequest, payload: ReasonIn | None = None, flow_id: int = FlowId) -> Any:
    """End the flow as killed; 409 when it has already ended."""
    payload = payload or ReasonIn()
    flow = get_visible(request, flow_id)
    user = current_user(request)
    return _acted(request, engine_api.kill_flow(flow.pk, user, payload.reason, payload.version))


@router.post("/flows/{flow_id}/resume", response=FlowOut, summary="Resume a flow")
def resume(request: HttpRequest, payload: VersionIn | None = None, flow_id: int = FlowId) -> Any:
    """Run a waiting, killed or failed flow again from its current step."""
    payload = payload or VersionIn()
    flow = get_visible(request, flow_id)
    return _acted(request, engine_api.resume(flow.pk, current_user(request), payload.version))
