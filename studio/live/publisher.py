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
import queue
import threading
from typing import Any

import redis
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer

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


def stream_of(event: dict[str, Any]) -> tuple[str, Any] | None:
    """The flow or LTM run whose page shows `event` (None: a notification or bulk change)."""
    kind = event.get("type")
    if kind == "ltm.event":
        return ("ltm", event.get("run"))
    if kind in KINDS:
        return None
    return ("flow", event.get("flow"))


def messages_for(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Each event's channel-layer message to each of its groups, as `(group, message)`.

    `events` are one commit's. An event followed in it by more of its flow's (or run's)
    says so (`"more": True`): a page about to show the commit's outcome waits for the rest
    of it (the step's result, then the flow's end) instead of showing half of it."""
    last: dict[Any, int] = {}
    for index, event in enumerate(events):
        last[stream_of(event)] = index
    messages = []
    for index, event in enumerate(events):
        kind = KINDS.get(str(event.get("type")), "live.event")
        stream = stream_of(event)
        more = stream is not None and last[stream] > index
        for group in groups_for(event):
            # (the group named: a process's hub listens to several with one channel)
            message: dict[str, Any] = {"type": kind, "event": event, "group": group}
            if more:
                message["more"] = True
            messages.append((group, message))
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
    consumer process, scaled out; a server's request threads): one sender thread per
    process drains a queue in order, so events leave in commit order and a worker never
    waits on Redis. (`async_to_sync` would start a loop, a thread and a connection per
    message.)

    Through channels_redis's pub/sub layer, what has queued up by the time the sender looks
    leaves in one round trip per Redis host (`_Routes.publish_all`): its PUBLISH commands
    written at once on a plain, synchronous redis-py connection kept open, with the layer's
    own channel names, hosts and serializer, so its servers read them as they read its
    `group_send`. Through redis-py's asyncio client, on a loop of this thread's, a step's
    event (three messages) cost the process about 0.46 ms of CPU, taken from its workers
    under the GIL (scaled out, a 3-step flow took 2-3 ms longer with its events published
    than without); this way about 0.14 ms. A layer of another kind gets each message by
    its `group_send`, on a loop of the sender's own. Nothing raised here reaches the
    engine, nor stops the thread: a batch that fails is logged and dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Any, list[tuple[str, dict[str, Any]]]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        # Per layer (by its id, kept with it: an id is reused once its object is gone).
        self._routes: dict[int, tuple[Any, _Routes | None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # (for other layers)
        self.trips = 0  # round trips to the channel layer so far (batches, or messages)

    def send(self, layer: Any, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """Queue `(group, message)` pairs, sent in this order after those queued before."""
        self._queue.put((layer, messages))
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._drain, name="flowstudio-live-publisher", daemon=True
                    )
                    self._thread.start()

    def _drain(self) -> None:
        while True:
            layer, messages = self._queue.get()
            batch = list(messages)
            while True:  # everything queued meanwhile goes along
                try:
                    other, more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if other is not layer:
                    self._send(layer, batch)
                    layer, batch = other, []
                batch.extend(more)
            self._send(layer, batch)

    def _send(self, layer: Any, batch: list[tuple[str, dict[str, Any]]]) -> None:
        routes = self._routes_of(layer)
        if routes is not None:
            try:
                self.trips += routes.publish_all(layer, batch)
            except Exception:  # at most once: watchers catch up from the database
                logger.exception("live updates to %d groups not sent", len(batch))
                routes.reset()
                self.trips += 1
            return
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        for group, message in batch:  # a layer of another kind: one by one
            self.trips += 1
            try:
                self._loop.run_until_complete(layer.group_send(group, message))
            except Exception:
                logger.exception("live update to %s not sent", group)

    def _routes_of(self, layer: Any) -> _Routes | None:
        known = self._routes.get(id(layer))
        if known is None or known[0] is not layer:
            try:
                routes = _Routes.of(layer)
            except Exception:  # (hosts redis-py does not take as they are: `group_send`)
                logger.exception("live updates go by group_send: the layer's hosts")
                routes = None
            known = self._routes[id(layer)] = (layer, routes)
        return known[1]


class _Routes:
    """Where channels_redis's pub/sub layer publishes a group's messages: its channel name
    and its host, as the layer computes them (a loop layer of its own, made only for that:
    it connects nowhere), and a synchronous connection to each host, opened at first use."""

    def __init__(self, names: Any, clients: list[Any]) -> None:
        self.names = names  # a RedisPubSubLoopLayer
        self.clients = clients  # a redis-py client per host, in the layer's order
        self.connections: list[Any] = [None] * len(clients)

    @classmethod
    def of(cls, layer: Any) -> _Routes | None:
        """The routes of `layer`; None for a layer of another kind, or hosts given in a form
        other than an address or a host and port (a sentinel: its `group_send` then)."""
        if not isinstance(layer, RedisPubSubChannelLayer):
            return None
        names = RedisPubSubLoopLayer(*layer._args, **layer._kwargs, channel_layer=layer)
        clients = []
        for shard in names._shards:
            host = dict(shard.host)
            if "address" in host:
                clients.append(redis.Redis.from_url(host.pop("address"), **host))
            elif "host" in host and "master_name" not in host:
                clients.append(redis.Redis(**host))
            else:
                return None
        return cls(names, clients)

    def publish_all(self, layer: Any, batch: list[tuple[str, dict[str, Any]]]) -> int:
        """Publish `batch`, each host's part in one write and its answers read after it;
        returns the round trips taken."""
        by_host: dict[int, list[tuple[str, str, bytes]]] = {}
        for group, message in batch:
            channel = self.names._get_group_channel_name(group)
            host = self.names._shards.index(self.names._get_shard(channel))
            by_host.setdefault(host, []).append(("PUBLISH", channel, layer.serialize(message)))
        for host, commands in by_host.items():
            connection = self.connections[host]
            if connection is None:
                connection = self.connections[host] = self.clients[
                    host
                ].connection_pool.get_connection()
            connection.send_packed_command(connection.pack_commands(commands))
            for _ in commands:
                connection.read_response()
        return len(by_host)

    def reset(self) -> None:
        """After an error: each connection is closed, and opened again at its next write
        (unread answers of a batch cut short would be read as the next batch's)."""
        for connection in self.connections:
            if connection is not None:
                connection.disconnect()


_publisher = Publisher()
