"""Who is calling the REST API (studio/api/auth.py): no token, a bad one, an inactive user's."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


def test_401_without_or_with_a_bad_token(routine, user):
    assert Client().get("/api/flows").status_code == 401
    bad = Client(headers={"Authorization": "Bearer fs_not-a-token"}).get("/api/flows")
    assert bad.status_code == 401 and bad.json()["detail"].startswith("Authentication")


def test_a_token_of_an_inactive_user_is_refused(user, token, client_for):
    user.is_active = False
    user.save()
    assert client_for(token).get("/api/flows").status_code == 401
