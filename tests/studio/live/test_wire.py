"""Frames framed once for every socket (studio/live/wire.py), on autobahn's real WebSocket
protocol over Twisted's in-memory test transport: a socket gets the same bytes autobahn
writes when it frames the message itself, nothing once it is closed, and the connection is
found behind Channels' session middleware as daphne hands it over. (The frames reaching real
clients through a real daphne are in test_consumer.py.)"""

from __future__ import annotations

import base64
import json
import os
import time
from functools import partial

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from channels.sessions import InstanceSessionWrapper
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from studio.live import wire

TEXT = json.dumps(
    {"type": "row", "id": 7, "seq": 3, "html": "<tr><td>Ünïcode ✓</td></tr>"}, ensure_ascii=False
)


def factory() -> WebSocketServerFactory:
    made = WebSocketServerFactory("ws://127.0.0.1:8000")
    made.protocol = WebSocketServerProtocol  # (Twisted's, as daphne's protocol is)
    return made


def open_connection(
    made: WebSocketServerFactory,
) -> tuple[WebSocketServerProtocol, StringTransport]:
    """A server-side WebSocket connection that has completed its opening handshake."""
    protocol = made.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    key = base64.b64encode(os.urandom(16)).decode()
    protocol.dataReceived(
        (
            "GET /ws/live/ HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert protocol.state == protocol.STATE_OPEN, transport.value()
    transport.clear()  # (the handshake's answer)
    return protocol, transport


def test_a_frame_is_written_as_autobahn_frames_it_message_by_message():
    server = factory()
    (alone, alone_wire), (shared, shared_wire), (other, other_wire) = (
        open_connection(server) for _ in range(3)
    )
    alone.sendMessage(TEXT.encode("utf-8"), False)
    frame = wire.Frame(TEXT)
    wire.write(shared, frame)
    wire.write(other, frame)
    assert shared_wire.value() == alone_wire.value() == other_wire.value()
    assert TEXT.encode("utf-8") in shared_wire.value()
    # framed once for every connection of the factory
    assert frame.prepared(server) is frame.prepared(server)


def test_nothing_is_written_to_a_closed_connection():
    protocol, transport = open_connection(factory())
    protocol.sendClose(1000)
    protocol.connectionLost()  # (the client went away)
    transport.clear()
    wire.write(protocol, wire.Frame(TEXT))
    assert transport.value() == b""


def test_the_connection_is_found_as_daphne_hands_it_over_and_not_elsewhere(settings):
    protocol, _ = open_connection(factory())

    async def handle_reply(connection, message):  # daphne's Server.handle_reply, as bound
        raise AssertionError("not called here")

    daphne_send = partial(handle_reply, protocol)
    assert wire.connection_of(daphne_send) is protocol
    behind_sessions = InstanceSessionWrapper({"cookies": {}}, daphne_send).send
    assert wire.connection_of(behind_sessions) is protocol

    async def another_server(message):  # Channels' test communicator, another ASGI server
        raise AssertionError("not called here")

    assert wire.connection_of(another_server) is None
    assert wire.connection_of(InstanceSessionWrapper({"cookies": {}}, another_server).send) is None
    assert wire.connection_of(partial(handle_reply, object())) is None


class Selector:
    """The reactor a transport registers with, kept as a record: what waits to be written
    is only written when the test calls the transport's `doWrite`, as a loop's turn would."""

    def __init__(self) -> None:
        self.writers: set = set()
        self.readers: set = set()

    def addWriter(self, descriptor) -> None:  # noqa: N802 (Twisted's names)
        self.writers.add(descriptor)

    def removeWriter(self, descriptor) -> None:  # noqa: N802
        self.writers.discard(descriptor)

    def addReader(self, descriptor) -> None:  # noqa: N802
        self.readers.add(descriptor)

    def removeReader(self, descriptor) -> None:  # noqa: N802
        self.readers.discard(descriptor)


class Producer:
    def __init__(self) -> None:
        self.resumed = 0

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted's names)
        self.resumed += 1

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


def tcp_transport(streaming: bool | None = True):
    """A real TCP server transport of Twisted's (the type daphne's connections have) over a
    real connected socket, with a producer registered as daphne's HTTP channel registers
    itself (`streaming`; False: a pull producer; None: none), and the socket at the other
    end."""
    import socket

    from twisted.internet.protocol import Protocol
    from twisted.internet.tcp import Server

    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    accepted, client = listener.accept()
    listener.close()
    selector = Selector()
    transport = Server(accepted, Protocol(), client, None, 1, selector)
    if streaming is not None:
        transport.registerProducer(Producer(), streaming)
    peer.setblocking(False)
    return transport, peer, selector


def received(peer, want: int) -> bytes:
    import select

    got = b""
    while len(got) < want and select.select([peer], [], [], 5)[0]:
        chunk = peer.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    return got


def flush(transport, peer, selector, want: int) -> bytes:
    """Turns of the loop for the transport (its `doWrite` while it waits to write) and the
    peer's reads, until `want` bytes reached the peer or nothing moves any more."""
    import select

    got = bytearray()
    idle = 0
    while len(got) < want and idle < 200:
        if transport in selector.writers:
            transport.doWrite()
        moved = False
        while select.select([peer], [], [], 0)[0]:
            chunk = peer.recv(1 << 20)
            if not chunk:
                break
            got += chunk
            moved = True
        idle = 0 if moved else idle + 1
        if not moved:
            time.sleep(0.01)
    return bytes(got)


@pytest.mark.parametrize("streaming", [True, None], ids=["daphne's producer", "no producer"])
def test_a_frame_leaves_at_once_when_nothing_waits_to_be_written(streaming):
    """No turn of the loop, no registration with its selector: the peer has the bytes when
    `send` returns (Twisted's `write` alone would send them on the loop's next turn)."""
    transport, peer, selector = tcp_transport(streaming)
    try:
        wire.send(transport, b"frame one")
        assert selector.writers == set()
        assert received(peer, 9) == b"frame one"
    finally:
        transport.socket.close()
        peer.close()


def test_a_producer_that_waits_for_the_drain_is_still_resumed_by_it():
    """A pull producer (or a paused one) is asked for more when Twisted's turn empties the
    buffer: such a transport's frames go Twisted's way, turn and all."""
    transport, peer, selector = tcp_transport(streaming=False)
    try:
        wire.send(transport, b"frame")
        assert transport in selector.writers
        assert flush(transport, peer, selector, 5) == b"frame"
        assert transport.producer.resumed >= 1
    finally:
        transport.socket.close()
        peer.close()


def test_frames_keep_their_order_behind_what_waits_to_be_written():
    transport, peer, selector = tcp_transport()
    try:
        transport.write(b"first,")  # (waits for the loop's turn)
        wire.send(transport, b"second")  # not ahead of it
        assert transport in selector.writers
        assert flush(transport, peer, selector, 12) == b"first,second"
    finally:
        transport.socket.close()
        peer.close()


def test_what_the_socket_does_not_take_is_left_to_twisted_in_order():
    transport, peer, selector = tcp_transport()
    big = os.urandom(16 * 1024 * 1024)  # more than a socket's buffers take at once
    try:
        wire.send(transport, big)
        assert transport in selector.writers  # the rest waits for the loop
        wire.send(transport, b"after")
        assert flush(transport, peer, selector, len(big) + 5) == big + b"after"
    finally:
        transport.socket.close()
        peer.close()


def test_a_closing_or_lost_connection_is_left_to_twisted():
    """A transport that is closing gets the frame through Twisted's write (sent, if at all,
    on the loop's turn, before the close); one whose peer went away returns no error to the
    caller: Twisted's own write path, on the loop's turn, finds the loss and closes it."""
    transport, peer, selector = tcp_transport()
    gone, gone_peer, gone_selector = tcp_transport()
    try:
        transport.loseConnection()
        wire.send(transport, b"late")
        assert transport._tempDataLen == 4  # waiting for the loop, not sent at once
        gone_peer.close()
        for _ in range(50):  # until the socket reports the peer gone
            wire.send(gone, b"x" * 65536)
        assert gone in gone_selector.writers
    finally:
        for end in (transport.socket, peer, gone.socket, gone_peer):
            end.close()
