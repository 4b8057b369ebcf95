"""One text frame written to many sockets, framed once.

The live hub writes the same frame to every dashboard of a group, and a stream's events and
fragments to every page that watches it: at 1,000 sockets, what each write costs is paid 1,000
times in the server's one thread. Through Channels and daphne a write encodes the text to
UTF-8, builds its WebSocket frame in autobahn (with its checks and counters) and then writes
it: 14-21 µs of Python before the write itself, against 3 µs this way (docs/performance.md,
section 5).

A `Frame` is built once per message. On daphne (the studio's server) it is encoded and framed
once, by autobahn's own broadcast API (`prepareMessage`), and each socket's write is the write
alone (what `sendPreparedMessage` does). On any other server (Channels' test
communicator, another ASGI server) it goes the ASGI way, `websocket.send`, as before.

Order is kept: both ways write to the connection's transport before they return, so a frame
sent this way and a message sent through `send_json` leave in the order they were sent.

The write itself goes out at once when nothing waits in the connection's buffers (`send`):
Twisted's write would register the socket with the event loop, send on its next turn and
unregister it. One 2 KB frame to 1,000 loopback connections took the loop 20-34 ms that way
and 7-10 ms this way (bench/frame_write.py).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.tcp import Server as _TCP_SERVER


class Frame:
    """A text frame: its JSON text, and that text prepared once for a server's connections."""

    __slots__ = ("text", "_prepared", "_factory")

    def __init__(self, text: str) -> None:
        self.text = text
        self._prepared: Any = None
        self._factory: Any = None

    def prepared(self, factory: Any) -> Any:
        """The frame encoded and framed for connections of this autobahn factory."""
        if self._factory is not factory:
            self._prepared = factory.prepareMessage(self.text.encode("utf-8"))
            self._factory = factory
        return self._prepared


def connection_of(send: Any) -> Any | None:
    """The daphne connection behind a consumer's `base_send`, or None on another server.

    Daphne hands each application `partial(Server.handle_reply, protocol)` as its `send`; the
    protocol is autobahn's WebSocket server protocol for that connection. Channels' session
    middleware wraps it (`InstanceSessionWrapper.send`, which saves a changed session before
    an HTTP response starts, never for `websocket.send`): its `real_send` is daphne's."""
    for _ in range(4):
        inner = getattr(getattr(send, "__self__", None), "real_send", None)
        if inner is None:
            break
        send = inner
    if not isinstance(send, partial) or not send.args:
        return None
    protocol = send.args[0]
    if isinstance(protocol, WebSocketProtocol) and getattr(protocol, "factory", None) is not None:
        return protocol
    return None


def write(connection: Any, frame: Frame) -> None:
    """Write `frame` to a daphne connection (nothing once it is no longer open, as daphne's
    own send does for a connection that went away).

    What autobahn's `sendPreparedMessage` does for an uncompressed connection with nothing
    queued (daphne compresses nothing and queues nothing), without the debug line its
    `sendData` formats for every write whether or not it is logged (about 3 µs)."""
    if connection.state != WebSocketProtocol.STATE_OPEN:
        return
    prepared = frame.prepared(connection.factory)
    compress = getattr(connection, "_perMessageCompress", True)
    if compress is None and not getattr(connection, "send_queue", True):
        send(connection.transport, prepared.payloadHybi)
    else:
        connection.sendPreparedMessage(prepared)


def send(transport: Any, data: bytes) -> None:
    """`transport.write(data)`, sent at once where Twisted would send it one turn later.

    Twisted's TCP write buffers the data, registers the socket with the event loop for
    writing, sends from that callback on the loop's next turn and unregisters it: three
    calls into the loop's selector (two system calls) and a callback, per socket per frame.
    With nothing already waiting in the transport's buffers the bytes can go now, in the
    order they would have gone: `writeSomeData` (Twisted's own send, what its callback
    calls) sends what the socket takes; the rest, if any, is left to `write` as before.
    Any other transport (TLS, a test's), one that is closing, or one whose producer waits
    for the buffer to drain (a paused or a pull producer: only Twisted's turn resumes it) is
    written to as before. Daphne's connections have a streaming producer (their HTTP
    channel, which pauses only the reading): nothing waits on the drain."""
    if (
        type(transport) is not _TCP_SERVER
        or transport.dataBuffer
        or transport._tempDataLen
        or not transport.connected
        or transport.disconnecting
        or transport._writeDisconnected
        or (
            transport.producer is not None
            and (not transport.streamingProducer or transport.producerPaused)
        )
    ):
        transport.write(data)
        return
    sent = transport.writeSomeData(data)
    if isinstance(sent, BaseException):  # (lost: Twisted's own write path closes it)
        transport.write(data)
    elif sent < len(data):
        transport.write(data[sent:])
