"""The API's per-user rate limit (studio/api/throttling.py), shared by server processes when
scaled out."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from studio.api.throttling import UserRateThrottle

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


def test_429_beyond_the_configured_rate(c, settings):
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "API_RATE": "3/hour"}
    codes = [c.get("/api/scripts").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    limited = c.get("/api/scripts")
    assert int(limited["Retry-After"]) > 0


@pytest.mark.bothmodes
def test_rate_counts_are_shared_by_server_processes_when_scaled_out(user, settings):
    """Scaled out, several server processes answer one user: the counts live in Redis, so a
    request to another process is counted with the rest (a second process is refused)."""
    if not os.environ.get("REDIS_URL"):
        pytest.skip("embedded mode has one server process: its counts are in local memory")
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "API_RATE": "3/hour"}
    throttle, request = UserRateThrottle(), SimpleNamespace(auth=user)
    assert [throttle.allow_request(request) for _ in range(3)] == [True, True, True]
    other_process = (
        "import django; django.setup(); from types import SimpleNamespace as S; "
        "from studio.api.throttling import UserRateThrottle as T; "
        f"print(T().allow_request(S(auth=S(pk={user.pk}))))"
    )
    env = dict(os.environ, FLOWSTUDIO_API_RATE="3/hour")
    done = subprocess.run(
        [sys.executable, "-c", other_process], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip().splitlines()[-1:] == ["False"], done.stdout + done.stderr
