"""Throttled sign-ins, with django-axes (configured in studio/settings.py): who the client is,
what a success forgives, and the page a locked-out client sees.

Axes counts failed sign-ins per username and per client address in the database (its
AccessAttempt rows), so every server process sees the same counts; its authentication
backend refuses a locked-out username or address before any password is checked, and its
middleware answers such a request with `lockout_response`.
"""

from __future__ import annotations

import ipaddress
import math
from datetime import datetime, timedelta
from typing import Any, cast

from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from engine.api import storable_text

LOCKOUT_TEMPLATE = "registration/locked_out.html"


def _address(value: str | None) -> str | None:
    """`value` as a normalised IP address, or None if it is not one."""
    try:
        return str(ipaddress.ip_address((value or "").strip()))
    except ValueError:
        return None


def client_username(request: HttpRequest, credentials: dict[str, Any] | None = None) -> str:
    """The username a sign-in tried, as the throttle counts and stores it: cut to the longest
    username there can be, NUL characters and surrogates escaped (what is typed there is
    stored even when it names no account, and PostgreSQL refuses both)."""
    source = credentials if credentials else getattr(request, "POST", {})
    value = source.get("username") or ""
    # The username field is a concrete field (a CharField), never a relation.
    field = cast(models.Field, get_user_model()._meta.get_field(get_user_model().USERNAME_FIELD))
    limit = field.max_length or 150
    return storable_text(str(value), limit)


def client_ip(request: HttpRequest) -> str | None:
    """The client's address (``AXES_CLIENT_IP_CALLABLE``).

    Directly exposed (``FLOWSTUDIO["PROXY_COUNT"]`` 0, the default) it is the connection's
    own address: X-Forwarded-For is the client's to write and is ignored, so that changing
    it cannot escape a lockout. Behind N trusted proxies (``DJANGO_BEHIND_PROXY=1``,
    ``FLOWSTUDIO_PROXY_COUNT=N``) it is the N-th address from the right of X-Forwarded-For:
    the one the outermost proxy saw; anything left of it was written by the client. A
    header that lacks it, or holds no address there, counts as the connection's address.
    """
    remote = _address(request.META.get("REMOTE_ADDR"))
    proxies = int(settings.FLOWSTUDIO.get("PROXY_COUNT", 0) or 0)
    if proxies > 0:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        hops = [hop.strip() for hop in forwarded if hop.strip()]
        if len(hops) >= proxies:
            return _address(hops[-proxies]) or remote
    return remote


class AxesHttpRequest(HttpRequest):
    """A request axes has seen: its handler proxy sets the client's address on it before any
    handler runs."""

    axes_ip_address: str | None


class LoginThrottleHandler(AxesDatabaseHandler):
    """Axes' database handler; a successful sign-in forgets the failures of that username
    from that address — not the address's failures for other usernames (someone who signs in
    to an account of their own must not reset their count of guesses at others'), nor the
    username's failures from other addresses (a user signing in does not forgive the guesses
    someone else made at their password)."""

    def user_logged_in(
        self, sender: Any, request: AxesHttpRequest, user: Any, **kwargs: Any
    ) -> None:
        super().user_logged_in(sender, request, user, **kwargs)
        AccessAttempt.objects.filter(
            username=user.get_username(), ip_address=request.axes_ip_address
        ).delete()


def locked_until(request: HttpRequest, credentials: dict[str, Any] | None = None) -> datetime:
    """When the lockout of this request's username and address ends.

    For each of them the failures of its attempt records are counted from the newest: the
    lockout lasts until the record that brings the count to the limit expires (a cool-off
    after its last failure), since the count falls below the limit then. The later of the two
    ends it; never before now.
    """
    now = timezone.now()
    cool_off = get_cool_off(request) or timedelta(0)
    limit = get_failure_limit(request, credentials)
    until = now
    handler = AxesProxyHandler.get_implementation()
    for attempts in handler.get_user_attempts(request, credentials):
        total = 0
        rows = attempts.order_by("-attempt_time").values_list(
            "attempt_time", "failures_since_start"
        )
        for attempt_time, failures in rows:
            total += failures
            if total >= limit:
                until = max(until, attempt_time + cool_off)
                break
    return until


def lockout_response(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    """The page of a refused sign-in (``AXES_LOCKOUT_CALLABLE``): 429, in the studio's
    layout, saying when to try again. It is the same for every username, existing or not, and
    never shows the username that was sent.

    Axes calls it with the request's credentials, except on its asynchronous path, which
    passes them in place of `original_response`: they are read from the request instead.
    """
    credentials = getattr(request, "axes_credentials", None)
    until = locked_until(request, credentials)
    seconds = max(math.ceil((until - timezone.now()).total_seconds()), 1)
    context = {"until": until, "minutes": math.ceil(seconds / 60)}
    response = render(request, LOCKOUT_TEMPLATE, context, status=settings.AXES_HTTP_RESPONSE_CODE)
    response["Retry-After"] = str(seconds)
    return response
