"""A running studio (daphne + engine) for live-update tests, and a websocket client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from websockets.sync.client import connect

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_cookie(user: Any) -> str:
    """A signed-in session for `user`, as a Cookie header value."""
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


class Studio:
    """`manage.py studio` in a subprocess: the daphne server, with the engine's consumer
    inside it in embedded mode (or without it, when consumers run apart in scale-out)."""

    def __init__(self, env: dict[str, str], log: Path, with_consumer: bool) -> None:
        self.port = free_port()
        self.env, self.log, self.with_consumer = env, log, with_consumer
        self.starts = 0
        self.start()

    def start(self) -> None:
        """Start the server on its port (again, after `stop()`: a restart on the same port,
        each run logging to its own file beside `log`)."""
        # (--skip-checks: see `tests.conftest.Consumer.start_one`)
        args = [sys.executable, "manage.py", "studio", "--port", str(self.port), "--skip-checks"]
        if not self.with_consumer:
            args.append("--no-consumer")
        self.starts += 1
        log = self.log if self.starts == 1 else self.log.with_suffix(f".{self.starts}.log")
        with open(log, "wb") as output:  # the child keeps its own copy of the file
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError(f"the studio did not start:\n{log.read_text()[-3000:]}")

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, cookie: str | None, origin: str | None = None, own_origin: bool = True):
        """A websocket to the studio, with the session `cookie`, from `origin` (the studio's
        own by default; none at all with `own_origin=False`)."""
        headers = {"Origin": origin or self.origin} if origin or own_origin else {}
        if cookie:
            headers["Cookie"] = cookie
        return connect(f"ws://127.0.0.1:{self.port}/ws/live/", additional_headers=headers)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


_held: weakref.WeakKeyDictionary[Any, list[dict[str, Any]]] = weakref.WeakKeyDictionary()
# (rows of a `rows` frame not yet returned)


def receive(ws, timeout: float = 30) -> dict[str, Any]:
    """The next message of the socket; the rows of a `rows` frame (several dashboard rows
    sent together) one by one, as if each had come alone."""
    held = _held.get(ws)
    if held:
        return held.pop(0)
    message = json.loads(ws.recv(timeout=timeout))
    if message.get("type") == "rows":
        rows = list(message["rows"])
        _held[ws] = rows[1:]
        return rows[0]
    return message


def scaled_out() -> bool:
    return bool(os.environ.get("REDIS_URL"))
