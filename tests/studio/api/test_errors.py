"""What each failure means to an API client (studio/api/errors.py): 400 with the fields named,
404, 413."""

from __future__ import annotations

import pytest

from engine import api
from tests.studio.api.conftest import post

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


def test_400_for_malformed_or_unexpected_bodies(c, routine, user):
    flow = api.start_flow(routine("t_wait"), user)
    bad_json = c.post(f"/api/flows/{flow.pk}/input", "{nope", content_type="application/json")
    assert bad_json.status_code == 400
    missing = post(c, f"/api/flows/{flow.pk}/input", {"version": 1})
    assert missing.status_code == 400
    assert missing.json()["errors"][0]["loc"][-1] == "data"
    extra = post(c, f"/api/flows/{flow.pk}/input", {"data": 1, "surprise": 2})
    assert extra.status_code == 400
    nul = post(c, f"/api/flows/{flow.pk}/kill", {"reason": "a\x00b"})
    assert nul.status_code == 400
    assert c.get("/api/flows/99999999999999999999999").status_code == 400


def test_an_invalid_field_is_named_in_the_detail(c, routine):
    response = post(c, "/api/flows", {"routine": "one", "data": []})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("Invalid input: ") and "routine: " in detail and "data: " in detail
    nested = post(c, "/api/routines", {"name": "R", "steps": [{"script": 5}]})
    assert "steps.0.script: " in nested.json()["detail"]
    assert "limit: " in c.get("/api/flows?limit=0").json()["detail"]


def test_404_for_a_missing_flow(c):
    assert c.get("/api/flows/12345").json() == {"detail": "Not found"}
    assert post(c, "/api/flows/12345/kill").status_code == 404


def test_413_for_an_oversized_body(c, routine, user, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    flow = api.start_flow(routine("t_wait"), user)
    response = post(c, f"/api/flows/{flow.pk}/input", {"data": "x" * 5000})
    assert response.status_code == 413
    flow.refresh_from_db()
    assert flow.state == "waiting"
