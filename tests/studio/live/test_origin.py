"""The websocket accepts its own origin (the scheme, host and port of the request) and the
origins the operator trusts, and refuses every other: another port, scheme or host of the
same machine is another service, whose pages must not open the socket as the signed-in user.
Checked on the ASGI application (Channels' communicator) and on the real daphne server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from websockets.exceptions import InvalidStatus

from tests.conftest import ROOT
from tests.live_support import receive, session_cookie

HOST = "127.0.0.1:8000"
OWN = f"http://{HOST}"
# Origins that are not the studio's own for a request to 127.0.0.1:8000 over plain http.
FOREIGN = [
    "http://127.0.0.1:9999",  # another port
    "http://127.0.0.1:1",
    "http://127.0.0.1",  # port 80
    "https://127.0.0.1:8000",  # another scheme
    "https://127.0.0.1",
    "http://localhost:8000",  # another host, even an allowed one
    "http://testserver",
    "http://evil.example",
    "null",  # sandboxed frames, file: pages
    "http://127.0.0.1:8000/",  # not an origin
    "http://127.0.0.1:8000@evil.example",
    "ws://127.0.0.1:8000",
    "",
]


def handshake(headers: dict[str, str]) -> tuple[bool, object]:
    """Open a socket on the studio's ASGI application; (accepted, first message or close
    code)."""
    from studio.asgi import application

    async def run() -> tuple[bool, object]:
        communicator = WebsocketCommunicator(
            application,
            "/ws/live/",
            headers=[(k.lower().encode(), v.encode("latin1")) for k, v in headers.items()],
        )
        accepted, code = await communicator.connect(timeout=5)
        if not accepted:
            return False, code
        hello = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return True, hello

    return async_to_sync(run)()


@pytest.fixture
def cookie(transactional_db, user) -> str:
    return session_cookie(user)


def test_only_its_own_origin_is_accepted(cookie):
    accepted, hello = handshake({"Host": HOST, "Origin": OWN, "Cookie": cookie})
    assert accepted and hello == {"type": "hello", "user": "alice"}
    # the same with default ports, and on another allowed host of its own
    assert handshake({"Host": "localhost", "Origin": "http://localhost", "Cookie": cookie})[0]
    assert handshake({"Host": "localhost:80", "Origin": "http://localhost", "Cookie": cookie})[0]
    assert handshake({"Host": "[::1]:8000", "Origin": "http://[::1]:8000", "Cookie": cookie})[0]
    accepted = [
        origin
        for origin in FOREIGN
        if handshake({"Host": HOST, "Origin": origin, "Cookie": cookie}) != (False, 1000)
    ]
    assert accepted == []
    assert handshake({"Host": HOST, "Cookie": cookie}) == (False, 1000)  # no Origin at all


def test_two_origins_are_refused(cookie):
    from studio.asgi import application

    async def run() -> tuple[bool, object]:
        headers = [(b"host", HOST.encode()), (b"origin", OWN.encode()), (b"origin", OWN.encode())]
        headers.append((b"cookie", cookie.encode()))
        communicator = WebsocketCommunicator(application, "/ws/live/", headers=headers)
        return await communicator.connect(timeout=5)

    assert async_to_sync(run)() == (False, 1000)


def test_the_host_must_be_allowed(cookie):
    # its own origin, but the host is not one of ALLOWED_HOSTS
    headers = {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}
    assert handshake({**headers, "Cookie": cookie}) == (False, 1000)
    assert handshake({"Origin": OWN, "Cookie": cookie}) == (False, 1000)  # no Host at all


def test_testserver_is_no_production_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "FLOWSTUDIO_"))}
    env["FLOWSTUDIO_VAR_DIR"] = str(tmp_path)
    code = "import studio.settings as s; print(','.join(s.ALLOWED_HOSTS))"
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["localhost,127.0.0.1,[::1]"]


@override_settings(
    ALLOWED_HOSTS=["studio.example.com", "127.0.0.1"],
    CSRF_TRUSTED_ORIGINS=["https://studio.example.com", "https://*.apps.example.com"],
)
def test_trusted_origins_are_accepted(cookie):
    for origin in ["https://studio.example.com", "https://a.apps.example.com"]:
        assert handshake({"Host": HOST, "Origin": origin, "Cookie": cookie})[0], origin
    for origin in [
        "http://studio.example.com",  # the trusted origin is https only
        "https://studio.example.com:8443",
        "https://evil.example.com",
        "https://a.apps.example.com:8443",
    ]:
        assert not handshake({"Host": HOST, "Origin": origin, "Cookie": cookie})[0], origin


@override_settings(
    ALLOWED_HOSTS=["studio.example.com"],
    SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
)
def test_behind_a_tls_proxy_the_own_origin_is_https(cookie):
    proxied = {"Host": "studio.example.com", "X-Forwarded-Proto": "https", "Cookie": cookie}
    assert handshake({**proxied, "Origin": "https://studio.example.com"})[0]
    assert not handshake({**proxied, "Origin": "http://studio.example.com"})[0]
    # without the proxy's header the connection is plain http
    plain = {"Host": "studio.example.com", "Cookie": cookie}
    assert handshake({**plain, "Origin": "http://studio.example.com"})[0]
    assert not handshake({**plain, "Origin": "https://studio.example.com"})[0]
    with override_settings(SECURE_PROXY_SSL_HEADER=None):  # a proxy not trusted: its header
        assert not handshake({**proxied, "Origin": "https://studio.example.com"})[0]
        assert handshake({**proxied, "Origin": "http://studio.example.com"})[0]


@override_settings(ALLOWED_HOSTS=["studio.example.com"], SECURE_SSL_REDIRECT=True)
def test_a_studio_that_redirects_to_https_has_an_https_origin(cookie):
    # (daphne serving TLS itself puts no scheme in a websocket's scope)
    headers = {"Host": "studio.example.com", "Cookie": cookie}
    assert handshake({**headers, "Origin": "https://studio.example.com"})[0]
    assert not handshake({**headers, "Origin": "http://studio.example.com"})[0]


@pytest.mark.consumer
def test_the_real_server_refuses_other_origins(studio, user):
    cookie = session_cookie(user)
    own = studio.origin  # http://127.0.0.1:<port>, as the client's Host
    port = studio.port
    refused = [
        f"http://127.0.0.1:{port + 1}",
        "http://127.0.0.1:9999",
        "http://127.0.0.1:1",
        "http://127.0.0.1",
        f"https://127.0.0.1:{port}",
        "https://127.0.0.1",
        f"http://localhost:{port}",
        "http://localhost:9999",
        "http://testserver",
        "null",
    ]
    for origin in refused:
        with pytest.raises(InvalidStatus) as refusal:
            studio.ws(cookie, origin=origin).close()
        assert refusal.value.response.status_code == 403, origin
    with pytest.raises(InvalidStatus) as missing:
        studio.ws(cookie, origin=None, own_origin=False).close()
    assert missing.value.response.status_code == 403
    with studio.ws(cookie, origin=own) as ws:
        assert receive(ws) == {"type": "hello", "user": user.username}
    print(f"websocket origins: {len(refused) + 1} refused, 1 accepted")
