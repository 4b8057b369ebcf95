"""The live hub's own bookkeeping, against the real in-memory channel layer (the end-to-end
behaviour is in test_consumer.py, over real websockets)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from studio.live import publisher
from studio.live.hub import Hub
from studio.live.layers import ThreadSafeInMemoryChannelLayer


class Watcher:
    """What the hub knows of a socket for this: its user (a socket of the real consumer
    needs a server around it; test_consumer.py has those)."""

    def __init__(self, user_id: int) -> None:
        self.user = SimpleNamespace(pk=user_id)
        self.unread = 0
        self.bulks: dict[int, tuple[int, str]] = {}


def test_the_hub_joins_its_groups_again_after_the_layer_let_them_expire():
    """The hub joins a group once for as long as sockets watch it; a layer that expires
    memberships (Channels' in-memory one, after `group_expiry`) would silently stop
    delivering. Its periodic renewal joins them again, and messages arrive again."""
    layer = ThreadSafeInMemoryChannelLayer(group_expiry=60)

    async def scenario() -> None:
        hub = Hub(layer, asyncio.get_running_loop())
        hub.channel = await layer.new_channel()
        socket = Watcher(7)
        await hub.watch_dashboard(publisher.ALL_FLOWS, socket)  # type: ignore[arg-type]
        await hub.watch_user(socket)  # type: ignore[arg-type]
        groups = (publisher.ALL_FLOWS, publisher.user_group(7))
        for group in groups:  # a day later, as far as the layer can tell
            layer.groups[group] = dict.fromkeys(layer.groups[group], time.time() - 120)
        layer._cleaned = 0.0
        layer._clean_expired()
        assert all(not layer.groups.get(group) for group in groups)
        await hub.rejoin()
        for group in groups:
            await layer.group_send(group, {"type": "live.event", "group": group})
            message = await asyncio.wait_for(layer.receive(hub.channel), 5)
            assert message["group"] == group
        hub.forget(socket)  # type: ignore[arg-type]
        await hub.rejoin()  # nobody watches them any more: not joined again

    asyncio.run(scenario())
