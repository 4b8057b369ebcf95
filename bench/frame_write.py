"""One live frame written to many websocket connections: what it costs the server's one
thread, Twisted's buffered write against the studio's direct send (`studio.live.wire.send`),
in the same run.

    .venv/bin/python -m bench.frame_write [--sockets 1000] [--bytes 2000] [--rounds 30]

A Twisted TCP server on the asyncio reactor (the reactor daphne installs) with `--sockets`
loopback connections from this process, each with a streaming producer registered as
daphne's HTTP channel registers itself. Each round writes one frame of `--bytes` bytes to
every connection, once through the transport's `write` (Twisted buffers it, registers the
socket with the loop's selector, sends on the loop's next turn and unregisters it) and once
through `wire.send` (sent at once when nothing waits in the transport's buffers), each timed
until every transport's buffers are empty; the clients' sockets are drained between rounds.
The two kinds alternate, round after round. Prints the median and the range of each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--bytes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * args.sockets + 100
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))

    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncioreactor.install(loop)
    from twisted.internet import protocol
    from twisted.internet import reactor as installed

    reactor: Any = installed

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    from studio.live import wire

    transports: list[Any] = []

    class Accepted(protocol.Protocol):
        """Registers itself as its transport's streaming producer, as daphne's HTTP channel
        (`twisted.web.http.HTTPChannel`) does."""

        def connectionMade(self) -> None:  # noqa: N802 (Twisted's names)
            transport: Any = self.transport
            transports.append(transport)
            transport.registerProducer(self, True)

        def pauseProducing(self) -> None:  # noqa: N802
            pass

        def resumeProducing(self) -> None:  # noqa: N802
            pass

        def stopProducing(self) -> None:  # noqa: N802
            pass

    factory: Any = protocol.Factory()
    factory.protocol = Accepted
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    clients: list[socket.socket] = []
    times: dict[str, list[float]] = {"Twisted's write": [], "wire.send": []}

    def drain() -> None:
        for client in clients:
            try:
                while client.recv(1 << 16):
                    pass
            except BlockingIOError:
                pass

    async def measure() -> None:
        for index in range(args.sockets):
            client = socket.socket()
            client.setblocking(False)
            await loop.sock_connect(client, ("127.0.0.1", port.getHost().port))
            clients.append(client)
            if index % 40 == 0:
                await asyncio.sleep(0.01)  # (the listener's backlog)
        while len(transports) < args.sockets:
            await asyncio.sleep(0.01)
        frame = b"x" * args.bytes
        for _ in range(args.rounds):
            for kind in times:
                drain()
                started = time.perf_counter()
                for transport in transports:
                    if kind == "wire.send":
                        wire.send(transport, frame)
                    else:
                        transport.write(frame)
                while any(t.dataBuffer or t._tempDataLen for t in transports):
                    await asyncio.sleep(0)
                times[kind].append((time.perf_counter() - started) * 1000)

    def start() -> None:
        task = loop.create_task(measure())
        task.add_done_callback(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    for client in clients:
        client.close()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average {os.getloadavg()[0]:.2f}"
    )
    print(f"one {args.bytes}-byte frame to {args.sockets} connections, {args.rounds} rounds:")
    for kind, values in times.items():
        print(
            f"  {kind:16s} median {statistics.median(values):6.2f} ms "
            f"({min(values):.2f}-{max(values):.2f})"
        )


if __name__ == "__main__":
    main()
