"""Per-user rate limit of the API (``FLOWSTUDIO["API_RATE"]``, e.g. ``"600/min"``).

Ninja's own throttles keep the request's history on the throttle object, which a threaded
server shares between requests; this one keeps it in local variables and reads the rate on
each call, so it is thread-safe and follows settings changed at run time. Counts live in
Django's cache: per process in embedded mode (one server process), in Redis when scaled out,
so a user's requests are counted across every server process (the read-modify-write of a
history is locked within a process only: processes racing may let a request or two more
through, never fewer).
"""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from ninja.throttling import BaseThrottle

DEFAULT_RATE = "600/min"
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
_lock = threading.Lock()  # one read-modify-write of a history at a time in this process


def parse_rate(rate: str) -> tuple[int, int]:
    """``"600/min"`` -> (600, 60)."""
    count, _, unit = rate.partition("/")
    try:
        return int(count), _UNITS[unit.strip().lower()]
    except (KeyError, ValueError):
        raise ImproperlyConfigured(
            f"API rate {rate!r} is not like '600/min' (units: {', '.join(_UNITS)})"
        ) from None


def configured_rate() -> tuple[int | None, int | None]:
    """(requests, seconds) of the configured rate; (None, None) when it is switched off."""
    rate = settings.FLOWSTUDIO.get("API_RATE", DEFAULT_RATE)
    if not rate or str(rate).lower() in {"0", "off", "none"}:
        return None, None
    return parse_rate(str(rate))


def rate_key(user_pk: object) -> str:
    """The cache key of a user's recent requests."""
    return f"flowstudio:api-rate:{user_pk}"


class UserRateThrottle(BaseThrottle):
    """A sliding window of each user's recent requests."""

    def __init__(self) -> None:
        self._wait = threading.local()

    def allow_request(self, request: HttpRequest) -> bool:
        count, seconds = configured_rate()
        user = getattr(request, "auth", None)
        if count is None or seconds is None or user is None:
            return True
        key = rate_key(user.pk)
        now = time.time()
        with _lock:
            history = [stamp for stamp in cache.get(key, []) if stamp > now - seconds]
            if len(history) >= count:
                self._wait.seconds = max(history[-1] + seconds - now, 1.0)
                return False
            history.insert(0, now)
            cache.set(key, history, seconds)
        return True

    def wait(self) -> float | None:
        return getattr(self._wait, "seconds", None)
