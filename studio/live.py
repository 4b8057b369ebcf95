"""Where engine events leave for the browser: the sink the studio connects to
`engine.events` at start-up. Each committed event goes to the Channels groups of its flow (or
LTM run), of its owner, and of the staff's "everything" dashboard.

Channel layers deliver at most once: the websocket consumer fills gaps from the database (each
event carries its flow's sequence number), so a lost message costs latency, never state.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

ALL_FLOWS = "flows-all"


def flow_group(flow_id: int) -> str:
    return f"flow-{flow_id}"


def ltm_group(run_id: Any) -> str:
    return f"ltm-{run_id}"


def owner_group(user_id: int | None) -> str:
    return f"owner-{user_id}"


def groups_for(event: dict[str, Any]) -> list[str]:
    if event.get("type") == "ltm.event":
        target = ltm_group(event["run"])
    else:
        target = flow_group(event["flow"])
    groups = [target, ALL_FLOWS]
    if event.get("owner") is not None:
        groups.append(owner_group(event["owner"]))
    return groups


def publish(events: list[dict[str, Any]]) -> None:
    """The engine's event sink: send each event to its groups."""
    layer = get_channel_layer()
    if layer is None:
        return
    send_from_thread = getattr(layer, "send_from_thread", None)
    for event in events:
        message = {"type": "live.event", "event": event}
        for group in groups_for(event):
            if send_from_thread is not None:
                send_from_thread(group, message)
            else:
                try:
                    async_to_sync(layer.group_send)(group, message)
                except Exception:
                    logger.exception("live update to %s not sent", group)
