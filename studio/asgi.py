"""ASGI entry point: HTTP through Django, websockets through the live-updates consumer.

Websockets require their studio's own origin or a trusted one (studio.live.origin.OriginCheck:
scheme, host and port must match) and a signed-in session (AuthMiddlewareStack): a
foreign-origin or anonymous socket is refused.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
django_asgi_app = get_asgi_application()

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
