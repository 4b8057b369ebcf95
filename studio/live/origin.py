"""The websocket's origin check.

A browser sends the cookies of the studio with a websocket opened by any page, whatever its
origin, so the origin is what tells the studio's own pages from a page of another service
(another port or scheme of the same host counts as another service). A socket is accepted
only when its Origin is

- the studio's own origin: the scheme, host and port of the request itself — its Host
  (which must be one of ALLOWED_HOSTS) and whether the connection is secure, decided as for
  the pages (SECURE_PROXY_SSL_HEADER behind a TLS proxy; a studio that redirects every page
  to HTTPS serves its pages from https only), or
- one of the origins the operator trusts, CSRF_TRUSTED_ORIGINS (`https://studio.example.com`,
  `https://*.example.com`): the same trust Django gives them for unsafe requests.

Every other is refused, and so is a socket without an Origin (browsers always send one):
closed before it is accepted, which is a 403 on the handshake. (Channels'
AllowedHostsOriginValidator compared the host alone: any port and scheme passed.)
"""

from __future__ import annotations

import re
from typing import Any

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http.request import HttpRequest, split_domain_port
from django.utils.http import is_same_domain

Origin = tuple[str, str, int]  # scheme, host, port
DEFAULT_PORTS = {"http": 80, "https": 443}
_ORIGIN = re.compile(r"(https?)://([^/?#@\s]+)")


def _origin(scheme: str, netloc: str) -> Origin | None:
    host, port = split_domain_port(netloc)
    if not host or scheme not in DEFAULT_PORTS:
        return None
    return scheme, host, int(port) if port else DEFAULT_PORTS[scheme]


def parse_origin(value: str) -> Origin | None:
    """An Origin header's scheme, host and port (default ports made explicit); None for
    anything but `http(s)://host[:port]` (`null`, a path, user info, another scheme)."""
    match = _ORIGIN.fullmatch(value.strip().lower())
    return _origin(match[1], match[2]) if match else None


class Handshake(HttpRequest):
    """A websocket handshake seen as a Django request, so that its host is validated and
    its scheme decided by Django's own rules for the pages (ALLOWED_HOSTS,
    USE_X_FORWARDED_HOST, SECURE_PROXY_SSL_HEADER)."""

    def __init__(self, scope: dict[str, Any]) -> None:
        super().__init__()
        self._scheme = "https" if scope.get("scheme") in {"wss", "https"} else "http"
        for name, value in scope.get("headers") or []:
            key = "HTTP_" + name.decode("latin1").upper().replace("-", "_")
            text = value.decode("latin1")
            # a repeated header is joined, as Django does: two Origins or Hosts match nothing
            self.META[key] = f"{self.META[key]},{text}" if key in self.META else text

    def _get_scheme(self) -> str:
        return self._scheme


def own_origin(request: Handshake) -> Origin | None:
    """The origin of the studio's own pages for this request; None if its Host is missing
    or not an allowed host."""
    if "HTTP_HOST" not in request.META:
        return None
    try:
        host = request.get_host()
    except DisallowedHost:
        return None
    secure = request.is_secure() or settings.SECURE_SSL_REDIRECT
    return _origin("https" if secure else "http", host)


def trusted(value: str, origin: Origin) -> bool:
    """Whether `origin` (the header `value`, parsed) is among CSRF_TRUSTED_ORIGINS, with
    Django's meaning of a `*.` wildcard there."""
    scheme = origin[0]
    netloc = value.strip().lower().split("://", 1)[-1]
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        entry_scheme, _, entry_netloc = entry.strip().lower().partition("://")
        if entry_scheme != scheme:
            continue
        if "*" in entry_netloc:
            if is_same_domain(netloc, entry_netloc.lstrip("*")):
                return True
        elif _origin(entry_scheme, entry_netloc) == origin:
            return True
    return False


def origin_allowed(scope: dict[str, Any]) -> bool:
    request = Handshake(scope)
    own = own_origin(request)
    value = request.META.get("HTTP_ORIGIN")
    if own is None or value is None:
        return False
    origin = parse_origin(value)
    if origin is None:
        return False
    return origin == own or trusted(value, origin)


class OriginCheck:
    """ASGI middleware: a websocket from any but an allowed origin is refused before it is
    accepted (daphne answers the handshake with 403). Other connections pass."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
