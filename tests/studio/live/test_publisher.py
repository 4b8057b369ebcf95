"""The scaled-out publisher: a consumer process's events leave for Redis in order, what has
queued up together in one round trip (a pipeline), exactly as channels_redis's pub/sub
layer would publish each message (its servers' sockets read them with that layer)."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer

from studio.live import publisher
from tests.conftest import wait_until

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_or_skip() -> None:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
    except OSError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required under CI: {exc}")
        pytest.skip(f"needs Redis at 127.0.0.1:6379 ({exc})")


def _events(flow: int, owner: int, count: int) -> list[dict]:
    return [
        {"type": "flow.event", "flow": flow, "seq": seq, "owner": owner, "kind": "step.completed"}
        for seq in range(1, count + 1)
    ]


def _receive(subscription, layer, want: int, timeout: float = 10) -> list[tuple[str, dict]]:
    got: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        item = subscription.get_message(timeout=0.5)
        if item and item["type"] == "message":
            got.append((item["channel"].decode(), layer.deserialize(item["data"])))
    return got


def test_a_batch_leaves_in_one_round_trip_in_order_as_the_layer_publishes_it():
    _redis_or_skip()
    import redis

    layer = RedisPubSubChannelLayer(hosts=[REDIS], prefix=f"test-{uuid.uuid4().hex[:8]}")
    groups = [publisher.flow_group(7), publisher.ALL_FLOWS, publisher.owner_group(3)]
    client = redis.Redis.from_url(REDIS)
    subscription = client.pubsub()
    names = [f"{layer._kwargs['prefix']}__group__{group}" for group in groups]
    subscription.subscribe(*names)
    for _ in names:  # the subscriptions' confirmations
        assert subscription.get_message(timeout=5)["type"] == "subscribe"
    try:
        messages = publisher.messages_for(_events(7, 3, 20))
        assert len(messages) == 60
        sender = publisher.Publisher()  # (a process's own: no other events meanwhile)
        sender.send(layer, messages)
        got = _receive(subscription, layer, 60)
        assert len(got) == 60
        # one pipeline for the whole batch, not a round trip per message (counted once the
        # pipeline's answer is back, which may be just after the messages arrived)
        assert wait_until(lambda: sender.trips > 0, timeout=5)
        assert sender.trips == 1
        for name, group in zip(names, groups, strict=True):
            mine = [message for channel, message in got if channel == name]
            assert [message["event"]["seq"] for message in mine] == list(range(1, 21))
            assert all(message["group"] == group for message in mine)
            assert all(message["type"] == "live.event" for message in mine)
    finally:
        subscription.close()
        client.close()


def test_a_layer_of_another_kind_gets_each_message_by_group_send():
    _redis_or_skip()
    import asyncio

    layer = RedisChannelLayer(hosts=[REDIS], prefix=f"test-{uuid.uuid4().hex[:8]}")

    async def join() -> str:
        channel = await layer.new_channel()
        await layer.group_add(publisher.flow_group(9), channel)
        return channel

    channel = asyncio.run(join())
    sender = publisher.Publisher()
    sender.send(layer, publisher.messages_for(_events(9, 4, 3))[0::3])

    async def receive_three() -> list[dict]:
        return [await asyncio.wait_for(layer.receive(channel), 10) for _ in range(3)]

    received = asyncio.run(receive_three())
    assert [message["event"]["seq"] for message in received] == [1, 2, 3]
    assert wait_until(lambda: sender.trips == 3, timeout=5)


def test_each_group_goes_to_the_host_the_layer_gives_it_one_trip_per_host():
    """With two hosts the layer shards its groups' channels between them (channels_redis's
    consistent hash): a batch leaves in one round trip per host it touches. (Both hosts are
    the one Redis here: pub/sub reaches every subscriber whatever the database.)"""
    _redis_or_skip()
    import redis
    from channels_redis.utils import _consistent_hash

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    layer = RedisPubSubChannelLayer(hosts=[REDIS, REDIS.rsplit("/", 1)[0] + "/1"], prefix=prefix)
    flows = range(1, 13)
    names = {f"{prefix}__group__{publisher.flow_group(flow)}": flow for flow in flows}
    hosts = {_consistent_hash(name, 2) for name in names}
    assert hosts == {0, 1}  # (the twelve groups fall on both)
    client = redis.Redis.from_url(REDIS)
    subscription = client.pubsub()
    subscription.subscribe(*names)
    for _ in names:
        assert subscription.get_message(timeout=5)["type"] == "subscribe"
    try:
        sender = publisher.Publisher()
        batch = [(publisher.flow_group(flow), {"type": "live.event", "n": flow}) for flow in flows]
        sender.send(layer, batch)
        got = _receive(subscription, layer, len(batch))
        assert sorted(message["n"] for _, message in got) == list(flows)
        assert all(names[channel] == message["n"] for channel, message in got)
        assert wait_until(lambda: sender.trips == 2, timeout=5)
    finally:
        subscription.close()
        client.close()


def test_a_connection_the_server_closed_is_opened_again_for_the_next_batch():
    """At most once: a batch written to a connection the server has closed is lost (its
    watchers catch up from the database), never raised into the engine; the next batch
    opens a new connection and arrives."""
    _redis_or_skip()
    import redis

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    layer = RedisPubSubChannelLayer(hosts=[REDIS], prefix=prefix)
    name = f"{prefix}__group__{publisher.ALL_FLOWS}"
    client = redis.Redis.from_url(REDIS)
    subscription = client.pubsub()
    subscription.subscribe(name)
    assert subscription.get_message(timeout=5)["type"] == "subscribe"
    try:
        sender = publisher.Publisher()
        sender.send(layer, [(publisher.ALL_FLOWS, {"type": "live.event", "n": 1})])
        assert [m["n"] for _, m in _receive(subscription, layer, 1)] == [1]
        assert wait_until(lambda: sender.trips == 1, timeout=5)
        (connection,) = sender._routes[id(layer)][1].connections
        host, port = connection._sock.getsockname()[:2]
        assert client.client_kill_filter(addr=f"{host}:{port}") == 1  # the server closes it
        sent = 2
        while True:  # the first write after the close may still reach the kernel's buffer
            sender.send(layer, [(publisher.ALL_FLOWS, {"type": "live.event", "n": sent})])
            got = _receive(subscription, layer, 1, timeout=1)
            if got:
                assert got[0][1]["n"] == sent
                break
            sent += 1
            assert sent < 5, "no batch arrived after the connection was closed"
        assert sender._thread is not None and sender._thread.is_alive()
    finally:
        subscription.close()
        client.close()


@pytest.mark.parametrize(
    "hosts",
    [
        REDIS,  # (a string, not a list: the layer refuses it when it first connects)
        [{"address": REDIS, "no_such_option": True}],  # (refused by its connection)
    ],
)
def test_a_layer_whose_hosts_fail_stops_nothing_after_it(hosts):
    """A layer whose hosts are wrong loses its own messages (logged), never the sender: the
    next batch, for a layer that works, arrives."""
    _redis_or_skip()
    import redis

    broken = RedisPubSubChannelLayer(hosts=hosts, prefix="test-broken")
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    layer = RedisPubSubChannelLayer(hosts=[REDIS], prefix=prefix)
    client = redis.Redis.from_url(REDIS)
    subscription = client.pubsub()
    subscription.subscribe(f"{prefix}__group__{publisher.ALL_FLOWS}")
    assert subscription.get_message(timeout=5)["type"] == "subscribe"
    try:
        sender = publisher.Publisher()
        sender.send(broken, [(publisher.ALL_FLOWS, {"type": "live.event", "n": 1})])
        sender.send(layer, [(publisher.ALL_FLOWS, {"type": "live.event", "n": 2})])
        assert [message["n"] for _, message in _receive(subscription, layer, 1)] == [2]
    finally:
        subscription.close()
        client.close()


def test_each_event_followed_in_its_commit_by_more_of_its_stream_says_so():
    """A commit's events (one `publish`): all but the last of each flow's or run's carry
    `more`, on every group they go to; a notification never does."""
    events = [
        {"type": "flow.event", "flow": 7, "seq": 5, "owner": 3, "kind": "step.completed"},
        {"type": "ltm.event", "run": "r1", "seq": 2, "owner": 3, "kind": "run.state"},
        {"type": "flow.event", "flow": 7, "seq": 6, "owner": 3, "kind": "flow.complete"},
        {"type": "notifications", "users": [3], "flow": 7},
        {"type": "ltm.event", "run": "r1", "seq": 3, "owner": 3, "kind": "run.state"},
    ]
    marked = {}
    for group, message in publisher.messages_for(events):
        event = message["event"]
        key = (event["type"], event.get("seq"))
        marked.setdefault(key, set()).add(message.get("more", False))
        assert message["group"] == group
    assert marked == {
        ("flow.event", 5): {True},
        ("ltm.event", 2): {True},
        ("flow.event", 6): {False},
        ("notifications", None): {False},
        ("ltm.event", 3): {False},
    }
    # one event alone, or the last of its stream: nothing added to the message
    single = publisher.messages_for(events[2:3])
    assert all("more" not in message for _, message in single)
