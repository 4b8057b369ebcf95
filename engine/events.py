"""The single exit for engine events.

Every committed change of a flow (or LTM run) leaves the engine here, after its transaction
commits. The engine never imports the channel layer: the studio connects a sink at start-up
(see `studio.live`), tests may connect their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)

Event = dict[str, Any]
Sink = Callable[[list[Event]], None]

_sinks: list[Sink] = []


def connect(sink: Sink) -> None:
    if sink not in _sinks:
        _sinks.append(sink)


def disconnect(sink: Sink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def publish(events: list[Event]) -> None:
    """Hand committed events to every sink; a failing sink never breaks the engine (the
    database is the truth, and clients catch up from it)."""
    if not events:
        return
    for sink in list(_sinks):
        try:
            sink(events)
        except Exception:
            logger.exception("event sink %r failed", sink)


def publish_on_commit(events: Iterable[Event]) -> None:
    batch = list(events)
    if batch and _sinks:
        transaction.on_commit(lambda: publish(batch))
