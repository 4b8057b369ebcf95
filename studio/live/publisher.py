"""Where engine events leave for the browser: the sink the studio connects to
`engine.events` at start-up. Each committed event goes to the Channels groups of its flow (or
LTM run), of its owner, and of the staff's "everything" dashboard. A change of some users'
notifications (`{"type": "notifications", "users": [...], "flow": id}`) goes to each of
those users' own group, which only their sockets that show the notification count join; so
does the progress of a user's bulk action (`{"type": "bulk", "users": [id], "bulk": id, ...}`).

Channel layers deliver at most once: the websocket consumer fills gaps from the database (each
event carries its flow's sequence number), so a lost message costs latency, never state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

ALL_FLOWS = "flows-all"
# The consumer's handler of each kind of engine event (every other is "live.event").
KINDS = {"notifications": "live.notifications", "bulk": "live.bulk"}


def flow_group(flow_id: int) -> str:
    return f"flow-{flow_id}"


def ltm_group(run_id: Any) -> str:
    return f"ltm-{run_id}"


def owner_group(user_id: int | None) -> str:
    return f"owner-{user_id}"


def user_group(user_id: int | None) -> str:
    """A user's sockets that follow their notifications (every page's header count). Not
    the owner's group: that one carries every event of the user's flows to their dashboards,
    which a page showing only the count has no use for."""
    return f"user-{user_id}"


def groups_for(event: dict[str, Any]) -> list[str]:
    if event.get("type") in ("notifications", "bulk"):
        users = event.get("users") or []
        return [user_group(user) for user in users if isinstance(user, int)]
    if event.get("type") == "ltm.event":
        target = ltm_group(event["run"])
    else:
        target = flow_group(event["flow"])
    groups = [target, ALL_FLOWS]
    if event.get("owner") is not None:
        groups.append(owner_group(event["owner"]))
    return groups


def publish(events: list[dict[str, Any]]) -> None:
    """The engine's event sink: send each event to its groups. It never waits for the
    channel layer: the engine's worker goes on with its next step at once."""
    layer = get_channel_layer()
    if layer is None:
        return
    # (a plain `getattr` would not do: the Redis pub/sub layer looks attributes up on its
    # layer of the running event loop, and raises in a thread without one)
    send_from_thread = getattr(type(layer), "send_from_thread", None)
    for event in events:
        kind = KINDS.get(str(event.get("type")), "live.event")
        for group in groups_for(event):
            # (the group named: a process's hub listens to several with one channel)
            message = {"type": kind, "event": event, "group": group}
            if send_from_thread is not None:
                send_from_thread(layer, group, message)  # the server's loop (embedded mode)
            else:
                _publisher.send(layer, group, message)


class Publisher:
    """Sends to the channel layer from a process without an event loop of its own (a
    consumer process, scaled out): one loop thread per process keeps its Redis connection
    open, and one sender drains the queue in order, so events leave in commit order and
    a worker never waits on Redis. (`async_to_sync` would start a loop, a thread and a
    connection per message.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[Any, str, dict[str, Any]]] | None = None

    def send(self, layer: Any, group: str, message: dict[str, Any]) -> None:
        loop, queue = self._start()
        loop.call_soon_threadsafe(queue.put_nowait, (layer, group, message))

    def _start(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]:
        with self._lock:
            if self._loop is None or self._queue is None:
                loop = asyncio.new_event_loop()
                queue: asyncio.Queue[Any] = asyncio.Queue()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_until_complete(self._drain(queue))

                threading.Thread(target=run, name="flowstudio-live-publisher", daemon=True).start()
                ready.wait(10)
                self._loop, self._queue = loop, queue
            return self._loop, self._queue

    async def _drain(self, queue: asyncio.Queue[Any]) -> None:
        while True:
            layer, group, message = await queue.get()
            try:
                await layer.group_send(group, message)
            except Exception:  # at most once: watchers catch up from the database
                logger.exception("live update to %s not sent", group)


_publisher = Publisher()
