"""Throttled sign-ins (django-axes): after a few failures for a username, or from an address,
sign-ins for it are refused with a 429 page that says when to try again — on the studio's
sign-in page and the admin's — and the lock lifts after the cool-off. The REST API's tokens
are untouched and keep their own rate limit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta

import pytest
import time_machine
from asgiref.sync import async_to_sync
from axes.models import AccessAttempt
from django.conf import settings
from django.test import AsyncClient, Client
from django.urls import reverse
from django.utils import timezone

from tests.conftest import ROOT, bearer, database_url

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.bothmodes,
    pytest.mark.usefixtures("fresh_rate_counts"),
]

LOCKED = "Too many failed sign-ins for this account or address."
HERE, THERE = "198.51.100.7", "203.0.113.9"


@pytest.fixture(autouse=True)
def quick_passwords(settings):
    """These tests sign in a hundred times: a fast hasher instead of the real one's 0.5 s a
    password (the throttling does not depend on it)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def sign_in(username: str, password: str, address: str = HERE, url: str = "", **headers):
    """One sign-in on a fresh client (no cookie carries over) from `address`."""
    client = Client(REMOTE_ADDR=address, headers=headers)
    return client.post(url or reverse("login"), {"username": username, "password": password})


def fail(times: int, username: str = "alice", address: str = HERE, url: str = "", **headers):
    return [sign_in(username, "wrong", address, url, **headers) for _ in range(times)]


def limit() -> int:
    """The configured number of failures that locks (5 unless changed)."""
    return getattr(settings, "AXES_FAILURE_LIMIT", 5)


def assert_locked(response) -> None:
    assert response.status_code == 429, response.status_code
    assert LOCKED in response.content.decode()
    assert int(response["Retry-After"]) > 0


def test_the_defaults_are_five_failures_and_fifteen_minutes():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60
    assert settings.AXES_LOCKOUT_PARAMETERS == ["username", "ip_address"]
    assert settings.AUTHENTICATION_BACKENDS[-1] == "django.contrib.auth.backends.ModelBackend"


def test_failures_lock_the_account_and_the_right_password_is_refused(user):
    responses = fail(limit())
    assert [r.status_code for r in responses[:-1]] == [200] * (limit() - 1)
    assert b"Please enter a correct username and password" in responses[0].content
    assert_locked(responses[-1])  # the failure that reaches the limit says so at once
    refused = sign_in("alice", "pw-alice")
    assert_locked(refused)
    page = refused.content.decode()
    assert "Try again in 15 minutes (at " in page and " UTC)" in page
    assert 14 * 60 < int(refused["Retry-After"]) <= 15 * 60
    assert '<link rel="stylesheet" href="/static/css/studio.css">' in page  # the studio's page
    assert "_auth_user_id" not in refused.client.session
    assert_locked(sign_in("alice", "pw-alice", THERE))  # the account, from any address


def test_another_user_from_another_address_is_not_locked(user, other_user):
    fail(limit())
    assert_locked(sign_in("alice", "pw-alice"))
    signed_in = sign_in("bob", "pw-bob", THERE)
    assert signed_in.status_code == 302 and signed_in["Location"] == "/"


def test_an_address_is_locked_whatever_the_usernames(user, other_user):
    for n in range(limit()):
        sign_in(f"guess{n}", "wrong")
    assert_locked(sign_in("bob", "pw-bob"))  # an account never tried, from that address
    assert sign_in("bob", "pw-bob", THERE).status_code == 302  # the account itself is fine


def test_the_lock_lifts_after_the_cool_off(user):
    fail(limit())
    assert_locked(sign_in("alice", "pw-alice"))
    with time_machine.travel(timezone.now() + timedelta(minutes=14)):
        assert_locked(sign_in("alice", "pw-alice"))
        assert sign_in("alice", "pw-alice").content.decode().count("Try again in 1 minute ") == 1
    with time_machine.travel(timezone.now() + timedelta(minutes=15, seconds=5)):
        assert sign_in("alice", "pw-alice").status_code == 302


def test_tries_while_locked_do_not_prolong_the_lock(user):
    fail(limit())
    with time_machine.travel(timezone.now() + timedelta(minutes=10)):
        assert_locked(sign_in("alice", "wrong"))
        assert "Try again in 5 minutes" in sign_in("alice", "wrong").content.decode()
    with time_machine.travel(timezone.now() + timedelta(minutes=15, seconds=5)):
        assert sign_in("alice", "pw-alice").status_code == 302


def test_failures_count_within_the_window_only(user):
    start = timezone.now()
    for n in range(limit() + 2):  # one failure every 16 minutes: each has expired by the next
        with time_machine.travel(start + n * timedelta(minutes=16)):
            assert sign_in("alice", "wrong").status_code == 200
    later = start + (limit() + 2) * timedelta(minutes=16)
    with time_machine.travel(later):
        assert sign_in("alice", "pw-alice").status_code == 302
    for n in range(limit()):  # one every 14 minutes: each within the window of the one before
        with time_machine.travel(later + n * timedelta(minutes=14)):
            sign_in("alice", "wrong")
    with time_machine.travel(later + limit() * timedelta(minutes=14)):
        assert_locked(sign_in("alice", "pw-alice"))


def test_a_success_forgets_the_accounts_failures_from_that_address(user):
    for _ in range(3):
        assert [r.status_code for r in fail(limit() - 1)] == [200] * (limit() - 1)
        assert sign_in("alice", "pw-alice").status_code == 302
    # The count started again at the last success: one failure more reaches the limit.
    assert [r.status_code for r in fail(limit() - 1)] == [200] * (limit() - 1)
    assert_locked(fail(1)[0])


def test_signing_in_to_ones_own_account_does_not_reset_guesses_at_another(user, other_user):
    fail(limit() - 1, "alice")
    assert sign_in("bob", "pw-bob").status_code == 302  # the guesser's own account
    assert_locked(sign_in("alice", "wrong"))
    assert_locked(sign_in("alice", "pw-alice", THERE))


def test_the_admin_login_is_throttled_too(make_user):
    make_user("root", is_staff=True, is_superuser=True)
    admin_login = reverse("admin:login")
    responses = fail(limit(), "root", url=admin_login)
    assert responses[0].status_code == 200 and b"Log in" in responses[0].content
    assert_locked(responses[-1])
    assert_locked(sign_in("root", "pw-root", url=admin_login))
    # One count for both pages: the studio's sign-in is refused as well.
    assert_locked(sign_in("root", "pw-root"))


def test_studio_and_admin_failures_count_together(make_user):
    make_user("root", is_staff=True)
    fail(limit() - 1, "root")
    assert_locked(fail(1, "root", url=reverse("admin:login"))[0])


def test_the_page_says_nothing_of_the_username(user):
    hostile = "<script>alert(1)</script>"
    with time_machine.travel(timezone.now(), tick=False):
        fail(limit(), hostile)
        fail(limit(), "alice", THERE)
        unknown = sign_in(hostile, "x").content.decode()
        known = sign_in("alice", "x", THERE).content.decode()
    assert LOCKED in unknown and hostile not in unknown and "alert(1)" not in unknown
    assert "alice" not in known

    def without_csrf(page: str) -> str:
        return re.sub(r'"X-CSRFToken": "[^"]+"', "", page)

    assert without_csrf(unknown) == without_csrf(known)  # an existing account looks the same


def test_forwarded_addresses_are_ignored_unless_behind_a_proxy(user):
    # A client that writes a new X-Forwarded-For on each try is still one address.
    for n in range(limit()):
        sign_in(f"guess{n}", "wrong", HERE, **{"X-Forwarded-For": f"10.9.8.{n}"})
    assert_locked(sign_in("alice", "pw-alice", HERE, **{"X-Forwarded-For": "10.9.9.9"}))


def test_behind_a_proxy_the_forwarded_client_address_counts(user, settings):
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "PROXY_COUNT": 1}
    proxy = "192.0.2.1"

    def via_proxy(username: str, password: str, forwarded: str):
        return sign_in(username, password, proxy, **{"X-Forwarded-For": forwarded})

    for n in range(limit()):
        # The client writes what it likes on the left; the proxy appends what it saw.
        via_proxy(f"guess{n}", "wrong", f"10.0.0.{n}, {HERE}")
    assert_locked(via_proxy("alice", "pw-alice", f"10.1.1.1, {HERE}"))
    assert via_proxy("alice", "pw-alice", THERE).status_code == 302  # another client


def test_the_asgi_path_answers_the_lockout_page_too(user):
    fail(limit())
    client = AsyncClient(REMOTE_ADDR=HERE)
    response = async_to_sync(client.post)(
        reverse("login"), {"username": "alice", "password": "pw-alice"}
    )
    assert_locked(response)


def test_every_server_process_shares_the_lockout(user):
    """The counts are in the database: another process (another daphne, scaled out) refuses
    the locked account too."""
    fail(limit())
    other_process = (
        "import django; django.setup(); from django.test import Client; "
        f"r = Client(REMOTE_ADDR='{THERE}').post('/accounts/login/', "
        "{'username': 'alice', 'password': 'pw-alice'}); print(r.status_code)"
    )
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", DATABASE_URL=database_url())
    done = subprocess.run(
        [sys.executable, "-c", other_process], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.stdout.strip().splitlines()[-1:] == ["429"], done.stdout + done.stderr


def test_api_tokens_are_not_throttled_by_sign_in_failures_and_keep_their_rate(user, settings):
    fail(limit())
    assert_locked(sign_in("alice", "pw-alice"))
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "API_RATE": "3/hour"}
    api = bearer(user)
    api.defaults["REMOTE_ADDR"] = HERE  # the locked address, the locked account's token
    codes = [api.get("/api/scripts").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_with_axes_first_the_test_clients_login_and_force_login_still_work(user):
    from axes.backends import AxesStandaloneBackend
    from django.contrib.auth import get_backends

    assert isinstance(get_backends()[0], AxesStandaloneBackend)
    client = Client()
    assert client.login(username="alice", password="pw-alice")
    assert client.get(reverse("studio:dashboard")).status_code == 200
    other = Client()
    other.force_login(user)
    assert other.get(reverse("studio:dashboard")).status_code == 200


def settings_in_a_fresh_process(tmp_path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "FLOWSTUDIO_"))}
    clean.update(DJANGO_SETTINGS_MODULE="studio.settings", FLOWSTUDIO_VAR_DIR=str(tmp_path), **env)
    code = (
        "from django.conf import settings as s; print(s.AXES_ENABLED, s.AXES_FAILURE_LIMIT, "
        "s.AXES_COOLOFF_TIME.total_seconds(), s.FLOWSTUDIO['PROXY_COUNT'])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_the_settings_come_from_the_environment(tmp_path):
    assert settings_in_a_fresh_process(tmp_path) == "True 5 900.0 0"
    tuned = settings_in_a_fresh_process(
        tmp_path,
        FLOWSTUDIO_LOGIN_FAILURES="3",
        FLOWSTUDIO_LOGIN_LOCKOUT_MINUTES="2",
        FLOWSTUDIO_PROXY_COUNT="2",  # ignored: not behind a proxy
    )
    assert tuned == "True 3 120.0 0"
    proxied = settings_in_a_fresh_process(tmp_path, DJANGO_BEHIND_PROXY="1")
    assert proxied == "True 5 900.0 1"
    two = settings_in_a_fresh_process(tmp_path, DJANGO_BEHIND_PROXY="1", FLOWSTUDIO_PROXY_COUNT="2")
    assert two.endswith(" 2")
    assert settings_in_a_fresh_process(tmp_path, FLOWSTUDIO_LOGIN_FAILURES="0").startswith("False")


def test_a_username_no_account_can_have_is_counted_and_stored_safely():
    """What is typed as a username is stored (cut and escaped) even when it names no account:
    a very long one, or one with NUL characters, answers 200 (or 429), never a server error,
    on PostgreSQL as on SQLite, and still counts towards the lock."""
    long_name, nul_name = "x" * 10_000, "mallory\x00"
    assert all(r.status_code == 200 for r in fail(2, long_name))
    assert all(r.status_code == 200 for r in fail(2, nul_name, THERE))
    assert_locked(fail(limit() - 2, long_name)[-1])
    # (the form refuses a NUL before any sign-in is tried: nothing to count)
    stored = set(AccessAttempt.objects.values_list("username", flat=True))
    assert stored == {"x" * 149 + "…"}
