"""ASGI entry point: HTTP through Django, websockets through the live-updates consumer.

Websockets require their studio's own origin or a trusted one (studio.live.origin.OriginCheck:
scheme, host and port must match) and a signed-in session (AuthMiddlewareStack): a
foreign-origin or anonymous socket is refused.
"""

import os
from typing import Any

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
django.setup(set_prefix=False)


class OneThreadASGIHandler(ASGIHandler):
    """Django's ASGI handler, with each request's middleware and view run in ONE hand-over to
    a thread.

    Every view here is synchronous, and so are most middlewares' hooks. Django's own handler
    builds an asynchronous chain: it enters a thread for the synchronous middlewares, comes
    back to the server's event loop for the asynchronous-capable ones, and goes to a thread
    again for the view. Each hand-over waits for the loop or the thread to be free, which
    under load is most of a request's time. Here the chain is Django's synchronous one (as
    under WSGI), entered once; the request's reading and the response's writing stay on the
    event loop."""

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        # thread_sensitive: the request's own thread (Django's per-request context), as
        # Django runs a synchronous view; its database connection stays with that thread.
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


django_asgi_app: Any = OneThreadASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from studio.live.origin import OriginCheck  # noqa: E402
from studio.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginCheck(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
