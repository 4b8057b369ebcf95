"""A thread-safe in-memory channel layer for the embedded mode.

Channels' `InMemoryChannelLayer` keeps asyncio queues that belong to the server's event loop.
Called from a Huey worker thread (the embedded consumer runs inside the server process) it
delivered, but about 0.9 s late, since asyncio queues are not thread-safe. This layer remembers
the server's loop and hands sends from any other thread to it; measured: ~2 ms to a client.
It still cannot cross processes: that is what the Redis layer is for (scale-out mode).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future
from typing import Any

from channels.layers import InMemoryChannelLayer

logger = logging.getLogger(__name__)


class ThreadSafeInMemoryChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._cleaned = 0.0

    def _clean_expired(self) -> None:
        # The stock layer sweeps every channel and group membership on each send and
        # receive: O(watchers x memberships) per event, which with a hundred watchers took
        # seconds per event. Expiry is housekeeping: once a second is enough.
        now = time.monotonic()
        if now - self._cleaned >= 1.0:
            self._cleaned = now
            super()._clean_expired()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Put the message on each member's queue directly: no task per member and no copy
        per member (receivers treat messages as read-only)."""
        self.require_valid_group_name(group)
        self._clean_expired()
        expires = time.time() + self.expiry
        for channel in list(self.groups.get(group, {})):
            queue = self.channels.setdefault(
                channel, asyncio.Queue(maxsize=self.get_capacity(channel))
            )
            try:
                queue.put_nowait((expires, message))
            except asyncio.QueueFull:
                pass  # at most once: the watcher catches up from the database

    def _remember_loop(self) -> None:
        self.loop = asyncio.get_running_loop()

    async def receive(self, channel: str) -> Any:
        self._remember_loop()
        return await super().receive(channel)

    async def group_add(self, group: str, channel: str) -> None:
        self._remember_loop()
        await super().group_add(group, channel)

    def send_from_thread(self, messages: list[tuple[str, dict[str, Any]]]) -> Future[Any] | None:
        """`group_send` of each `(group, message)`, in order, from a thread that is not the
        server's loop: one hand-over to the loop for all of them. Without a loop nobody is
        listening yet, so there is nobody to tell."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return None
        future = asyncio.run_coroutine_threadsafe(self._send_all(messages), loop)
        future.add_done_callback(_log_failure)
        return future

    async def _send_all(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        for group, message in messages:
            await self.group_send(group, message)


def _log_failure(future: Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("live update not delivered: %s", future.exception())
