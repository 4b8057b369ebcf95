"""The studio's HTTP requests under ASGI (daphne): the middlewares and the view run in one
thread, entered once per request, instead of hopping between the server's event loop and
threads (Django's own ASGI handler, with synchronous middlewares before asynchronous-capable
ones, went to a thread, back to the loop and to a thread again for every request)."""

from __future__ import annotations

import threading
from typing import Any

import asgiref.sync
import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator

from studio import urls


def test_a_request_enters_one_thread_once_and_never_comes_back_to_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from studio.asgi import application

    handovers = {"to_loop": 0}
    to_threads: list[str] = []
    to_thread, to_loop = asgiref.sync.SyncToAsync.__call__, asgiref.sync.AsyncToSync.__call__

    async def counted_to_thread(self: Any, *args: Any, **kwargs: Any) -> Any:
        to_threads.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await to_thread(self, *args, **kwargs)

    def counted_to_loop(self: Any, *args: Any, **kwargs: Any) -> Any:
        handovers["to_loop"] += 1
        return to_loop(self, *args, **kwargs)

    threads: set[int] = set()
    view = urls.FaviconView.get_redirect_url

    def redirect(self: Any, *args: Any, **kwargs: Any) -> str | None:
        threads.add(threading.get_ident())
        return view(self, *args, **kwargs)

    monkeypatch.setattr(asgiref.sync.SyncToAsync, "__call__", counted_to_thread)
    monkeypatch.setattr(asgiref.sync.AsyncToSync, "__call__", counted_to_loop)
    monkeypatch.setattr(urls.FaviconView, "get_redirect_url", redirect)

    async def get() -> dict[str, Any]:
        communicator = HttpCommunicator(
            application, "GET", "/favicon.ico", headers=[(b"host", b"127.0.0.1")]
        )
        return await communicator.get_response(timeout=10)

    loop_thread: list[int] = []

    async def run() -> dict[str, Any]:
        loop_thread.append(threading.get_ident())
        return await get()

    response = async_to_sync(run)()
    assert response["status"] == 302, response
    # (async_to_sync(run) above is the test's own, counted before the request starts)
    assert handovers["to_loop"] == 1, handovers
    # Besides the request_started signal's receivers and the response's close (where it
    # happens before the communicator is gone): the request, once, middlewares and view.
    signals = {"Signal.asend.<locals>.sync_send", "HttpResponseBase.close"}
    assert [name for name in to_threads if name not in signals] == ["BaseHandler.get_response"]
    assert len(threads) == 1 and loop_thread[0] not in threads
