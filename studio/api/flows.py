"""Flows: list (filters, pages), get (results and latest events), start, the manual
actions, and the flows waiting for the caller. Each action accepts the `version` the client
saw: if the flow changed since, the answer is a 409 instead of acting on a state the client
never saw.

Who: the owner and operators see a flow and act on it; the assignees of a waiting step who
are not the owner see it (GET, events) and answer it (input) while it waits for them, and
get the 404 of a foreign flow from every override (move, retry, skip, kill, resume,
give-up)."""

from typing import TYPE_CHECKING, Any, Literal

from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied
from django.core.exceptions import ValidationError as FormErrors
from django.http import Http404, HttpRequest
from ninja import Path, Query, Router, Status
from ninja.errors import ValidationError

from engine import api as engine_api
from engine.models import Flow
from studio.api.auth import current_user
from studio.api.present import (
    ASSIGNEE_RELATIONS,
    flow_detail,
    flow_out,
    input_schema_of,
    waiting_out,
)
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
    RerunIn,
    Text,
    WaitingPage,
)

router = Router(tags=["flows"])

if TYPE_CHECKING:
    StateName = str  # a Literal built at run time is no type to a checker
else:
    StateName = Literal[tuple(engine_api.FlowState.values)]  # the API refuses any other
FlowId = Path(..., ge=1, le=MAX_ID)
OwnerQuery = Query(None, max_length=150, description="username (staff)")
SearchQuery = Query(
    None, max_length=200, description="in routine name and wait reason, owner username, #id"
)


NOT_YOURS_TO_ANSWER = (
    "this step is assigned: only its assignees and operators may answer it "
    "(the flow's owner only when assigned)"
)


def get_visible(request: HttpRequest, flow_id: int) -> Flow:
    """The flow if the caller may act on it (owner, operators); 404 otherwise (foreign
    looks like missing)."""
    flow = engine_api.visible_flows(current_user(request)).filter(pk=flow_id).first()
    if flow is None:
        raise Http404
    return flow


def get_seen(request: HttpRequest, flow_id: int) -> Flow:
    """The flow if the caller may see its page: those of `get_visible`, and a flow waiting
    for the caller as an assignee; 404 otherwise, like a missing one."""
    flow = engine_api.read_flow(flow_id)
    if flow is None or not engine_api.can_see_flow(current_user(request), flow):
        raise Http404
    return flow


JSON_TYPES: dict[str, tuple[str, Any]] = {
    "string": ("a string", str),
    "integer": ("an integer", int),
    "number": ("a number", (int, float)),
    "boolean": ("a boolean", bool),
    "array": ("an array", list),
    "object": ("an object", dict),
}


def _has_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False  # `true` is no number here, as nowhere else in this API
    known = JSON_TYPES.get(name)
    return known is None or isinstance(value, known[1])


def schema_errors(schema: dict[str, Any] | None, data: Any) -> list[dict[str, Any]]:
    """Where `data` does not fit the JSON types of the step's published `input_schema`: a
    form reads JSON values as its fields expect (a number where a date goes is no date),
    and a form's schema admits no other fields, as no body of this API does. Null is left
    to the form (an empty field); formats, bounds and choices too. A step without a schema,
    or one of `input_fields` (no types), takes any JSON value, as before."""
    if schema is None or not isinstance(data, dict):
        return []
    properties = schema.get("properties") or {}
    closed = schema.get("additionalProperties") is False
    errors: list[dict[str, Any]] = []
    for name, value in data.items():
        loc = ["body", "payload", "data", name]
        field = properties.get(name)
        if field is None:
            if closed:
                errors.append(
                    {"loc": loc, "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
                )
            continue
        types = field.get("type")
        if value is None or types is None:
            continue
        types = [types] if isinstance(types, str) else list(types)
        if not any(_has_type(value, kind) for kind in types):
            wanted = " or ".join(JSON_TYPES[t][0] if t in JSON_TYPES else t for t in types)
            errors.append({"loc": loc, "msg": f"Input should be {wanted}", "type": "type_error"})
    return errors


def input_errors(exc: FormErrors) -> list[dict[str, Any]]:
    """The engine's form errors as the API's field errors: each at `data.<field>` of the
    body (form-wide ones at `data`), as ninja's own validation errors are given."""
    where = ["body", "payload", "data"]
    by_field = exc.message_dict if hasattr(exc, "error_dict") else {NON_FIELD_ERRORS: exc.messages}
    return [
        {
            "loc": where if field == NON_FIELD_ERRORS else [*where, field],
            "msg": message,
            "type": "value_error",
        }
        for field, messages in by_field.items()
        for message in messages
    ]


@router.get("/flows", response=FlowPage, summary="List flows")
def list_flows(
    request: HttpRequest,
    state: StateName | None = None,
    routine: int | None = Query(None, ge=1, le=MAX_ID),
    owner: Text | None = OwnerQuery,
    search: Text | None = SearchQuery,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0, le=MAX_ID),
    cursor: str | None = Query(
        None, max_length=60, description="the `next` of the previous page (instead of offset)"
    ),
) -> dict[str, Any]:
    """The flows you may see, most recently updated first. The filter is the dashboard's
    (and a bulk action's `filter`): `search` matches the routine's name and the wait reason
    (any part, any case), the owner's username and the flow's number (`17`; `#17` is that
    flow only). Pages: follow `next` (a cursor: `?cursor=...`), which costs the same at any
    depth and neither repeats nor skips a flow when flows change between pages (a flow
    updated meanwhile moves to the top); `offset` still works, but reads every row it skips.
    `count` stops at 10,000 (`count_capped` is then true); where counting would read too
    many flows, they are not counted and `count_estimate` says about how many the database's
    statistics expect."""
    # Others' flows are only in the visible set for staff and operators, so for anyone else
    # the owner filter can only narrow down their own.
    chosen = engine_api.FlowFilter(
        state=state or "", routine=routine, owner=owner or None, search=(search or "").strip()
    )
    flows = engine_api.filter_flows(current_user(request), chosen)
    if cursor or not offset:
        page = engine_api.keyset_page(flows, limit, older=cursor)
    else:
        rows = list(flows.order_by(*engine_api.FLOW_ORDER)[offset : offset + limit + 1])
        page = engine_api.KeysetPage(rows[:limit], has_newer=True, has_older=len(rows) > limit)
    items, more = page.flows, page.has_older
    counted = engine_api.count_listed(flows, page)
    return {
        "count": counted.count,
        "count_capped": counted.capped,
        "count_estimate": counted.estimate,
        "limit": limit,
        "offset": 0 if cursor else offset,
        "next": engine_api.cursor_of(items[-1]) if more and items else None,
        "items": [flow_out(flow) for flow in items],
    }


@router.get("/flows/{flow_id}", response=FlowDetail, summary="Get a flow")
def get_flow(request: HttpRequest, flow_id: int = FlowId) -> Any:
    """The flow with its pinned steps, data, results and latest events; while it waits,
    what its step takes (`input_schema`), its `deadline` and `assignees`. An assignee who is
    not the owner sees it while it waits for them (without results when the step hides
    them: `results_hidden`)."""
    return flow_detail(get_seen(request, flow_id), current_user(request))


@router.get("/waiting", response=WaitingPage, summary="Flows waiting for me")
def waiting_for_me(
    request: HttpRequest,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0, le=MAX_ID),
) -> dict[str, Any]:
    """The flows waiting for you to answer: as an assignee (directly or through a group),
    or as the owner of a wait nobody is assigned to. Soonest deadline first (none last),
    each with its `input_schema` and `version`, so that you can answer from the list."""
    flows = engine_api.waiting_for(current_user(request)).prefetch_related(*ASSIGNEE_RELATIONS)
    return {
        "count": flows.count(),
        "limit": limit,
        "offset": offset,
        "items": [waiting_out(flow) for flow in flows[offset : offset + limit]],
    }


@router.post("/flows", response={201: FlowDetail}, summary="Start a flow")
def start_flow(request: HttpRequest, payload: FlowStartIn) -> Status[Any]:
    """Start a routine you may see, with optional `data` the steps read."""
    routine = get_visible_routine(request, payload.routine)
    user = current_user(request)
    flow = engine_api.start_flow(routine, user, data=payload.data)
    return Status(201, flow_detail(get_visible(request, flow.pk), user))


def _acted(flow: Flow) -> Any:
    """The flow an operator's action answers with: as the action read it back after its
    write (whoever may act on a flow may see it: no second check, no second read)."""
    return flow_out(flow)


@router.post("/flows/{flow_id}/input", response=FlowOut, summary="Push input to a flow")
def push_input(request: HttpRequest, payload: InputIn, flow_id: int = FlowId) -> Any:
    """Answer a waiting flow: `data` is what its step takes (for a step with a form, an
    object of the form's fields; see `input_schema`). 400 with the field errors when it
    does not fit the schema's types or the form refuses it (nothing is stored, the flow
    keeps waiting); 403 when the step is assigned to others (its owner may not answer
    unless assigned); 409 when the flow is not waiting (any more)."""
    flow = get_seen(request, flow_id)
    user = current_user(request)
    wrong = schema_errors(input_schema_of(flow), payload.data)
    if wrong:
        raise ValidationError(wrong)
    try:
        answered = engine_api.push_input(flow, payload.data, user, payload.version)
    except FormErrors as exc:
        raise ValidationError(input_errors(exc)) from None
    except PermissionDenied:
        raise PermissionDenied(NOT_YOURS_TO_ANSWER) from None
    # Not re-read through get_seen: an assignee no longer sees a flow that stopped waiting.
    return flow_out(answered)


@router.post("/flows/{flow_id}/move", response=FlowOut, summary="Move a flow to a step")
def move_to(request: HttpRequest, payload: MoveIn, flow_id: int = FlowId) -> Any:
    """Run the flow from step `position` (0-based); 409 while a step is running or when
    the position is out of range."""
    flow = get_visible(request, flow_id)
    user = current_user(request)
    moved = engine_api.move_to(
        flow,
        payload.position,
        user,
        payload.reason,
        payload.version,
        data=payload.data,
        params=payload.params,
    )
    return _acted(moved)


@router.post("/flows/{flow_id}/retry", response=FlowOut, summary="Retry a flow's step")
def retry(request: HttpRequest, payload: RerunIn | None = None, flow_id: int = FlowId) -> Any:
    """Perform a failed or killed flow's current step again (its attempts counted afresh);
    a `retrying` flow's next attempt now ("retry now": its attempt count goes on). `data`
    and `params` edit the flow's data and the step's params first (each a whole JSON
    object; the change is recorded as a diff in the event)."""
    payload = payload or RerunIn()
    flow = get_visible(request, flow_id)
    retried = engine_api.retry(
        flow,
        current_user(request),
        payload.version,
        reason=payload.reason,
        data=payload.data,
        params=payload.params,
    )
    return _acted(retried)


@router.post("/flows/{flow_id}/give-up", response=FlowOut, summary="Give up retrying")
def give_up(request: HttpRequest, payload: ReasonIn | None = None, flow_id: int = FlowId) -> Any:
    """Stop a `retrying` flow's automatic retries: it fails with its last attempt's error
    (and can still be retried, skipped or resumed); 409 when it is not retrying."""
    payload = payload or ReasonIn()
    flow = get_visible(request, flow_id)
    user = current_user(request)
    return _acted(engine_api.give_up(flow, user, payload.reason, payload.version))


@router.post("/flows/{flow_id}/skip", response=FlowOut, summary="Skip a flow's step")
def skip(request: HttpRequest, payload: ReasonIn | None = None, flow_id: int = FlowId) -> Any:
    """Skip the current step (its result is null) and go on."""
    payload = payload or ReasonIn()
    flow = get_visible(request, flow_id)
    user = current_user(request)
    return _acted(engine_api.skip(flow, user, payload.reason, payload.version))


@router.post("/flows/{flow_id}/kill", response=FlowOut, summary="Kill a flow")
def kill(request: HttpRequest, payload: ReasonIn | None = None, flow_id: int = FlowId) -> Any:
    """End the flow as killed; 409 when it has already ended."""
    payload = payload or ReasonIn()
    flow = get_visible(request, flow_id)
    user = current_user(request)
    return _acted(engine_api.kill_flow(flow, user, payload.reason, payload.version))


@router.post("/flows/{flow_id}/resume", response=FlowOut, summary="Resume a flow")
def resume(request: HttpRequest, payload: RerunIn | None = None, flow_id: int = FlowId) -> Any:
    """Run a waiting, killed or failed flow again from its current step; `data` and
    `params` edit the flow's data and the step's params first, as for a retry."""
    payload = payload or RerunIn()
    flow = get_visible(request, flow_id)
    resumed = engine_api.resume(
        flow,
        current_user(request),
        payload.version,
        reason=payload.reason,
        data=payload.data,
        params=payload.params,
    )
    return _acted(resumed)
