"""Frames framed once for every socket (studio/live/wire.py), on autobahn's real WebSocket
protocol over Twisted's in-memory test transport: a socket gets the same bytes autobahn
writes when it frames the message itself, nothing once it is closed, and the connection is
found behind Channels' session middleware as daphne hands it over. (The frames reaching real
clients through a real daphne are in test_consumer.py.)"""

from __future__ import annotations

import base64
import json
import os
from functools import partial

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
