"""Flows over the REST API (studio/api/flows.py): start, get, list with filters and pages,
input, versions, and the manual actions."""

from __future__ import annotations

import pytest
from django.db import connection

from engine import api
from engine.models import FlowEvent
from tests.studio.api.conftest import post

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


def test_start_and_get_a_flow_with_results_and_events(c, routine):
    r = routine("t_echo", "t_result_fields")
    started = post(c, "/api/flows", {"routine": r.pk, "data": {"k": "v"}})
    assert started.status_code == 201, started.content
    flow = started.json()
    assert (flow["state"], flow["length"], flow["data"]) == ("complete", 2, {"k": "v"})
    detail = c.get(f"/api/flows/{flow['id']}").json()
    assert detail["results"][1] == {"a": 1, "b": "two"}
    assert [e["kind"] for e in detail["events"]][0] == "flow.created"
    assert detail["events"][0]["actor"] == "alice"
    assert [e["seq"] for e in detail["events"]] == list(range(1, detail["seq"] + 1))


def test_start_unknown_routine_is_404(c):
    assert post(c, "/api/flows", {"routine": 999}).status_code == 404


def test_list_filters_and_pages(c, routine, user):
    waiting = api.start_flow(routine("t_wait", name="alpha"), user)
    done = api.start_flow(routine("t_echo", name="beta"), user)
    for _ in range(3):
        api.start_flow(done.routine, user)
    everything = c.get("/api/flows").json()
    assert everything["count"] == 5
    assert c.get("/api/flows?state=waiting").json()["items"][0]["id"] == waiting.pk
    assert c.get(f"/api/flows?routine={done.routine_id}").json()["count"] == 4
    assert c.get("/api/flows?search=need an").json()["count"] == 1  # the wait reason
    assert c.get("/api/flows?search=ALPH").json()["count"] == 1  # the routine name
    assert c.get("/api/flows?owner=alice").json()["count"] == 5
    page = c.get("/api/flows?limit=2&offset=4").json()
    assert (page["count"], len(page["items"]), page["limit"]) == (5, 1, 2)
    assert c.get("/api/flows?limit=1000").status_code == 400
    assert c.get("/api/flows?state=nonsense").status_code == 400


def test_listing_takes_a_fixed_number_of_queries(c, routine, user, django_assert_max_num_queries):
    r = routine("t_echo")
    for _ in range(20):
        api.start_flow(r, user)
    # (On PostgreSQL one more: its planner's estimate, asked before the count.)
    with django_assert_max_num_queries(6 + (connection.vendor == "postgresql")):
        assert len(c.get("/api/flows?limit=20").json()["items"]) == 20


def test_push_input_completes_a_waiting_flow(c, routine, user):
    flow = api.start_flow(routine("t_wait"), user)
    response = post(c, f"/api/flows/{flow.pk}/input", {"data": {"answer": 42}})
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "complete"
    assert c.get(f"/api/flows/{flow.pk}").json()["results"] == [{"got": {"answer": 42}}]


def test_input_to_a_flow_that_is_not_waiting_is_409(c, routine, user):
    flow = api.start_flow(routine("t_echo"), user)
    response = post(c, f"/api/flows/{flow.pk}/input", {"data": 1})
    assert response.status_code == 409
    assert "waiting" in response.json()["detail"]


def test_a_stale_version_is_409_and_changes_nothing(c, routine, user):
    flow = api.start_flow(routine("t_wait"), user)
    response = post(c, f"/api/flows/{flow.pk}/input", {"data": 1, "version": flow.version - 1})
    assert response.status_code == 409 and "changed" in response.json()["detail"]
    flow.refresh_from_db()
    assert flow.state == "waiting"
    ok = post(c, f"/api/flows/{flow.pk}/input", {"data": 1, "version": flow.version})
    assert ok.status_code == 200


def test_move_retry_skip_kill_resume(c, routine, user):
    flow = api.start_flow(routine("t_echo", "t_fail", "t_wait"), user)
    assert flow.state == "failed"
    url = f"/api/flows/{flow.pk}"
    retried = post(c, f"{url}/retry")
    assert (retried.status_code, retried.json()["state"]) == (200, "failed")
    skipped = post(c, f"{url}/skip", {"reason": "known bad"})
    assert (skipped.json()["state"], skipped.json()["position"]) == ("waiting", 2)
    killed = post(c, f"{url}/kill", {"reason": "enough"})
    assert (killed.json()["state"], killed.json()["error"]) == ("killed", "enough")
    assert post(c, f"{url}/kill").status_code == 409  # already ended
    resumed = post(c, f"{url}/resume")
    assert resumed.json()["state"] == "waiting"
    moved = post(c, f"{url}/move", {"position": 0, "reason": "again"})
    assert (moved.status_code, moved.json()["state"]) == (200, "failed")  # ran 0, failed at 1
    assert post(c, f"{url}/move", {"position": 7}).status_code == 409  # out of range
    kinds = set(FlowEvent.objects.filter(flow=flow).values_list("kind", flat=True))
    assert {"manual.retry", "manual.skip", "manual.kill", "manual.resume", "manual.move"} <= kinds
    assert post(c, f"{url}/retry", {"version": 0}).status_code == 409  # stale


def test_actions_without_a_body(c, routine, user):
    flow = api.start_flow(routine("t_wait"), user)
    killed = c.generic("POST", f"/api/flows/{flow.pk}/kill")
    assert (killed.status_code, killed.json()["state"]) == (200, "killed")
    assert c.generic("POST", f"/api/flows/{flow.pk}/resume").json()["state"] == "waiting"
