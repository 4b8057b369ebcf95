"""Schedules over the REST API (studio/api/schedules.py): create, list, get with runs and next
due times, change (pause and resume too), delete; bad input is a 400 that says what is wrong
and changes nothing; 404 for what the caller may not see, 403 where they see but may not act;
the OpenAPI schema lists them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client

from engine import api
from engine.models import AuditEntry, Schedule
from studio.models import ApiToken
from tests.studio.api.conftest import post

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


def patch(client: Client, url: str, body):
    return client.patch(url, body, content_type="application/json")


@pytest.fixture
def echo(routine):
    return routine("t_echo", name="nightly")


def body(routine, **extra):
    return {"routine": routine.pk, "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"} | extra


def as_user(client_for, user) -> Client:
    return client_for(ApiToken.issue(user, "t")[1])


def test_create_get_list_and_the_openapi_schema(c, echo, user):
    with time_machine.travel(datetime(2025, 1, 15, 12, tzinfo=UTC), tick=False):
        created = post(c, "/api/schedules", body(echo, data={"to": "ops"}, name="weekdays"))
        assert created.status_code == 201, created.content
        got = created.json()
        assert got | {"id": 0, "created": "", "updated": ""} == {
            "id": 0,
            "name": "weekdays",
            "routine": echo.pk,
            "routine_name": "nightly",
            "owner": "alice",
            "cron": "0 9 * * 1-5",
            "description": "At 09:00, Monday through Friday",
            "timezone": "Europe/Berlin",
            "data": {"to": "ops"},
            "paused": False,
            "next_run": "2025-01-16T08:00:00Z",
            "last_run": None,
            "version": 0,
            "created": "",
            "updated": "",
            "upcoming": [
                "2025-01-16T08:00:00Z",
                "2025-01-17T08:00:00Z",
                "2025-01-20T08:00:00Z",
                "2025-01-21T08:00:00Z",
                "2025-01-22T08:00:00Z",
            ],
            "runs": [],
        }
        assert c.get(f"/api/schedules/{got['id']}").json() == got
    page = c.get("/api/schedules").json()
    assert page["count"] == 1 and page["items"][0]["id"] == got["id"]
    assert "runs" not in page["items"][0]
    assert c.get(f"/api/schedules?routine={echo.pk}&paused=false").json()["count"] == 1
    assert c.get("/api/schedules?paused=true").json()["count"] == 0
    schema = c.get("/api/openapi.json").json()
    assert {"get", "post"} <= set(schema["paths"]["/api/schedules"])
    assert {"get", "patch", "delete"} <= set(schema["paths"]["/api/schedules/{schedule_id}"])


def test_get_shows_the_latest_runs_with_their_flows_and_missed_counts(c, echo, user):
    with time_machine.travel(datetime(2025, 1, 15, 12, tzinfo=UTC), tick=False):
        schedule = api.create_schedule(echo, user, "0 9 * * *")
    with time_machine.travel(datetime(2025, 1, 18, 12, tzinfo=UTC), tick=False):
        api.fire_schedules()
    detail = c.get(f"/api/schedules/{schedule.pk}").json()
    (run,) = detail["runs"]
    assert (run["due"], run["missed"], run["flow_state"], run["error"]) == (
        "2025-01-18T09:00:00Z",
        2,
        "complete",
        "",
    )
    assert run["flow"] is not None
    assert detail["last_run"] == "2025-01-18T09:00:00Z"


def test_patch_changes_what_is_given_and_pauses_and_resumes(c, echo, user):
    schedule = api.create_schedule(echo, user, "0 9 * * *", data={"a": 1})
    url = f"/api/schedules/{schedule.pk}"
    changed = patch(c, url, {"cron": "30 6 * * *", "timezone": "Asia/Tokyo", "name": "early"})
    assert changed.status_code == 200, changed.content
    got = changed.json()
    assert (got["cron"], got["timezone"], got["name"], got["data"]) == (
        "30 6 * * *",
        "Asia/Tokyo",
        "early",
        {"a": 1},
    )
    assert got["description"] == "At 06:30"
    paused = patch(c, url, {"paused": True}).json()
    assert paused["paused"] and paused["next_run"] is None and len(paused["upcoming"]) == 5
    resumed = patch(c, url, {"paused": False}).json()
    assert not resumed["paused"] and resumed["next_run"] == resumed["upcoming"][0]
    kinds = list(AuditEntry.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == [
        "schedule.created",
        "schedule.updated",
        "schedule.paused",
        "schedule.resumed",
    ]


def test_delete_is_a_204_and_audited(c, echo, user):
    schedule = api.create_schedule(echo, user, "0 9 * * *")
    response = c.delete(f"/api/schedules/{schedule.pk}")
    assert response.status_code == 204
    assert not Schedule.objects.exists()
    assert AuditEntry.objects.filter(kind="schedule.deleted", actor=user).exists()
    assert c.delete(f"/api/schedules/{schedule.pk}").status_code == 404


BAD = [
    ({"cron": "61 * * * *"}, "the minute field '61' is out of range"),
    ({"cron": "* * * *"}, "is not a cron expression"),
    ({"cron": "0 9 * * * *"}, "seconds and years are not supported"),
    ({"cron": "0 0 30 2 *"}, "never comes due"),
    ({"cron": "H 9 * * *"}, "random or hashed"),
    ({"cron": ""}, "cron: String should have at least 1 character"),
    ({"cron": "0 9 * * *\u0000"}, "NUL"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"timezone": "Europe/../../etc"}, "unknown time zone"),
    ({"data": [1, 2]}, "data: Input should be a valid dictionary"),
    ({"data": {"x": "\u0000"}}, "NUL"),
    ({"name": "x" * 201}, "name: String should have at most 200 characters"),
    ({"paused": "yes"}, "paused: Input should be a valid boolean"),
    ({"surprise": 1}, "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("bad", "message"), BAD)
def test_bad_input_to_create_is_a_400_that_says_what_and_creates_nothing(c, echo, bad, message):
    if "paused" in bad:
        bad = {"surprise": 1}  # create has no `paused`: an unknown field
        message = "Extra inputs are not permitted"
    response = post(c, "/api/schedules", body(echo) | bad)
    assert response.status_code == 400, response.content
    assert message in response.json()["detail"]
    assert not Schedule.objects.exists() and not AuditEntry.objects.exists()


@pytest.mark.parametrize(("bad", "message"), BAD)
def test_bad_input_to_patch_is_a_400_and_changes_nothing(c, echo, user, bad, message):
    schedule = api.create_schedule(echo, user, "0 9 * * *", data={"keep": 1}, name="kept")
    response = patch(c, f"/api/schedules/{schedule.pk}", {"paused": True} | bad)
    assert response.status_code == 400, response.content
    assert message in response.json()["detail"]
    after = Schedule.objects.get(pk=schedule.pk)
    assert (after.cron, after.timezone, after.data, after.name, after.paused) == (
        "0 9 * * *",
        "UTC",
        {"keep": 1},
        "kept",
        False,
    )
    assert after.version == schedule.version
    assert AuditEntry.objects.count() == 1


@pytest.mark.parametrize("routine_id", [999_999, "7", True, 0, 2**63])
def test_the_routine_must_be_a_strict_id_of_one_you_may_see(c, routine_id):
    response = post(c, "/api/schedules", {"routine": routine_id, "cron": "@daily"})
    assert response.status_code in (400, 404)
    assert not Schedule.objects.exists()


def test_others_get_404_and_nothing_changes(client_for, echo, user, other_user):
    schedule = api.create_schedule(echo, user, "0 9 * * *", name="alices")
    bob = as_user(client_for, other_user)
    url = f"/api/schedules/{schedule.pk}"
    assert bob.get("/api/schedules").json()["count"] == 0
    assert bob.get(url).status_code == 404
    assert patch(bob, url, {"paused": True}).status_code == 404
    assert bob.delete(url).status_code == 404
    assert bob.get(url).json() == {"detail": "Not found"}
    assert bob.get("/api/schedules/999999").json() == {"detail": "Not found"}
    # alice's routine is not bob's to schedule either
    assert post(bob, "/api/schedules", body(echo)).status_code == 404
    after = Schedule.objects.get(pk=schedule.pk)
    assert not after.paused and after.version == schedule.version
    assert AuditEntry.objects.count() == 1


def test_scheduling_for_someone_else_takes_an_operator(
    c, client_for, echo, user, other_user, make_user
):
    shared = api.create_routine("shared", ["t_echo"], owner=None)
    refused = post(c, "/api/schedules", body(shared, owner="bob"))
    assert refused.status_code == 403
    assert "only operators" in refused.json()["detail"]
    # the same answer whether or not the user exists
    assert post(c, "/api/schedules", body(shared, owner="nobody")).status_code == 403
    assert post(c, "/api/schedules", body(shared, owner="alice")).status_code == 201
    olga = as_user(client_for, make_user("olga", is_staff=True))
    made = post(olga, "/api/schedules", body(shared, owner="bob"))
    assert made.status_code == 201 and made.json()["owner"] == "bob"
    missing = post(olga, "/api/schedules", body(shared, owner="nobody"))
    assert missing.status_code == 400 and "no active user named" in missing.json()["detail"]
    private = post(olga, "/api/schedules", body(echo, owner="bob"))
    assert private.status_code == 400 and "bob may not see routine" in private.json()["detail"]
    # operators see and change every schedule
    assert olga.get("/api/schedules").json()["count"] == 2
    alices = Schedule.objects.get(owner=user)
    assert patch(olga, f"/api/schedules/{alices.pk}", {"paused": True}).status_code == 200


def test_sign_in_is_needed(echo, user):
    schedule = api.create_schedule(echo, user, "0 9 * * *")
    anonymous = Client()
    assert anonymous.get("/api/schedules").status_code == 401
    assert anonymous.get(f"/api/schedules/{schedule.pk}").status_code == 401
    assert post(anonymous, "/api/schedules", body(echo)).status_code == 401
    assert patch(anonymous, f"/api/schedules/{schedule.pk}", {"paused": True}).status_code == 401
    assert anonymous.delete(f"/api/schedules/{schedule.pk}").status_code == 401
    assert Schedule.objects.get().paused is False


def test_a_session_needs_the_csrf_token_for_changes(echo, user):
    schedule = api.create_schedule(echo, user, "0 9 * * *")
    session = Client(enforce_csrf_checks=True)
    session.force_login(user)
    assert session.get("/api/schedules").status_code == 200
    assert session.delete(f"/api/schedules/{schedule.pk}").status_code == 403
    assert post(session, "/api/schedules", body(echo)).status_code == 403
    assert Schedule.objects.count() == 1
