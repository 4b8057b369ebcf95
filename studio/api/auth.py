"""Who is calling: a personal API token (``Authorization: Bearer fs_...``) or the studio's
own session cookie. Session calls that change something must carry the CSRF token, exactly
like the studio's forms; token calls need none (a browser never sends a token on its own).
"""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.http import HttpRequest
from ninja.errors import HttpError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from studio.models import ApiToken


class ApiHttpRequest(HttpRequest):
    """A request django-ninja has authenticated: it sets `auth` to what the authenticator
    returned (the user, here), and a call with a token also carries its `api_token`."""

    auth: Any
    api_token: ApiToken


class TokenAuth(HttpBearer):
    """A user's API token, checked against its stored hash."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        record = ApiToken.authenticate(token.strip())
        if record is None:
            return None
        # Code that reads `request.user` (throttles, logging) sees the token's user.
        request.user = record.user
        cast(ApiHttpRequest, request).api_token = record
        return record.user


class SessionAuth(APIKeyCookie):
    """The signed-in studio user, with Django's CSRF check on unsafe methods."""

    param_name = settings.SESSION_COOKIE_NAME

    def __call__(self, request: HttpRequest) -> Any:
        user = getattr(request, "user", None)
        # No session is "not signed in" (401), checked before CSRF so that an anonymous
        # caller is told to authenticate rather than about a cookie it never had.
        if user is None or not user.is_authenticated:
            return None
        if check_csrf(request) is not None:
            raise HttpError(403, "CSRF check failed: send the X-CSRFToken header")
        return user

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        return self(request)


token_auth = TokenAuth()
session_auth = SessionAuth()
# Tokens first: a call that carries one never depends on a cookie that happens to be there.
api_auth = [token_auth, session_auth]


def current_user(request: HttpRequest) -> Any:
    """The authenticated user of an API call."""
    return cast(ApiHttpRequest, request).auth
