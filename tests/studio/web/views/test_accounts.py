"""The password-reset pages exist only when e-mail is configured: without a mail server they
answer 404 (and send nothing), and the sign-in page offers no "forgot your password?" link."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from django.core import mail
from django.urls import reverse

from tests.conftest import ROOT

pytestmark = pytest.mark.django_db

RESET_PAGES = [
    "/accounts/password_reset/",
    "/accounts/password_reset/done/",
    "/accounts/reset/MQ/set-password/",
    "/accounts/reset/done/",
]


@pytest.fixture
def email_off(settings):
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "PASSWORD_RESET": False}


@pytest.fixture
def email_on(settings):
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "PASSWORD_RESET": True}
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def test_without_email_no_reset_is_offered_and_its_pages_are_404(client, user, email_off):
    user.email = "alice@example.com"
    user.save()
    page = client.get(reverse("login")).content.decode()
    assert "Sign in" in page
    assert "password_reset" not in page and "Forgot" not in page
    for url in RESET_PAGES:
        assert client.get(url).status_code == 404, url
    response = client.post("/accounts/password_reset/", {"email": "alice@example.com"})
    assert response.status_code == 404
    assert mail.outbox == []


def test_with_email_the_sign_in_page_links_to_the_reset(client, email_on):
    page = client.get(reverse("login")).content.decode()
    assert f'href="{reverse("password_reset")}"' in page and "Forgot your password?" in page


def test_with_email_a_reset_is_sent_and_sets_a_new_password(client, user, email_on):
    user.email = "alice@example.com"
    user.save()
    # An unknown address gets the same answer as a known one, and no mail.
    unknown = client.post(reverse("password_reset"), {"email": "nobody@example.com"})
    assert unknown.status_code == 302 and unknown["Location"] == reverse("password_reset_done")
    assert mail.outbox == []
    form = client.get(reverse("password_reset"))
    assert form.status_code == 200 and b"Reset your password" in form.content
    assert b'href="/static/css/studio.css"' in form.content  # the studio's own pages
    sent = client.post(reverse("password_reset"), {"email": "alice@example.com"})
    assert sent.status_code == 302 and sent["Location"] == reverse("password_reset_done")
    assert client.get(sent["Location"]).status_code == 200
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["alice@example.com"]
    link = re.search(r"https?://testserver(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    choose = client.get(link, follow=True)
    assert choose.status_code == 200 and b"Choose a new password" in choose.content
    new_password = "a-new-and-long-password-41"
    done = client.post(
        choose.redirect_chain[-1][0],
        {"new_password1": new_password, "new_password2": new_password},
    )
    assert done.status_code == 302 and done["Location"] == reverse("password_reset_complete")
    assert client.get(done["Location"]).status_code == 200
    user.refresh_from_db()
    assert user.check_password(new_password)


def settings_in_a_fresh_process(tmp_path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "FLOWSTUDIO_"))}
    clean.update(DJANGO_SETTINGS_MODULE="studio.settings", FLOWSTUDIO_VAR_DIR=str(tmp_path), **env)
    code = (
        "from django.conf import settings as s; "
        "print(s.FLOWSTUDIO['PASSWORD_RESET'], s.EMAIL_BACKEND, s.EMAIL_HOST, s.EMAIL_PORT)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_email_is_configured_by_a_host_or_a_backend(tmp_path):
    smtp = "django.core.mail.backends.smtp.EmailBackend"
    console = "django.core.mail.backends.console.EmailBackend"
    # Nothing configured: no password resets; notifications are printed on the console.
    assert settings_in_a_fresh_process(tmp_path) == f"False {console}  587"
    host = settings_in_a_fresh_process(tmp_path, DJANGO_EMAIL_HOST="mail.example.com")
    assert host == f"True {smtp} mail.example.com 587"
    assert settings_in_a_fresh_process(tmp_path, DJANGO_EMAIL_BACKEND=console).startswith(
        f"True {console}"
    )
