"""The caller's notifications: a step began waiting for them, or its deadline is near."""

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router

from engine import api as engine_api
from studio.api.auth import current_user
from studio.api.present import notification_out
from studio.api.schemas import DEFAULT_LIMIT, MAX_ID, MAX_LIMIT, NotificationPage

router = Router(tags=["notifications"])


@router.get("/notifications", response=NotificationPage, summary="My notifications")
def list_notifications(
    request: HttpRequest,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0, le=MAX_ID),
) -> dict[str, Any]:
    """Your notifications, newest first; `unread` counts those whose wait is still open
    (`cleared` null). They clear themselves when the wait is answered or ends."""
    user = current_user(request)
    notes = engine_api.notifications_of(user).order_by("-created", "-id")
    return {
        "count": notes.count(),
        "limit": limit,
        "offset": offset,
        "unread": engine_api.unread_count(user),
        "items": [notification_out(note) for note in notes[offset : offset + limit]],
    }
