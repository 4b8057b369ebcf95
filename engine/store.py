"""Writing a flow: compare-and-set on its version, with its events, in one transaction.

SQLite ignores row locks (`select_for_update` is a no-op there), so every write is an
`UPDATE ... WHERE id = ? AND version = ?` whose row count says whether this writer won.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from engine import events as engine_events
from engine.models import Flow, FlowEvent

EventSpec = tuple[str, dict[str, Any]]  # (kind, {"message":..., "data":..., "actor":...})


def lease_until(seconds: float | None = None) -> datetime:
    base = float(settings.FLOWSTUDIO["LEASE_SECONDS"])
    return timezone.now() + timedelta(seconds=max(base, seconds or 0))


def write_flow(
    flow: Flow,
    changes: dict[str, Any],
    events: Iterable[EventSpec] = (),
    *,
    expect_state: str | Iterable[str] | None = None,
) -> bool:
    """Apply `changes` to `flow` if nobody wrote it since it was read (same version, and the
    expected state), appending `events` with the next sequence numbers, all in one
    transaction. On success the in-memory `flow` is updated and True returned; otherwise
    nothing is written and False returned. Events are published after the commit."""
    specs = list(events)
    now = timezone.now()
    query = Flow.objects.filter(pk=flow.pk, version=flow.version)
    if expect_state is not None:
        states = [expect_state] if isinstance(expect_state, str) else list(expect_state)
        query = query.filter(state__in=states)
    with transaction.atomic():
        updated = query.update(
            **changes, version=F("version") + 1, seq=F("seq") + len(specs), updated=now
        )
        if not updated:
            return False
        for name, value in changes.items():
            setattr(flow, name, value)
        flow.version += 1
        flow.updated = now
        rows = []
        for kind, spec in specs:
            flow.seq += 1
            rows.append(
                FlowEvent(
                    flow_id=flow.pk,
                    seq=flow.seq,
                    kind=kind,
                    actor=spec.get("actor"),
                    state=flow.state,
                    position=flow.position,
                    message=spec.get("message", ""),
                    data=spec.get("data", {}),
                    created=now,
                )
            )
        FlowEvent.objects.bulk_create(rows)
        engine_events.publish_on_commit(_event_dict(flow, row) for row in rows)
    return True


def _event_dict(flow: Flow, row: FlowEvent) -> dict[str, Any]:
    event = row.as_dict()
    event.update(type="flow.event", owner=flow.owner_id, version=flow.version)
    return event
