"""Routine versions over the REST API (studio/api/versions.py): list, get, compare any two,
and move a flow onto another version; every refusal a clear 4xx that changes nothing; a
second user learns nothing (404 as for a missing object); the OpenAPI schema has them."""

from __future__ import annotations

import pytest

from engine import api
from engine.models import Flow, FlowEvent, RoutineVersion
from tests.conftest import bearer
from tests.studio.api.conftest import post

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]

MISSING = 987654


def steps_of(routine):
    routine.refresh_from_db()
    row = RoutineVersion.objects.get(routine=routine, number=routine.version)
    return [dict(s) for s in row.steps]


@pytest.fixture
def onboarding(user):
    """v1: A, B (waits); v2: New, A, B — and a flow of v1 waiting at B."""
    routine = api.create_routine(
        "Onboarding",
        [{"script": "t_echo", "label": "A"}, {"script": "t_wait", "label": "B"}],
        owner=user,
    )
    flow = api.start_flow(routine, user)
    api.update_routine(
        routine,
        "Onboarding 2",
        [{"script": "t_echo", "label": "New", "params": {"x": 1}}, *steps_of(routine)],
        user,
        description="with a first step",
    )
    flow.refresh_from_db()
    return routine, flow


def frozen(flow):
    flow = Flow.objects.get(pk=flow.pk)
    events = FlowEvent.objects.filter(flow=flow).count()
    return flow.version, flow.routine_version, flow.state, flow.position, flow.steps, events


def test_list_and_get_versions(c, onboarding):
    routine, _ = onboarding
    listed = c.get(f"/api/routines/{routine.pk}/versions")
    assert listed.status_code == 200, listed.content
    body = listed.json()
    assert (body["routine"], body["current"]) == (routine.pk, 2)
    assert [(v["number"], v["step_count"], v["author"]) for v in body["items"]] == [
        (2, 3, "alice"),
        (1, 2, "alice"),
    ]
    one = c.get(f"/api/routines/{routine.pk}/versions/2").json()
    assert one["name"] == "Onboarding 2" and one["description"] == "with a first step"
    assert [s["name"] for s in one["steps"]] == ["New", "A", "B"]
    assert one["steps"][0]["params"] == {"x": 1} and all(s["key"] for s in one["steps"])
    assert [s["key"] for s in one["steps"]] == [s["key"] for s in steps_of(routine)]
    assert c.get(f"/api/routines/{routine.pk}/versions/3").status_code == 404
    assert c.get(f"/api/routines/{routine.pk}/versions/1.0").status_code == 400


def test_diff_of_any_two_versions(c, onboarding):
    routine, _ = onboarding
    diff = c.get(f"/api/routines/{routine.pk}/diff?a=1&b=2")
    assert diff.status_code == 200, diff.content
    body = diff.json()
    assert (body["a"], body["b"], body["changed"]) == (1, 2, True)
    assert body["name"] == ["Onboarding", "Onboarding 2"]
    assert body["summary"] == {"added": ["New"], "removed": [], "moved": [], "changed": []}
    assert [(r["kind"], r["changes"]) for r in body["rows"]] == [
        ("added", ["added"]),
        ("same", []),
        ("same", []),
    ]
    assert body["rows"][0]["left"] is None and body["rows"][0]["right"]["position"] == 0
    assert body["rows"][1]["left"]["position"] == 0 and body["rows"][1]["right"]["position"] == 1
    back = c.get(f"/api/routines/{routine.pk}/diff?a=2&b=1").json()
    assert back["summary"]["removed"] == ["New"]


@pytest.mark.parametrize(
    ("query", "status", "detail"),
    [
        ("a=1&b=7", 400, "no version 7; its versions are 1 and 2"),
        ("a=0&b=1", 400, "a: Input should be greater than or equal to 1"),
        ("a=x&b=1", 400, "a: Input should be a valid integer"),
        ("a=1", 400, "b: Field required"),
    ],
)
def test_diff_with_bad_versions_is_a_400(c, onboarding, query, status, detail):
    routine, _ = onboarding
    response = c.get(f"/api/routines/{routine.pk}/diff?{query}")
    assert response.status_code == status and detail in response.json()["detail"], response.json()


def test_change_version_moves_the_flow_with_its_position_mapped(c, onboarding, user):
    routine, flow = onboarding
    moved = post(c, f"/api/flows/{flow.pk}/change-version", {"version": 2, "reason": "v2 now"})
    assert moved.status_code == 200, moved.content
    body = moved.json()
    assert (body["routine_version"], body["position"], body["state"]) == (2, 2, "waiting")
    detail = c.get(f"/api/flows/{flow.pk}").json()
    assert [s["name"] for s in detail["steps"]] == ["New", "A", "B"]
    assert detail["results"][:2] == [None, {"position": 0, "params": {}, "seen": 0}]
    event = next(e for e in detail["events"] if e["kind"] == "manual.change_version")
    assert (event["kind"], event["actor"], event["message"]) == (
        "manual.change_version",
        "alice",
        "v2 now",
    )
    assert (event["data"]["from_version"], event["data"]["to"]) == (1, 2)
    # Back onto v1 at a chosen step.
    back = post(
        c,
        f"/api/flows/{flow.pk}/change-version",
        {"version": 1, "position": 0, "reason": "undo", "flow_version": body["version"]},
    )
    assert back.status_code == 200 and back.json()["routine_version"] == 1


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"version": 9}, 400, "no version 9; its versions are 1 and 2"),
        ({"version": 1}, 409, "already on version 1"),
        ({"version": 2, "position": 3}, 409, "out of range: version 2 has steps 0 to 2"),
        ({"version": 2, "flow_version": 0}, 409, "changed since you loaded it"),
        ({"version": "2"}, 400, "version: Input should be a valid integer"),
        ({"version": True}, 400, "version: Input should be a valid integer"),
        ({"version": 2, "position": -1}, 400, "position: Input should be greater than"),
        ({"version": 2, "flow_version": True}, 400, "flow_version"),
        ({"version": 2, "reason": "a\x00b"}, 400, "reason"),
        ({"version": 2, "nope": 1}, 400, "nope: Extra inputs are not permitted"),
        ({}, 400, "version: Field required"),
    ],
)
def test_change_version_refusals_change_nothing(c, onboarding, body, status, detail):
    _, flow = onboarding
    before = frozen(flow)
    response = post(c, f"/api/flows/{flow.pk}/change-version", body)
    assert response.status_code == status, response.content
    assert detail in response.json()["detail"], response.json()
    assert frozen(flow) == before


def test_a_running_or_complete_flow_is_a_409(c, onboarding):
    _, flow = onboarding
    for state in ("running", "complete"):
        Flow.objects.filter(pk=flow.pk).update(state=state)
        before = frozen(flow)
        response = post(c, f"/api/flows/{flow.pk}/change-version", {"version": 2})
        assert response.status_code == 409
        assert "only a pending, waiting, failed or killed flow" in response.json()["detail"]
        assert frozen(flow) == before


def test_the_actions_of_a_flow_name_the_move(c, onboarding):
    _, flow = onboarding
    assert "change_version" in c.get(f"/api/flows/{flow.pk}").json()["actions"]


def test_a_second_user_gets_404_identical_to_missing(onboarding, other_user):
    routine, flow = onboarding
    before = frozen(flow)
    bob = bearer(other_user)
    calls = [
        ("get", "/api/routines/{r}/versions", None),
        ("get", "/api/routines/{r}/versions/1", None),
        ("get", "/api/routines/{r}/diff?a=1&b=2", None),
        ("post", "/api/flows/{f}/change-version", {"version": 2, "reason": "bob"}),
    ]
    for method, url, body in calls:
        foreign = url.format(r=routine.pk, f=flow.pk)
        missing = url.format(r=MISSING, f=MISSING)
        if method == "get":
            got, absent = bob.get(foreign), bob.get(missing)
        else:
            got, absent = post(bob, foreign, body), post(bob, missing, body)
        assert got.status_code == 404, (url, got.content)
        assert got.content == absent.content
        assert b"Onboarding" not in got.content
    assert frozen(flow) == before


def test_the_schema_has_the_version_endpoints(c):
    schema = c.get("/api/openapi.json").json()
    paths = schema["paths"]
    assert "get" in paths["/api/routines/{routine_id}/versions"]
    assert "get" in paths["/api/routines/{routine_id}/versions/{number}"]
    assert "get" in paths["/api/routines/{routine_id}/diff"]
    change = paths["/api/flows/{flow_id}/change-version"]["post"]
    assert change["tags"] == ["flows"]
    assert paths["/api/routines/{routine_id}/diff"]["get"]["tags"] == ["routines"]
