"""Signing in, and the password-reset pages, which are offered only when the operator has
configured e-mail (``FLOWSTUDIO["PASSWORD_RESET"]``, see the settings): without a mail server
a reset could never reach anyone, and every request would end in an SMTP error."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.http import Http404
from django.http.response import HttpResponseBase

from studio.web.http import HtmxHttpRequest


def password_reset_enabled() -> bool:
    """Whether e-mail is configured, so that password resets can be sent."""
    return bool(settings.FLOWSTUDIO.get("PASSWORD_RESET", False))


def requires_email(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """The view answers 404 while e-mail is not configured (read on each request, so the
    URLs need not change with the settings)."""

    @wraps(view)
    def guarded(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not password_reset_enabled():
            raise Http404("Password reset is not available: e-mail is not configured")
        return view(request, *args, **kwargs)

    return guarded


class LoginView(auth_views.LoginView):
    """Django's sign-in, with the "forgot your password?" link only when resets can be sent."""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["password_reset"] = password_reset_enabled()
        return context
