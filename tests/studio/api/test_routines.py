"""Routines over the REST API (studio/api/routines.py): create, get, list, and update into a
new version."""

from __future__ import annotations

import pytest

from engine import api
from engine.models import Routine
from studio.models import ApiToken
from tests.studio.api.conftest import post, put

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


def test_create_get_list_routine(c, user):
    steps = [{"script": "t_echo"}, {"script": "t_wait", "label": "ask", "params": {"q": 1}}]
    created = post(c, "/api/routines", {"name": " R1 ", "steps": steps})
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["name"], body["owner"], body["version"]) == ("R1", "alice", 1)
    assert [s["script"] for s in body["steps"]] == ["t_echo", "t_wait"]
    assert body["steps"][1] | {"order": 1} == {
        "order": 1,
        "name": "ask",
        "script": "t_wait",
        "label": "ask",
        "params": {"q": 1},
        "key": body["steps"][1]["key"],  # a new identity, since none was given
        "overrides": {},
    }
    assert len(body["steps"][1]["key"]) >= 8
    assert c.get(f"/api/routines/{body['id']}").json() == body
    page = c.get("/api/routines").json()
    assert page["count"] == 1 and page["items"][0]["id"] == body["id"]


def test_unknown_script_is_400_naming_the_step(c):
    steps = [{"script": "t_echo"}, {"script": "no_such"}]
    response = post(c, "/api/routines", {"name": "bad", "steps": steps})
    assert response.status_code == 400
    assert "step 2" in response.json()["detail"] and "no_such" in response.json()["detail"]
    assert response.json()["errors"][0]["loc"] == ["body", "payload", "steps", 1, "script"]
    assert not Routine.objects.exists()


def test_update_makes_a_new_version_and_flows_keep_their_steps(c, user):
    routine = api.create_routine("R", ["t_wait"], owner=user)
    flow = api.start_flow(routine, user)
    body = {"name": "R2", "steps": [{"script": "t_echo"}, {"script": "t_echo"}], "version": 1}
    updated = put(c, f"/api/routines/{routine.pk}", body)
    assert updated.status_code == 200, updated.content
    assert (updated.json()["version"], updated.json()["name"]) == (2, "R2")
    assert [s["script"] for s in updated.json()["steps"]] == ["t_echo", "t_echo"]
    flow.refresh_from_db()
    assert [s["script"] for s in flow.steps] == ["t_wait"] and flow.routine_version == 1
    # The version the client edited is stale now.
    stale = put(c, f"/api/routines/{routine.pk}", body)
    assert stale.status_code == 409 and "changed" in stale.json()["detail"]


def test_update_with_unknown_script_changes_nothing(c, user):
    routine = api.create_routine("R", ["t_echo"], owner=user)
    body = {"name": "R", "steps": [{"script": "t_echo"}, {"script": "nope"}]}
    assert put(c, f"/api/routines/{routine.pk}", body).status_code == 400
    routine.refresh_from_db()
    assert routine.version == 1 and routine.snapshot()[0]["script"] == "t_echo"


def test_shared_routine_is_visible_but_only_staff_edit_it(c, make_user, client_for):
    shared = api.create_routine("shared", ["t_echo"], owner=None)
    assert c.get(f"/api/routines/{shared.pk}").status_code == 200
    body = {"name": "mine now", "steps": [{"script": "t_echo"}]}
    assert put(c, f"/api/routines/{shared.pk}", body).status_code == 403
    staff = client_for(ApiToken.issue(make_user("root", is_staff=True), "t")[1])
    assert put(staff, f"/api/routines/{shared.pk}", body).status_code == 200
