"""Recovery over the REST API: a retrying flow's state, attempt and next retry; retry now,
give up, and retries, resumes and moves with edits of the flow's data and the step's params
(400 for a bad edit, nothing changed); who holds a running flow and what the housekeeping
will do (operators only); routine steps with keys and retry overrides; the OpenAPI schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from engine import api
from engine.flows.status import FlowState
from engine.models import Flow, FlowEvent, RoutineStep, Worker
from tests.conftest import bearer
from tests.studio.api.conftest import post, put

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


def _same_time(text, moment) -> bool:
    """An API time (to the millisecond) is `moment`."""
    return abs(parse_datetime(text) - moment) < timedelta(milliseconds=1)


def _retrying(user, data=None, steps=("t_ui_needs_ok", "t_echo")) -> Flow:
    routine = api.create_routine("Charge", list(steps), owner=user)
    flow = api.start_flow(routine, user, {"amount": 10} if data is None else data)
    flow.refresh_from_db()
    assert flow.state == FlowState.RETRYING
    return flow


def test_a_retrying_flow_shows_its_attempt_and_next_retry(c, user):
    flow = _retrying(user)
    body = c.get(f"/api/flows/{flow.pk}").json()
    assert (body["state"], body["attempt"], body["step_deadline"]) == ("retrying", 2, None)
    assert body["retry"]["attempt"] == 2 and body["retry"]["attempts"] == 4
    assert _same_time(body["retry"]["at"], flow.retry_at)
    assert body["error"].startswith("ValueError: data.ok is not set")
    assert set(body["actions"]) >= {"retry", "give_up", "skip", "kill", "move"}
    assert "resume" not in body["actions"]
    failed = [e for e in body["events"] if e["kind"] == "step.attempt_failed"]
    assert failed[0]["data"]["attempt"] == 1 and failed[0]["data"]["attempts"] == 4
    listed = c.get("/api/flows?state=retrying").json()
    assert listed["count"] == 1 and listed["items"][0]["retry"]["attempts"] == 4
    waiting = api.start_flow(api.create_routine("W", ["t_wait"], owner=user), user)
    other = c.get(f"/api/flows/{waiting.pk}").json()
    assert (other["retry"], other["attempt"]) == (None, 1)


def test_retry_now_goes_on_counting_and_give_up_fails_the_flow(c, user):
    flow = _retrying(user)
    retried = post(c, f"/api/flows/{flow.pk}/retry", {"reason": "try now", "version": flow.version})
    assert retried.status_code == 200, retried.content
    assert (retried.json()["state"], retried.json()["attempt"]) == ("retrying", 3)
    event = FlowEvent.objects.filter(flow=flow, kind="manual.retry").last()
    assert event.message == "try now" and event.data["was"] == "retrying"
    gave_up = post(c, f"/api/flows/{flow.pk}/give-up", {"reason": "card cancelled"})
    assert gave_up.status_code == 200, gave_up.content
    assert gave_up.json()["state"] == "failed" and gave_up.json()["retry"] is None
    assert FlowEvent.objects.filter(flow=flow, kind="manual.give_up").last().message == (
        "card cancelled"
    )
    again = post(c, f"/api/flows/{flow.pk}/give-up")
    assert again.status_code == 409 and "only a flow waiting to retry" in again.json()["detail"]


def test_a_stale_version_is_a_409_for_give_up(c, user):
    flow = _retrying(user)
    stale = post(c, f"/api/flows/{flow.pk}/give-up", {"version": flow.version - 1})
    assert stale.status_code == 409
    assert Flow.objects.get(pk=flow.pk).state == FlowState.RETRYING


def test_a_retry_with_edits_reruns_with_them_and_records_the_diff(c, user):
    flow = _retrying(user)
    body = {"reason": "fixed", "data": {"amount": 12, "ok": True}, "params": {"card": "new"}}
    response = post(c, f"/api/flows/{flow.pk}/retry", body)
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "complete"
    flow.refresh_from_db()
    assert flow.data == {"amount": 12, "ok": True}
    assert flow.results[0] == {"attempt": 2, "params": {"card": "new"}}
    event = FlowEvent.objects.filter(flow=flow, kind="manual.retry").last()
    assert event.data["edits"] == {
        "data": [
            {"path": "amount", "op": "changed", "old": 10, "new": 12},
            {"path": "ok", "op": "added", "new": True},
        ],
        "params": {"step": 0, "changes": [{"path": "card", "op": "added", "new": "new"}]},
    }
    assert event.message.startswith("fixed\ndata edited:\namount: 10 → 12")


@pytest.mark.parametrize(
    "body",
    [
        {"data": [1, 2]},
        {"data": "text"},
        {"params": 5},
        {"data": {"a": "\u0000"}},
        {"data": {"ok": True}, "unknown": 1},
        {"reason": "x" * 501},
    ],
)
def test_bad_edits_are_a_400_and_change_nothing(c, user, body):
    flow = _retrying(user)
    response = post(c, f"/api/flows/{flow.pk}/retry", body)
    assert response.status_code == 400, response.content
    after = Flow.objects.get(pk=flow.pk)
    assert (after.version, after.data, after.state) == (flow.version, flow.data, flow.state)


def test_resume_and_move_take_a_reason_and_edits(c, user):
    flow = _retrying(user)
    api.give_up(flow, user, "stop")
    resumed = post(c, f"/api/flows/{flow.pk}/resume", {"reason": "data fixed", "data": {"ok": 1}})
    assert resumed.status_code == 200, resumed.content
    assert resumed.json()["state"] == "complete"
    assert FlowEvent.objects.filter(flow=flow, kind="manual.resume").last().data["edits"]
    moved = post(
        c,
        f"/api/flows/{flow.pk}/move",
        {"position": 1, "reason": "again", "params": {"n": 2}, "data": {"ok": 2}},
    )
    assert moved.status_code == 200, moved.content
    flow.refresh_from_db()
    assert flow.steps[1]["params"] == {"n": 2} and flow.data == {"ok": 2}
    assert flow.results[1]["params"] == {"n": 2}
    event = FlowEvent.objects.filter(flow=flow, kind="manual.move").last()
    assert event.data["edits"]["params"]["step"] == 1


def test_the_overrides_of_a_foreign_flow_are_404(c, user, make_user):
    theirs = _retrying(make_user("bob"))
    for action, body in [
        ("retry", {"data": {"x": 1}}),
        ("give-up", {"reason": "x"}),
        ("resume", {"params": {"x": 1}}),
    ]:
        assert post(c, f"/api/flows/{theirs.pk}/{action}", body).status_code == 404
    assert Flow.objects.get(pk=theirs.pk).version == theirs.version


def test_operators_see_who_holds_a_running_flow_and_what_housekeeping_will_do(c, user, make_user):
    routine = api.create_routine("Hold", ["t_wait", "t_ui_hold"], owner=user)
    flow = api.start_flow(routine, user)
    now = timezone.now()
    Flow.objects.filter(pk=flow.pk).update(
        state=FlowState.RUNNING,
        position=1,
        worker="box:4242:ab12cd34",
        step_deadline=now + timedelta(hours=1),
    )
    Worker.objects.create(
        id="box:4242:ab12cd34",
        host="box",
        pid=4242,
        held=[flow.pk],
        threads={str(flow.pk): {"thread": "huey-2", "since": now.isoformat()}},
    )
    mine = c.get(f"/api/flows/{flow.pk}").json()
    assert mine["holder"] is None and mine["housekeeping"] is None
    assert _same_time(mine["step_deadline"], now + timedelta(hours=1))
    staff = bearer(make_user("root", is_staff=True)).get(f"/api/flows/{flow.pk}").json()
    holder = staff["holder"]
    assert (holder["host"], holder["pid"], holder["thread"]) == ("box", 4242, "huey-2")
    assert holder["alive"] and holder["holds"] and _same_time(holder["since"], now)
    assert holder["worker"] == "box:4242:ab12cd34" and holder["age"] >= 0
    texts = [item["what"] for item in staff["housekeeping"]]
    assert texts[0].startswith("Held by worker box (process 4242, thread huey-2)")
    assert any("took longer than 3600 s" in text for text in texts)
    timed = [item for item in staff["housekeeping"] if item["at"]]
    assert _same_time(timed[0]["at"], now + timedelta(hours=1))


def test_routine_steps_take_keys_and_retry_overrides(c):
    steps = [
        {"script": "t_ui_needs_ok", "key": "pay", "overrides": {"retries": 5, "time_limit": 30}},
        {"script": "t_echo"},
    ]
    created = post(c, "/api/routines", {"name": "R", "steps": steps})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["steps"][0]["key"] == "pay"
    assert body["steps"][0]["overrides"] == {"retries": 5, "time_limit": 30}
    assert body["steps"][1]["overrides"] == {} and body["steps"][1]["key"]
    steps[0]["overrides"] = {"retry_delay": 2}
    updated = put(c, f"/api/routines/{body['id']}", {"name": "R", "steps": steps, "version": 1})
    assert updated.status_code == 200, updated.content
    assert updated.json()["steps"][0]["overrides"] == {"retry_delay": 2}
    assert RoutineStep.objects.get(routine_id=body["id"], order=0).key == "pay"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"retries": 1.5}, "retries"),
        ({"retries": True}, "retries"),
        ({"retry_jitter": 3}, "retry_jitter"),
        ({"retry_on": 1}, "retry_on"),
        ({"time_limit": "10"}, "time_limit"),
    ],
)
def test_bad_overrides_are_a_400_naming_the_setting(c, overrides, field):
    steps = [{"script": "t_echo", "overrides": overrides}]
    response = post(c, "/api/routines", {"name": "R", "steps": steps})
    assert response.status_code == 400, response.content
    assert response.json()["errors"][0]["loc"] == ["body", "payload", "steps", 0, field]
    assert "step 1" in response.json()["detail"]


def test_a_bad_step_key_is_a_400(c):
    steps = [{"script": "t_echo", "key": "no spaces"}]
    response = post(c, "/api/routines", {"name": "R", "steps": steps})
    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"][-1] == "key"


def test_the_openapi_schema_describes_recovery(c):
    schema = c.get("/api/openapi.json").json()
    parts = schema["components"]["schemas"]
    flow = parts["FlowOut"]["properties"]
    assert {"attempt", "retry", "step_deadline"} <= set(flow)
    assert {"attempt", "attempts", "at"} <= set(parts["RetryOut"]["properties"])
    detail = parts["FlowDetail"]["properties"]
    assert {"holder", "housekeeping"} <= set(detail)
    assert {"thread", "since", "beat", "age", "host", "pid"} <= set(
        parts["HolderOut"]["properties"]
    )
    assert {"reason", "data", "params", "version"} <= set(parts["RerunIn"]["properties"])
    assert {"data", "params"} <= set(parts["MoveIn"]["properties"])
    assert {"key", "overrides"} <= set(parts["StepIn"]["properties"])
    assert {"key", "overrides"} <= set(parts["StepOut"]["properties"])
    give_up = schema["paths"]["/api/flows/{flow_id}/give-up"]["post"]
    assert give_up["summary"] == "Give up retrying"
    assert "retry now" in schema["paths"]["/api/flows/{flow_id}/retry"]["post"]["description"]
