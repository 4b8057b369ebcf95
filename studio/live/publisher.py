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


def messages_for(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Each event's channel-layer message to each of its groups, as `(group, message)`."""
    messages = []
    for event in events:
        kind = KINDS.get(str(event.get("type")), "live.event")
        for group in groups_for(event):
            # (the group named: a process's hub listens to several with one channel)
            messages.append((group, {"type": kind, "event": event, "group": group}))
    return messages


def publish(events: list[dict[str, Any]]) -> None:
    """The engine's event sink: send each event to its groups. It never waits for the
    channel layer: the engine's worker goes on with its next step at once. A commit's
    messages are handed over together (one wake-up of the loop that sends them)."""
    layer = get_channel_layer()
    messages = messages_for(events)
    if layer is None or not messages:
        return
    # (a plain `getattr` would not do: the Redis pub/sub layer looks attributes up on its
    # layer of the running event loop, and raises in a thread without one)
    send_from_thread = getattr(type(layer), "send_from_thread", None)
    if send_from_thread is not None:
        send_from_thread(layer, messages)  # the server's loop (embedded mode)
    else:
        _publisher.send(layer, messages)


class Publisher:
    """Sends to the channel layer from a process without an event loop of its own (a
    consumer process, scaled out): one loop thread per process keeps its Redis connection
    open, and one sender drains the queue in order, so events leave in commit order and
    a worker never waits on Redis. (`async_to_sync` would start a loop, a thread and a
    connection per message.)

    What has queued up by the time the sender looks leaves in one round trip per Redis
    host (a pipeline of PUBLISH commands: `_publish_all`); one by one, each message cost the
    sender about 0.1 ms of CPU, which the engine's workers on the same cores paid for (a
    step publishes about nine: its events, each to three groups)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[Any, list[tuple[str, dict[str, Any]]]]] | None = None
        self.trips = 0  # round trips to the channel layer so far (batches, or messages)

    def send(self, layer: Any, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """Queue `(group, message)` pairs, sent in this order after those queued before."""
        loop, queue = self._start()
        loop.call_soon_threadsafe(queue.put_nowait, (layer, messages))

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
            layer, messages = await queue.get()
            batch = list(messages)
            while not queue.empty():  # everything queued meanwhile goes along
                other, more = queue.get_nowait()
                if other is not layer:
                    await self._send(layer, batch)
                    layer, batch = other, []
                batch.extend(more)
            await self._send(layer, batch)

    async def _send(self, layer: Any, batch: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            pipelined = await _publish_all(layer, batch)
        except Exception:  # at most once: watchers catch up from the database
            logger.exception("live updates to %d groups not sent", len(batch))
            self.trips += 1
            return
        if pipelined is not None:
            self.trips += pipelined
            return
        for group, message in batch:  # a layer of another kind: one by one
            self.trips += 1
            try:
                await layer.group_send(group, message)
            except Exception:
                logger.exception("live update to %s not sent", group)


async def _publish_all(layer: Any, batch: list[tuple[str, dict[str, Any]]]) -> int | None:
    """Publish `batch` through channels_redis's pub/sub layer (`RedisPubSubChannelLayer`)
    in one pipeline per shard, exactly as its `group_send` would publish each message (the
    same channel names and serializer, each shard's lock held), and return the round trips
    taken; None when `layer` is not that layer (the caller sends one by one)."""
    try:
        loop_layer = layer._get_layer()
        channel_of, shard_of = loop_layer._get_group_channel_name, loop_layer._get_shard
    except AttributeError:
        return None
    by_shard: dict[int, tuple[Any, list[tuple[str, bytes]]]] = {}
    for group, message in batch:
        channel = channel_of(group)
        shard = shard_of(channel)
        by_shard.setdefault(id(shard), (shard, []))[1].append((channel, layer.serialize(message)))
    for shard, items in by_shard.values():
        async with shard._lock:
            shard._ensure_redis()
            pipeline = shard._redis.pipeline(transaction=False)
            for channel, data in items:
                pipeline.publish(channel, data)
            await pipeline.execute()
    return len(by_shard)


_publisher = Publisher()
