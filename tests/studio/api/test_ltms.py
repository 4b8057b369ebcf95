"""LTM runs over the REST API: start, get, fire a transition, retry, kill, events; and a
second user learns nothing of them."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client

try:
    from engine.api import fire_transition, kill_ltm, retry_ltm, start_ltm  # noqa: F401
except ImportError as exc:  # the LTM service is built separately
    pytest.skip(f"the LTM service is not available yet: {exc}", allow_module_level=True)

from engine.models import LtmEvent
from tests.conftest import bearer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


def post(client: Client, url: str, body=None):
    return client.post(url, body or {}, content_type="application/json")


def test_start_and_get_a_run(user):
    client = bearer(user)
    started = post(client, "/api/ltm-runs", {"ltm": "my_ltm"})
    assert started.status_code == 201, started.content
    run = started.json()
    assert (run["ltm"], run["owner"], run["state"]) == ("my_ltm", "alice", "complete")
    assert run["global_state"] == {"global_key": "global_value"}
    statuses = {item["fqn"]: item["status"] for item in run["instances"]}
    assert statuses == {
        "my_ltm": "active",
        "my_ltm.my_state": "completed",
        "my_ltm.end_state": "active",
    }
    detail = client.get(f"/api/ltm-runs/{run['id']}").json()
    assert detail["seq"] == run["seq"] and detail["events"][-1]["seq"] == run["seq"]
    listed = client.get("/api/ltm-runs").json()
    assert [item["id"] for item in listed["items"]] == [run["id"]]


def test_unknown_ltm_is_400(user):
    response = post(bearer(user), "/api/ltm-runs", {"ltm": "tests.ltm_catalog.MyLtm"})
    assert response.status_code == 400 and "unknown LTM" in response.json()["detail"]


def test_fire_a_transition_and_conflicts(user):
    client = bearer(user)
    run_id = post(client, "/api/ltm-runs", {"ltm": "broadcast"}).json()["id"]
    url = f"/api/ltm-runs/{run_id}/transitions"
    body = {"label": "go", "namespace": "broadcast.sub_c", "payload": {"why": "manual"}}
    fired = post(client, url, body)
    assert fired.status_code == 200, fired.content
    statuses = {item["fqn"]: item["status"] for item in fired.json()["instances"]}
    assert statuses["broadcast.sub_c.done"] == "active"
    again = post(client, url, body)
    assert again.status_code == 409 and "moves nothing" in again.json()["detail"]
    fired_event = LtmEvent.objects.get(run_id=run_id, kind="manual.transition")
    assert fired_event.actor == user and fired_event.data["payload"] == {"why": "manual"}
    elsewhere = post(client, url, {"label": "go", "namespace": "no.such.machine"})
    assert elsewhere.status_code == 409


def test_retry_and_kill(user):
    client = bearer(user)
    run = post(client, "/api/ltm-runs", {"ltm": "failing_ltm"}).json()
    assert run["state"] == "failed"
    retried = post(client, f"/api/ltm-runs/{run['id']}/retry")
    assert (retried.status_code, retried.json()["state"]) == (200, "failed")  # fails again
    assert LtmEvent.objects.filter(run_id=run["id"], kind="manual.retry", actor=user).exists()
    fine = post(client, "/api/ltm-runs", {"ltm": "my_ltm"}).json()
    assert post(client, f"/api/ltm-runs/{fine['id']}/retry").status_code == 409  # none failed
    killed = post(client, f"/api/ltm-runs/{run['id']}/kill", {"reason": "done with it"})
    assert (killed.json()["state"], killed.json()["error"]) == ("killed", "done with it")
    assert post(client, f"/api/ltm-runs/{run['id']}/kill").status_code == 409


def test_events_since(user):
    client = bearer(user)
    run = post(client, "/api/ltm-runs", {"ltm": "my_ltm"}).json()
    page = client.get(f"/api/ltm-runs/{run['id']}/events?since=2&limit=3").json()
    assert [event["seq"] for event in page["events"]] == [3, 4, 5]
    assert page["more"] is (run["seq"] > 5)


def test_a_second_user_learns_nothing_of_a_run(user, other_user):
    run_id = post(bearer(user), "/api/ltm-runs", {"ltm": "my_ltm"}).json()["id"]
    bob = bearer(other_user)
    missing = str(uuid.uuid4())
    for method, suffix, body in [
        ("get", "", None),
        ("get", "/events", None),
        ("post", "/transitions", {"label": "my_transition"}),
        ("post", "/retry", None),
        ("post", "/kill", {"reason": "bob"}),
    ]:
        foreign = getattr(bob, method)(
            f"/api/ltm-runs/{run_id}{suffix}", body or {}, content_type="application/json"
        )
        absent = getattr(bob, method)(
            f"/api/ltm-runs/{missing}{suffix}", body or {}, content_type="application/json"
        )
        assert foreign.status_code == 404, (method, suffix)
        assert foreign.content == absent.content
    assert bob.get("/api/ltm-runs").json()["count"] == 0
    assert not LtmEvent.objects.filter(run_id=run_id, actor=other_user).exists()
    assert Client().get(f"/api/ltm-runs/{run_id}").status_code == 401
