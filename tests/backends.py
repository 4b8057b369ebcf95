"""Authentication backends for the test settings."""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend


class ClientLoginAxesBackend(AxesStandaloneBackend):
    """Axes' backend, except for Django's test ``Client.login()``, which calls
    ``authenticate()`` without a request (axes refuses that: it needs the client's address).
    A sign-in with a request — every sign-in through a login page, including the throttling
    tests' — is checked exactly as in production."""

    def authenticate(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if request is None:
            return None
        return super().authenticate(request, *args, **kwargs)
