"""The websocket consumer of live updates (`/ws/live/`).

A browser asks to watch a flow (or an LTM run, or its dashboard); the consumer checks the user
may see it, then forwards every event of it in sequence order. Channel layers may drop or
reorder messages, so for every watched stream the consumer remembers the last sequence number
it sent and fills any gap from the database before sending on: a client sees each event once,
in order, and a client that reconnects with `since` gets what it missed.

Protocol (JSON). Client: {"action": "watch_flow", "flow": 7, "since": 12} |
{"action": "watch_ltm", "run": "…", "since": 3} | {"action": "watch_dashboard", "rows":
{"7": 12, …}, "after": 9} | {"action": "watch_notifications"} | {"action": "watch_bulk", "bulk": 4,
"processed": 150, "state": "running"} | {"action": "ping"}. On
every (re)connection a page sends what it shows — the seq its flow or run shows as `since`,
its dashboard rows' seqs and newest flow id — and the server sends what differs from the
database. Server: {"type": "event", "stream":
"flow", "id": 7, "seq": 13, "event": {…}} at once, then {"type": "fragments", "id": 7, "seq":
13, "html": {element id: fragment}} rendered for the newest event | {"type": "row", "id": 7,
"seq": 13, "state": …, "kind": …, "created": …, "html": …} (a dashboard row: each flow's newest
row, a few times a second at most) | {"type": "rows", "rows": [row, …]} (several at once) |
{"type": "watching", …} | {"type": "notifications", "count": 2, "flow": 7} (the user's
open notifications: at once when asked, then whenever they change) | {"type": "bulk", "id": 4,
"processed": 200, "state": "running", "html": {element id: fragment}} (the progress of one of
the user's bulk actions, at once if it moved since the page showed it, then after each chunk
until it ends) | {"type": "error", "message": …}.

A flow is watched by whoever may see its page (`engine.api.can_see_flow`): its owner,
operators, and the assignees of its wait while it waits for them. An assignee's socket gets
events without the results and inputs they carry, and its own fragments; once the flow no
longer waits for them it gets a last fragment saying so, and nothing more of the flow.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from engine import api
from studio.live import fragments, publisher, reads, wire
from studio.live.hub import encode_rows, hub_of, row_message

Stream = tuple[str, Any]  # ("flow", id) or ("ltm", run id)
ACTIONS = (
    "watch_flow",
    "watch_ltm",
    "watch_dashboard",
    "watch_notifications",
    "watch_bulk",
    "ping",
)
MAX_BULKS = 20  # bulk actions one socket follows at once
# The largest text frame read. The client's own are a few hundred bytes (a dashboard's rows
# a few kilobytes); daphne refuses frames over 1 MiB itself (close 1009).
MAX_FRAME = 64 * 1024
# A page's fragments (its live area: a render of its partial template for the newest state)
# follow its events: up to SETTLE after the first event of a burst, so that what commits
# soon after it (an answer, the step it lets run, the flow's end) shows in one render; at
# once when the newest event leaves the stream at rest (`at_rest`: a flow waiting, retrying
# later or finished; a run finished) and the rest of its commit has come (a step's result
# and the flow's end are one commit's two events, in one state), after which nothing
# follows without someone or a timer; then at most one render per RENDER_GAP, or per
# RENDER_GAP_FACTOR times the last render's duration if that is longer: under load, renders
# spread out by themselves.
SETTLE = 0.02
RENDER_GAP = 0.05
RENDER_GAP_FACTOR = 4
# Flow states after which no event follows at once (a person's answer, a retry's time, an
# operator's override come later); a run's states after which none follows at all.
FLOW_AT_REST = frozenset(
    state.value for state in (api.FlowState.WAITING, api.FlowState.RETRYING, *api.FINISHED)
)
RUN_AT_REST = frozenset({"complete", "failed", "killed"})


def at_rest(kind: str, event: dict[str, Any]) -> bool:
    """Whether `event` (of a "flow" or an "ltm" stream) leaves its stream where nothing
    follows at once: its page's render need not wait for more."""
    if kind == "flow":
        return event.get("state") in FLOW_AT_REST
    data = event.get("data")
    return (
        event.get("kind") == "run.state"
        and isinstance(data, dict)
        and data.get("to") in RUN_AT_REST
    )


# Every watcher of a stream gets the same frames: they are encoded and rendered once per
# server process, not once per socket. Both live in the server's event loop (one thread).
_FRAMES = 4096
_frames: OrderedDict[tuple[Any, ...], wire.Frame] = OrderedDict()
_rendering: dict[tuple[Any, ...], asyncio.Future[Any]] = {}


def frame(key: tuple[Any, ...], build: Callable[[], dict[str, Any]]) -> wire.Frame:
    """The frame of a message, encoded (and framed, see `wire`) once for all the sockets
    that send it."""
    found = _frames.get(key)
    if found is None:
        found = _frames[key] = wire.Frame(json.dumps(build()))
        if len(_frames) > _FRAMES:
            _frames.popitem(last=False)
    return found


def fragments_message(kind: str, key: Any, seq: int, html: Any) -> dict[str, Any]:
    """The message carrying the fragments rendered for `seq` of a stream."""
    return {"type": "fragments", "stream": kind, "id": key, "seq": seq, "html": html}


async def shared_render(
    key: tuple[Any, ...], peek: Callable[[], Any], render: Callable[[], Any]
) -> Any:
    """`render()` (in a database thread) once per key however many watchers ask at the same
    time: the first starts it, the others await its result."""
    value = peek()
    if value is not None:
        return value
    task = _rendering.get(key)
    if task is None:
        task = asyncio.ensure_future(database_sync_to_async(render)())
        _rendering[key] = task
        task.add_done_callback(lambda _: _rendering.pop(key, None))
    return await asyncio.shield(task)


class LiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.user = user
        self.sent: dict[Stream, int] = {}  # last sequence number sent per watched stream
        self.rows: dict[Any, int] = {}  # last sequence number of each dashboard row sent
        self.open_rows: set[int] = set()  # rows whose flow had not finished when last sent
        self.latest: dict[Stream, dict[str, Any]] = {}  # newest event per stream, to render
        # Streams whose newest event's commit has more of their events on the way.
        self.unfinished: set[Stream] = set()
        self.rendering: set[Stream] = set()
        # Streams whose first render of a burst waits (SETTLE): set when one comes to rest.
        self.settling: dict[Stream, asyncio.Event] = {}
        # What the user is to each watched stream: the fragments they get (a flow's
        # `pages.viewer_role`, an LTM run's staff or not).
        self.roles: dict[Stream, Any] = {}
        self.unread: int | None = None  # the notification count sent, once asked for
        self.bulks: dict[int, tuple[int, str]] = {}  # bulk actions followed: (processed, state)
        self.hub = hub_of(self.channel_layer)
        self.connection = wire.connection_of(self.base_send)  # daphne's, to write frames to
        await self.accept()
        await self.hub.add(self)
        await self.send_json({"type": "hello", "user": user.get_username()})

    async def disconnect(self, code: int) -> None:
        hub = getattr(self, "hub", None)
        if hub is not None:
            hub.forget(self)

    async def sync_bulks(self) -> None:
        """The bulk actions this socket follows, compared with the database (the hub's
        periodic check calls it: a chunk whose message was lost)."""
        found = await database_sync_to_async(reads.bulk_progress)(self.user, list(self.bulks))
        for key, shown in list(self.bulks.items()):
            if found.get(key) != shown:
                await self.send_bulk(key)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections (a hop to a worker thread) before every
        # message. Live events need no database unless they go through
        # `database_sync_to_async`, which does the same itself; skipping the hop for them
        # took a tenth of the server's time with a hundred watchers.
        if message.get("type") == "live.event":
            await self.live_event(message)
        else:
            await super().dispatch(message)

    async def receive(self, text_data: str | None = None, bytes_data: Any = None) -> None:
        """A client's frame. A mistake — a binary frame (the protocol is JSON text), a text
        that is not JSON or too large, an unknown action, a field of the wrong type — is
        answered with an error message, and the socket stays open: nothing a client sends
        raises here, where it would close the socket with a server error (1011) and log a
        traceback. (Autobahn, under daphne, closes a socket itself on a text frame that is
        not UTF-8, 1007, and on one over daphne's 1 MiB, 1009; an application may close with
        1000 or 3000-4999 only.)"""
        if text_data is None:
            await self.error("binary frames are not understood: send JSON text")
            return
        if len(text_data) > MAX_FRAME:
            await self.error("message too large")
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than it decodes
            await self.error("invalid JSON")
            return
        await self.receive_json(content)

    async def error(self, message: str, stream: str | None = None) -> None:
        answer = {"type": "error", "message": message}
        if stream:
            answer["stream"] = stream
        await self.send_json(answer)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self.error("send a JSON object")
            return
        action = content.get("action")
        if action == "watch_flow":
            await self.watch(("flow", content.get("flow")), content.get("since", 0))
        elif action == "watch_ltm":
            await self.watch(("ltm", content.get("run")), content.get("since", 0))
        elif action == "watch_dashboard":
            await self.watch_dashboard(content.get("rows"), content.get("after"))
        elif action == "watch_notifications":
            await self.watch_notifications()
        elif action == "watch_bulk":
            await self.watch_bulk(
                content.get("bulk"), content.get("processed"), content.get("state")
            )
        elif action == "ping":
            await self.send_json({"type": "pong"})
        else:  # (never echoed: it may be anything, of any size)
            await self.error("unknown action: " + ", ".join(ACTIONS) + " are known")

    async def watch(self, stream: Stream, since: Any) -> None:
        kind, key = stream
        key = reads.parse_key(kind, key)
        start = reads.count(0 if since is None else since)
        if key is None:
            await self.error(f"invalid {'flow' if kind == 'flow' else 'run'} id", kind)
            return
        if start is None:
            await self.error("invalid since: a sequence number, 0 or more", kind)
            return
        if kind == "flow":
            role = await database_sync_to_async(reads.flow_role)(self.user, key)
        elif await database_sync_to_async(reads.may_see)(self.user, kind, key):
            role = bool(self.user.is_staff)
        else:
            role = None
        if role is None:
            # The same answer for a missing and a foreign object: nothing is learnt.
            await self.error("not found", kind)
            return
        stream = (kind, key)
        self.roles[stream] = role
        group = publisher.flow_group(key) if kind == "flow" else publisher.ltm_group(key)
        await self.channel_layer.group_add(group, self.channel_name)
        self.sent[stream] = start
        await self.catch_up(stream)
        await self.send_json(
            {"type": "watching", "stream": kind, "id": key, "seq": self.sent[stream]}
        )

    async def watch_dashboard(self, rows: Any, after: Any) -> None:
        """Watch the rows of a dashboard. The page says what it shows — `rows`, its rows'
        flow ids with the seq each row shows, and `after`, the newest flow id it knows if it
        adds new flows as they come — and gets at once the rows that differ from the
        database: a page that was offline (the server restarted, the network went away)
        catches up on reconnecting, as a flow page does with `since`."""
        shown = reads.parse_rows(rows)
        newest = None if after is None else reads.count(after)
        if shown is None:
            await self.error(
                f'invalid rows: {{"<flow id>": <seq>}}, at most {reads.MAX_ROWS}',
                "dashboard",
            )
            return
        if after is not None and newest is None:
            await self.error("invalid after: a flow id, 0 or more", "dashboard")
            return
        everything = await database_sync_to_async(reads.sees_everything)(self.user)
        group = publisher.ALL_FLOWS if everything else publisher.owner_group(self.user.pk)
        await self.hub.watch_dashboard(group, self)
        if shown or newest is not None:
            lacking, finished = await database_sync_to_async(reads.dashboard_lacks)(
                self.user, shown, newest
            )
            for key, done in finished.items():  # the rows it may see, as it shows them
                self.rows[key] = shown[key]
                if done:
                    self.open_rows.discard(key)
                else:
                    self.open_rows.add(key)  # and the periodic check follows them from here
            for event in lacking:
                await self.send_row(event)
        await self.send_json({"type": "watching", "stream": "dashboard"})

    def limited(self, stream: Stream) -> bool:
        """Whether the socket watches the stream as an assignee: for as long as the flow
        waits for them, and without the results and inputs of its events."""
        role = self.roles.get(stream)
        return isinstance(role, tuple) and role[0] == "assignee"

    async def still_sees(self, stream: Stream, seq: int) -> bool:
        """For an assignee's socket: whether the flow still waits for them. If not, it stops
        watching, and the page is told that the flow no longer waits for them."""
        if not self.limited(stream):
            return True
        kind, key = stream
        if await database_sync_to_async(reads.may_see)(self.user, kind, key):
            return True
        self.sent.pop(stream, None)
        self.latest.pop(stream, None)
        self.unfinished.discard(stream)
        self.roles.pop(stream, None)
        await self.channel_layer.group_discard(publisher.flow_group(key), self.channel_name)
        html = await database_sync_to_async(fragments.gone)(key, seq)
        await self.send_json(fragments_message(kind, key, seq, html))
        return False

    async def watch_notifications(self) -> None:
        """Follow the user's notification count (the header of every page): sent now, and
        again whenever the engine says their notifications changed."""
        await self.hub.watch_user(self)
        await self.send_count(None)

    async def watch_bulk(self, key: Any, processed: Any, state: Any) -> None:
        """Follow one of the user's bulk actions while it runs: its progress is sent now if
        it moved since the page showed it (`processed`, `state`), then again after each
        chunk (its events come by the user's group) until it ends. Another user's, or a
        missing one, is "not found"."""
        key, shown = reads.count(key, least=1), reads.count(processed)
        if key is None or shown is None or not isinstance(state, str):
            await self.error('invalid bulk: {"bulk": <id>, "processed": <n>, "state": ...}', "bulk")
            return
        found = await database_sync_to_async(reads.bulk_progress)(self.user, [key])
        if key not in found:
            await self.error("not found", "bulk")
            return
        if key not in self.bulks and len(self.bulks) >= MAX_BULKS:
            await self.error(f"too many bulk actions followed: at most {MAX_BULKS}", "bulk")
            return
        await self.hub.watch_user(self)
        self.bulks[key] = (shown, state[:16])
        if found[key] != self.bulks[key]:
            await self.send_bulk(key)
        else:
            self.forget_ended(key)

    def forget_ended(self, key: int) -> None:
        if key in self.bulks and self.bulks[key][1] not in reads.BULK_RUNNING:
            del self.bulks[key]

    async def send_bulk(self, key: int) -> None:
        """The bulk action's progress as it is now, rendered for its page."""
        rendered = await database_sync_to_async(fragments.bulk)(self.user, key)
        if rendered is None:  # (gone)
            self.bulks.pop(key, None)
            return
        (processed, state), html = rendered
        if self.bulks.get(key) == (processed, state):
            return  # already sent (a chunk's event and the periodic check crossed)
        self.bulks[key] = (processed, state)
        message = {"type": "bulk", "id": key, "processed": processed, "state": state}
        await self.send_json({**message, "html": html})
        self.forget_ended(key)

    async def live_bulk(self, message: dict[str, Any]) -> None:
        """A bulk action of this user's moved (a chunk committed, or it ended)."""
        event = message.get("event") or {}
        key = event.get("bulk")
        if key in self.bulks and (event.get("processed"), event.get("state")) != self.bulks[key]:
            await self.send_bulk(key)

    async def send_count(self, flow: Any) -> None:
        count = await database_sync_to_async(reads.unread)(self.user)
        self.unread = count
        await self.send_json({"type": "notifications", "count": count, "flow": flow})

    async def catch_up(self, stream: Stream, until: int | None = None) -> None:
        """Send the stored events after the last one sent (up to `until`)."""
        if not await self.still_sees(stream, self.sent.get(stream, 0)):
            return
        kind, key = stream
        events = await database_sync_to_async(reads.events_since)(
            kind, key, self.sent[stream], until
        )
        for index, event in enumerate(events):
            # (up to `until`: the event after it is on its way)
            more = until is not None or index + 1 < len(events)
            await self.send_event(stream, event, more)

    async def send_event(self, stream: Stream, event: dict[str, Any], more: bool = False) -> None:
        """Send one event of `stream` (`more`: others of the same commit, or of the same
        catch-up, come right after it)."""
        seq = event["seq"]
        if seq <= self.sent.get(stream, 0):
            return  # already sent (it came by two groups, or by catch-up first)
        if seq > self.sent[stream] + 1:
            await self.catch_up(stream, until=seq - 1)  # a message was lost on the way
        if stream not in self.sent:
            return  # no longer watched (an assignee whose wait is over)
        self.sent[stream] = seq
        kind, key = stream
        limited = self.limited(stream)
        shown = reads.limited_event(event) if limited else event
        await self.send_frame(
            frame(
                ("event", kind, key, seq, limited),
                lambda: {"type": "event", "stream": kind, "id": key, "seq": seq, "event": shown},
            )
        )
        self.schedule_render(stream, event, more)

    def schedule_render(self, stream: Stream, event: dict[str, Any], more: bool = False) -> None:
        """Render the page's fragments for the newest event of `stream`, once: while a render
        runs, later events only mark the stream to render again (a burst of events costs one
        or two renders, and events themselves are never held back by rendering)."""
        self.latest[stream] = event
        if more:
            self.unfinished.add(stream)
        else:
            self.unfinished.discard(stream)
        if stream not in self.rendering:
            self.rendering.add(stream)
            asyncio.ensure_future(self.render_loop(stream))
        elif stream in self.settling and self.at_rest(stream):
            self.settling[stream].set()  # what the page waited for has come: render it now

    def at_rest(self, stream: Stream) -> bool:
        """Whether the newest event of `stream` leaves it at rest, its commit's last event
        come (the events of one commit share its state: the first of them is not the
        outcome's whole)."""
        return stream not in self.unfinished and at_rest(stream[0], self.latest[stream])

    async def settle(self, stream: Stream) -> None:
        """Wait up to SETTLE for more of a burst, unless its newest event is at rest."""
        if self.at_rest(stream):
            return
        rested = self.settling[stream] = asyncio.Event()
        try:
            await asyncio.wait_for(rested.wait(), SETTLE)
        except TimeoutError:
            pass
        finally:
            self.settling.pop(stream, None)

    async def render_loop(self, stream: Stream) -> None:
        kind, key = stream
        loop = asyncio.get_running_loop()
        try:
            rendered = 0
            await self.settle(stream)
            while self.latest.get(stream) and self.latest[stream]["seq"] > rendered:
                seq = self.latest[stream]["seq"]
                event = self.latest[stream]
                role = self.roles.get(stream)
                started = loop.time()
                html = await shared_render(
                    ("fragments", kind, key, seq, role),
                    partial(fragments.peek, kind, key, seq, role),
                    partial(fragments.fragments, self.user, kind, key, event, role),
                )
                rendered = seq
                shared = frame(
                    ("fragments", kind, key, seq, role),
                    partial(fragments_message, kind, key, seq, html),
                )
                took = loop.time() - started
                await self.send_frame(shared)
                # Fragments are snapshots: the newest state soon after each change, while a
                # burst of events (or a hundred watchers) does not turn into a flood of
                # renders (watchers of a stream share each render).
                await asyncio.sleep(max(RENDER_GAP, RENDER_GAP_FACTOR * took))
        finally:
            self.rendering.discard(stream)

    async def live_event(self, message: dict[str, Any]) -> None:
        """A committed engine event, from the channel layer."""
        event = message["event"]
        stream = publisher.stream_of(event)
        if stream in self.sent and await self.still_sees(stream, event["seq"]):
            await self.send_event(stream, event, bool(message.get("more")))

    async def send_row(self, event: dict[str, Any]) -> None:
        """The dashboard row of the event's flow, if it is newer than the one sent (a row the
        page lacks when it connects). The group this socket joined is the permission: its
        owner's flows, or all of them for staff."""
        key, seq = event["flow"], event["seq"]
        if seq <= self.rows.get(key, 0):
            return
        html = await shared_render(
            ("row", key, seq),
            lambda: fragments.peek_row(key, seq),
            lambda: fragments.row(key, seq),
        )
        if not html:
            return  # the flow is gone
        message = row_message(event, html)
        await self.take_rows([message], frame(("row", key, seq), lambda: message))

    async def take_rows(self, messages: list[dict[str, Any]], shared: wire.Frame) -> None:
        """Send these dashboard rows (`shared`: them encoded, the same frame for every socket
        that gets them all), less any this socket already has."""
        fresh = [
            message for message in messages if message["seq"] > self.rows.get(message["id"], 0)
        ]
        if not fresh:
            return
        for message in fresh:
            self.rows[message["id"]] = message["seq"]
            if message["state"] in api.FINISHED:
                self.open_rows.discard(message["id"])
            else:
                self.open_rows.add(message["id"])
        if len(fresh) < len(messages):
            shared = wire.Frame(encode_rows(fresh))
        await self.send_frame(shared)  # (a thousand sockets take this path per frame)

    async def send_frame(self, shared: wire.Frame) -> None:
        """Send a frame that other sockets send too: on daphne framed once for all of them
        and written straight to this connection (see `wire`), elsewhere as `websocket.send`."""
        if self.connection is not None:
            wire.write(self.connection, shared)
        else:
            await self.base_send({"type": "websocket.send", "text": shared.text})
