"""Bulk actions: retry, resume, skip or kill many flows with one reason, in the background.

Select the flows by `ids` or by a `filter` (the one of `GET /api/flows` and of the
dashboard). The preview says what the action would do now; starting it fixes the flows it
covers and answers at once (201) while it runs; its progress and refusals are at
`GET /api/bulk/{id}`. Each flow is checked as it is acted on — that you may act on it, and
that its state admits the action — and its event names you, the reason and the bulk action.
A bulk action is its starter's alone: anyone else's is a 404, as a missing one."""

from typing import Any

from django.http import Http404, HttpRequest
from ninja import Path, Query, Router, Status

from engine import api as engine_api
from engine.models import BulkAction
from studio.api.auth import current_user
from studio.api.schemas import (
    DEFAULT_LIMIT,
    MAX_ID,
    MAX_LIMIT,
    BulkIn,
    BulkOut,
    BulkPage,
    BulkPreviewIn,
    BulkPreviewOut,
)

router = Router(tags=["bulk"])

BulkId = Path(..., ge=1, le=MAX_ID)


def selection_of(payload: BulkPreviewIn) -> dict[str, Any]:
    """The selection as the engine takes it (both or neither kind: its clear 400)."""
    selection: dict[str, Any] = {}
    if payload.ids is not None:
        selection["ids"] = payload.ids
    if payload.filter is not None:
        selection["filter"] = payload.filter.model_dump(exclude_none=True)
    return selection


def bulk_out(bulk: BulkAction) -> dict[str, Any]:
    refused = engine_api.refusals_out(bulk.refused if isinstance(bulk.refused, dict) else {})
    return {
        "id": bulk.pk,
        "action": bulk.action,
        "reason": bulk.reason,
        "selection": bulk.selection if isinstance(bulk.selection, dict) else {},
        "state": bulk.state,
        "total": bulk.total,
        "processed": bulk.processed,
        "succeeded": bulk.succeeded,
        "refused_count": sum(row["count"] for row in refused),
        "refused": refused,
        "error": bulk.error,
        "created": bulk.created,
        "finished": bulk.finished,
    }


def get_own(request: HttpRequest, bulk_id: int) -> BulkAction:
    """The caller's bulk action; 404 otherwise (another user's looks missing)."""
    found = engine_api.visible_bulk_actions(current_user(request)).filter(pk=bulk_id).first()
    if found is None:
        raise Http404
    return found


@router.post("/bulk/preview", response=BulkPreviewOut, summary="Preview a bulk action")
def preview_bulk(request: HttpRequest, payload: BulkPreviewIn) -> Any:
    """What `action` would do now to the flows selected by `ids` or `filter`: of `total`,
    how many it `applies` to (per state, `affected`) and which it refuses, by reason (a
    state the action does not fit; a flow you may not act on, which is how a missing id
    reads too). Nothing is done. 400 for a filter that matches no flow, malformed ids, both
    or neither of `ids` and `filter`, or more than 10,000 flows."""
    user = current_user(request)
    return engine_api.preview_bulk(user, payload.action, selection_of(payload)).as_json()


@router.post("/bulk", response={201: BulkOut}, summary="Start a bulk action")
def start_bulk(request: HttpRequest, payload: BulkIn) -> Status[Any]:
    """Start `action` over the flows selected by `ids` or `filter`, with `reason`: the
    flows are fixed now and acted on in the background (follow it at
    `GET /api/bulk/{id}`). Each flow is checked as it is acted on, and refused then if it
    no longer fits. 400 for what the preview refuses, and when none of the selected flows
    can take the action now (nothing is started)."""
    user = current_user(request)
    started = engine_api.start_bulk(user, payload.action, selection_of(payload), payload.reason)
    return Status(201, bulk_out(get_own(request, started.pk)))


@router.get("/bulk", response=BulkPage, summary="List your bulk actions")
def list_bulk(
    request: HttpRequest,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0, le=MAX_ID),
) -> dict[str, Any]:
    """Your bulk actions, newest first."""
    found = engine_api.visible_bulk_actions(current_user(request)).defer("flow_ids")
    return {
        "count": found.count(),
        "limit": limit,
        "offset": offset,
        "items": [bulk_out(bulk) for bulk in found[offset : offset + limit]],
    }


@router.get("/bulk/{bulk_id}", response=BulkOut, summary="Get a bulk action")
def get_bulk(request: HttpRequest, bulk_id: int = BulkId) -> Any:
    """A bulk action's progress: `processed` of `total`, how many `succeeded`, the refused
    by reason (the first flows of each), and its `state`; `finished` once it ended."""
    return bulk_out(get_own(request, bulk_id))
