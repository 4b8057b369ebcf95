"""Personal API tokens over the REST API (studio/api/tokens.py): created from a session,
shown once, stored hashed, used, revoked."""

from __future__ import annotations

import hashlib

import pytest
from django.test import Client

from studio.models import ApiToken
from tests.studio.api.conftest import post

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


def test_token_create_use_and_revoke(user):
    browser = Client()
    browser.force_login(user)
    created = post(browser, "/api/tokens", {"name": "laptop"})
    assert created.status_code == 201
    raw = created.json()["token"]
    assert raw.startswith("fs_") and created.json()["prefix"] == raw[:8]
    record = ApiToken.objects.get(pk=created.json()["id"])
    assert record.hashed_key == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in {record.name, record.prefix, record.hashed_key}
    listed = browser.get("/api/tokens").json()
    assert [t["name"] for t in listed] == ["laptop"] and "token" not in listed[0]

    token_client = Client(headers={"Authorization": f"Bearer {raw}"})
    assert token_client.get("/api/flows").status_code == 200
    record.refresh_from_db()
    assert record.last_used is not None
    # A token cannot manage tokens: only a signed-in session can.
    assert token_client.get("/api/tokens").status_code == 401

    assert browser.delete(f"/api/tokens/{record.pk}").json()["revoked"] is True
    assert token_client.get("/api/flows").status_code == 401


@pytest.mark.bothmodes
def test_a_token_is_read_in_one_statement_as_the_orm_reads_it(user, make_user):
    """Every API request reads its token: one statement written once, with its user, giving
    exactly what the ORM's query gives; a revoked token or an inactive user reads as none."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    record, raw = ApiToken.issue(user, "laptop")
    ApiToken.objects.filter(pk=record.pk).update(last_used=record.created)
    orm = ApiToken.objects.select_related("user").get(pk=record.pk)
    with CaptureQueriesContext(connection) as captured:
        read = ApiToken.authenticate(raw)
        assert read is not None
        reader = read.user  # read with it: no query
    assert len(captured) == 1  # (last_used is fresh: no write either)
    assert captured[0]["sql"].startswith("SELECT t.")  # the statement written once
    for left, right in ((read, orm), (reader, orm.user)):
        for field in type(right)._meta.concrete_fields:
            assert getattr(left, field.attname) == getattr(right, field.attname), field.name

    assert ApiToken.authenticate(raw + "x") is None
    record.revoke()
    assert ApiToken.authenticate(raw) is None
    other, other_raw = ApiToken.issue(make_user("inactive"), "old")
    type(user).objects.filter(pk=other.user_id).update(is_active=False)
    assert ApiToken.authenticate(other_raw) is None


@pytest.mark.bothmodes
def test_unwatched_the_token_is_read_through_the_engines_own_cursor(user, monkeypatch):
    """With nobody counting statements, the token's read bypasses Django's cursor: it goes to
    SQLite's driver, or is prepared once on the PostgreSQL connection; it reads the same."""
    from django.db import connection

    record, raw = ApiToken.issue(user, "laptop")
    ApiToken.objects.filter(pk=record.pk).update(last_used=record.created)  # (fresh: no write)
    orm = ApiToken.objects.select_related("user").get(pk=record.pk)

    def no_django_cursor(*args, **kwargs):
        raise AssertionError("the token's read went through Django's cursor")

    connection.ensure_connection()
    monkeypatch.setattr(connection, "cursor", no_django_cursor)
    try:
        read = ApiToken.authenticate(raw)
        assert read is not None and ApiToken.authenticate(raw) is not None
    finally:
        monkeypatch.undo()
    for left, right in ((read, orm), (read.user, orm.user)):
        for field in type(right)._meta.concrete_fields:
            assert getattr(left, field.attname) == getattr(right, field.attname), field.name
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                ["SELECT t.%hashed_key%"],
            )
            assert cursor.fetchone() == (1,)
