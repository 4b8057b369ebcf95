"""One per server process: the live sockets' share of the work that does not depend on who
is watching, done once for all of them.

- **Dashboard rows.** The hub, not each socket, listens to the dashboards' groups (all flows
  for operators, each owner's flows): one channel per process, so an event reaches a process
  once however many dashboards it serves. Rows are coalesced for a short window
  (`WINDOW`): each flow's newest row only, rendered once (all of a window's rows in one trip
  to the database thread), encoded once per group into one frame — a `row` message, or a
  `rows` message holding several — and that same text is written to every watching socket.
  A socket's only own work is to skip rows it already has (`LiveConsumer.take_rows`). A
  burst of events costs a frame per window, not a frame per event per socket.
- **Notification counts.** The hub listens to the groups of the users whose sockets show
  the header's count: when some users' notifications change it counts each user's once (all
  of a window's users in one query) and writes one frame to each of that user's sockets.
  A bulk action's progress, which comes the same way, goes on to the sockets that follow it.
- **The periodic check** that finds a message the channel layer lost (with nothing after it
  to reveal the gap): every `LIVE_CHECK_SECONDS` (2 s) one query compares every socket's watched
  streams, and one every dashboard row still under way, with the database; every
  `COUNT_EVERY` rounds one grouped query checks every socket's notification count. Only a
  socket that lags does anything more.

Everything here runs in the server's event loop (one thread), and reads the database only
through `database_sync_to_async`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings

from engine import api
from studio.live import fragments, publisher, reads, wire

if TYPE_CHECKING:
    from studio.live.consumer import LiveConsumer

logger = logging.getLogger(__name__)

WINDOW = 0.05  # seconds: dashboard rows leave at most this often, each flow's newest only
# ...and the window widens to this many times the last send's duration: with many sockets
# the hub spends at most a third of the server's loop writing frames, whatever the rate of
# events, and the rest stays for requests and for the sockets' own messages.
SPACING = 2.0
COUNT_EVERY = 5  # live checks between two checks of the notification counts (10 s by default)
CHUNK = 1000  # ids per query of the periodic check
REJOIN_EVERY = 300  # sync rounds between two renewals of the hub's group memberships

_hubs: dict[int, Hub] = {}  # by event loop (a server process has one)


def hub_of(layer: Any) -> Hub:
    """This event loop's hub (made on first use)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(id(loop))
    if hub is None or hub.loop is not loop:
        hub = _hubs[id(loop)] = Hub(layer, loop)
    return hub


def row_message(event: dict[str, Any], html: str) -> dict[str, Any]:
    """A dashboard row: the flow's row as of `event`, with what the page needs to place it."""
    return {
        "type": "row",
        "stream": "flow",
        "id": event["flow"],
        "seq": event["seq"],
        "state": event.get("state"),
        "kind": event.get("kind"),
        "created": event.get("created"),
        "html": html,
    }


def encode_rows(messages: list[dict[str, Any]]) -> str:
    """One frame for some rows: the row itself when there is one, else `rows` holding them."""
    if len(messages) == 1:
        return json.dumps(messages[0])
    return json.dumps({"type": "rows", "rows": messages})


def render_rows(wanted: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """The rows of these (flow, seq) pairs, rendered once each ("" for a flow that is gone),
    in one trip to the database thread."""
    return {(key, seq): fragments.row(key, seq) for key, seq in wanted}


class Hub:
    def __init__(self, layer: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.layer = layer
        self.loop = loop
        self.channel: str | None = None
        self.sockets: set[LiveConsumer] = set()
        self.boards: dict[str, set[LiveConsumer]] = {}  # dashboard group -> its sockets
        self.users: dict[int, set[LiveConsumer]] = {}  # user -> sockets of their own group
        self.pending: dict[str, dict[int, dict[str, Any]]] = {}  # group -> flow -> newest event
        self.counts: dict[int, Any] = {}  # users whose notifications changed -> the flow
        self.flushing: asyncio.Future[Any] | None = None
        self.last_flush = 0.0
        self.spacing = WINDOW  # the current window (see SPACING)
        self.writing = 0.0  # seconds the last flush spent writing to sockets
        self.tasks: list[asyncio.Future[Any]] = []
        self.starting: asyncio.Future[Any] | None = None

    # --- sockets -------------------------------------------------------------------------

    async def add(self, socket: LiveConsumer) -> None:
        self.sockets.add(socket)
        if self.starting is None:
            self.starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self.starting)

    async def _start(self) -> None:
        self.channel = await self.layer.new_channel()
        self.tasks = [
            asyncio.ensure_future(self._receive_loop()),
            asyncio.ensure_future(self._sync_loop()),
        ]

    def forget(self, socket: LiveConsumer) -> None:
        """A socket closed: it gets nothing more. (The hub stays in the groups it joined:
        another dashboard will likely watch them again soon.)"""
        self.sockets.discard(socket)
        for members in self.boards.values():
            members.discard(socket)
        self.users.get(socket.user.pk, set()).discard(socket)

    async def watch_dashboard(self, group: str, socket: LiveConsumer) -> None:
        members = self.boards.setdefault(group, set())
        if not members and self.channel is not None:
            await self.layer.group_add(group, self.channel)
        members.add(socket)

    async def watch_user(self, socket: LiveConsumer) -> None:
        """The socket follows its user's notification count, or their bulk actions."""
        members = self.users.setdefault(socket.user.pk, set())
        if not members and self.channel is not None:
            await self.layer.group_add(publisher.user_group(socket.user.pk), self.channel)
        members.add(socket)

    # --- rows, as they come ------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        assert self.channel is not None
        while True:
            try:
                message = await self.layer.receive(self.channel)
                self.take(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # at most once: the periodic check catches up
                logger.exception("a live message to the dashboards was not handled")
                await asyncio.sleep(0.1)

    def take(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if not isinstance(event, dict) or event.get("type") == "ltm.event":
            return
        if event.get("type") in ("notifications", "bulk"):
            self.take_user(message, event)
            return
        if not isinstance(event.get("flow"), int) or not isinstance(event.get("seq"), int):
            return
        group = message.get("group")
        groups = [group] if group in self.boards else []
        if group is None:  # (a publisher that does not say which group)
            groups = [name for name in publisher.groups_for(event) if name in self.boards]
        for name in groups:
            rows = self.pending.setdefault(name, {})
            known = rows.get(event["flow"])
            if known is None or known["seq"] < event["seq"]:
                rows[event["flow"]] = event
        self._flush_soon()

    def take_user(self, message: dict[str, Any], event: dict[str, Any]) -> None:
        """Some users' notifications changed, or a bulk action of theirs moved."""
        users = event.get("users") or []
        group = message.get("group")
        if isinstance(group, str) and group.startswith("user-"):
            users = [user for user in users if publisher.user_group(user) == group]
        for user in users:
            sockets = self.users.get(user) if isinstance(user, int) else None
            if not sockets:
                continue
            if event["type"] == "bulk":
                for socket in list(sockets):
                    if socket.bulks:  # (a few sockets of a user: each reads its own)
                        asyncio.ensure_future(socket.live_bulk(message))
            elif any(socket.unread is not None for socket in sockets):
                flow = event.get("flow")
                self.counts[user] = flow if isinstance(flow, int) else self.counts.get(user)
        self._flush_soon()

    def _flush_soon(self) -> None:
        if (self.pending or self.counts) and self.flushing is None:
            self.flushing = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            while self.pending or self.counts:
                wait = self.last_flush + self.spacing - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # what comes meanwhile leaves with it
                pending, self.pending = self.pending, {}
                counts, self.counts = self.counts, {}
                self.last_flush = self.loop.time()
                if counts:
                    await self._send_counts(counts)
                if pending:
                    await self._send(pending)
                self.spacing = max(WINDOW, SPACING * self.writing)
                self.writing = 0.0
        except Exception:
            logger.exception("live updates not sent")
        finally:
            self.flushing = None
            if self.pending or self.counts:  # (came in while an error was raised)
                self._flush_soon()

    async def _send_counts(self, changed: dict[int, Any]) -> None:
        """Each changed user's count, counted once, to each of their sockets that shows it."""
        found = await database_sync_to_async(api.unread_counts)(list(changed))
        for user, flow in changed.items():
            count = found.get(user, 0)
            text = json.dumps({"type": "notifications", "count": count, "flow": flow})
            started = self.loop.time()
            for socket in list(self.users.get(user, ())):
                if socket.unread is not None:
                    socket.unread = count
                    await socket.send(text_data=text)
            self.writing += self.loop.time() - started

    async def _send(self, pending: dict[str, dict[int, dict[str, Any]]]) -> None:
        wanted = sorted(
            {(event["flow"], event["seq"]) for rows in pending.values() for event in rows.values()}
        )
        html = {pair: fragments.peek_row(*pair) for pair in wanted}
        missing = [pair for pair, text in html.items() if text is None]
        if missing:
            html.update(await database_sync_to_async(render_rows)(missing))
        for group, rows in pending.items():
            messages = []
            for event in sorted(rows.values(), key=lambda event: event.get("created") or ""):
                text = html.get((event["flow"], event["seq"]))
                if text:  # ("": the flow is gone)
                    messages.append(row_message(event, text))
            if not messages:
                continue
            shared = wire.Frame(encode_rows(messages))
            started = self.loop.time()
            for socket in list(self.boards.get(group, ())):
                await socket.take_rows(messages, shared)
            self.writing += self.loop.time() - started

    # --- the periodic check ------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        rounds = 0
        every = float(settings.FLOWSTUDIO.get("LIVE_CHECK_SECONDS", 2))
        while True:
            await asyncio.sleep(every)
            rounds += 1
            try:
                if rounds % REJOIN_EVERY == 0:
                    await self.rejoin()
                await self.sync(counts=rounds % COUNT_EVERY == 0)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("the live check against the database failed")

    async def rejoin(self) -> None:
        """Join again the groups that sockets still watch: a channel layer may let a group
        membership expire (Channels' in-memory layer after a day), and the hub joins each
        group once for however long its sockets keep watching it."""
        if self.channel is None:
            return
        groups = [group for group, members in self.boards.items() if members]
        groups += [publisher.user_group(user) for user, members in self.users.items() if members]
        for group in groups:
            await self.layer.group_add(group, self.channel)

    async def sync(self, counts: bool = False) -> None:
        """Compare what every socket was sent with the database, and send what a socket
        lacks: a message lost last, with nothing after it to reveal the gap, arrives this
        way."""
        sockets = list(self.sockets)
        streams = {stream for socket in sockets for stream in socket.sent}
        if streams:
            latest = await database_sync_to_async(reads.latest_seqs)(list(streams))
            for socket in sockets:
                for stream, seq in list(socket.sent.items()):
                    if latest.get(stream, seq) > seq:
                        await socket.catch_up(stream)
        await self._sync_rows(sockets)
        for socket in sockets:
            if socket.bulks:
                await socket.sync_bulks()
        if counts:
            users = {socket.user.pk for socket in sockets if socket.unread is not None}
            if users:
                found = await database_sync_to_async(api.unread_counts)(list(users))
                for socket in sockets:
                    count = found.get(socket.user.pk, 0)
                    if socket.unread is not None and socket.unread != count:
                        socket.unread = count
                        message = {"type": "notifications", "count": count, "flow": None}
                        await socket.send_json(message)

    async def _sync_rows(self, sockets: list[LiveConsumer]) -> None:
        """The dashboard rows still under way, of every socket: one query for their flows'
        sequence numbers, then the last event of each row a socket lacks."""
        known: dict[int, int] = {}
        for socket in sockets:
            for key in socket.open_rows:
                seq = socket.rows.get(key, 0)
                known[key] = min(seq, known.get(key, seq))
        if not known:
            return
        moved = await database_sync_to_async(_moved)(known)
        if not moved:
            return
        events = {event["flow"]: event for event in moved}
        wanted = sorted((event["flow"], event["seq"]) for event in moved)
        html = await database_sync_to_async(render_rows)(wanted)
        for socket in sockets:
            lacking = [
                row_message(events[key], html[(key, events[key]["seq"])])
                for key in list(socket.open_rows)
                if key in events
                and events[key]["seq"] > socket.rows.get(key, 0)
                and html.get((key, events[key]["seq"]))
            ]
            if lacking:
                await socket.take_rows(lacking, wire.Frame(encode_rows(lacking)))


def _moved(known: dict[int, int]) -> list[dict[str, Any]]:
    keys = list(known)
    moved: list[dict[str, Any]] = []
    for start in range(0, len(keys), CHUNK):
        chunk = {key: known[key] for key in keys[start : start + CHUNK]}
        moved += reads.newer_rows(chunk)
    return moved
