"""A flow's event log after a sequence number: how a client catches up after a gap."""

from typing import Any

from django.http import HttpRequest
from ninja import Path, Query, Router

from engine import api as engine_api
from engine.models import FlowEvent
from studio.api.auth import current_user
from studio.api.flows import get_seen
from studio.api.present import event_out
from studio.api.schemas import MAX_ID, EventPage

router = Router(tags=["events"])

MAX_EVENTS = 500


@router.get("/flows/{flow_id}/events", response=EventPage, summary="A flow's events")
def flow_events(
    request: HttpRequest,
    flow_id: int = Path(..., ge=1, le=MAX_ID),
    since: int = Query(0, ge=0, le=MAX_ID, description="the last sequence number you have"),
    limit: int = Query(MAX_EVENTS, ge=1, le=MAX_EVENTS),
) -> dict[str, Any]:
    """Events with a sequence number above `since`, oldest first; `more` says whether to
    ask again from the last one given. Whoever may see the flow may read them (an assignee
    of a step that hides earlier results gets them without results and inputs)."""
    flow = get_seen(request, flow_id)
    shown = engine_api.sees_results(current_user(request), flow)
    rows = list(
        FlowEvent.objects.filter(flow=flow, seq__gt=since)
        .select_related("actor")
        .order_by("seq")[: limit + 1]
    )
    return {
        "flow": flow.pk,
        "since": since,
        "seq": flow.seq,
        "more": len(rows) > limit,
        "events": [event_out(event, shown) for event in rows[:limit]],
    }
