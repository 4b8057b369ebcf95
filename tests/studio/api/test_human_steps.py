"""Human steps over the REST API: each script's input as JSON Schema, a waiting flow's
schema, deadline and assignees, field errors as a 400, who may see and answer an assigned
step (and that assignees cannot override), hidden results, "waiting for me" and
notifications."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from engine import api
from engine.models import Flow, FlowEvent, Notification
from studio.api.flows import NOT_YOURS_TO_ANSWER
from tests.conftest import bearer
from tests.studio.api.conftest import post

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]

MISSING = 987654
OVERRIDES = [
    ("move", {"position": 0}),
    ("retry", {}),
    ("skip", {}),
    ("kill", {"reason": "carol"}),
    ("resume", {}),
]


@pytest.fixture
def approver(make_user):
    """carol: in the group "approvers", neither staff nor an operator."""
    carol = make_user("carol")
    carol.groups.add(Group.objects.create(name="approvers"))
    return carol


def assigned(owner, script: str = "t_approve", name: str = "approval", **params) -> Flow:
    """A flow of a one-step routine whose step waits for the group "approvers"."""
    routine = api.create_routine(name, [script], owner=owner)
    step = routine.steps.get()
    step.params = {"assign_to": "approvers", **params}
    step.save()
    flow = api.start_flow(routine, owner)
    assert flow.state == "waiting", flow.error
    return flow


def events_of(flow: Flow) -> list[str]:
    return list(FlowEvent.objects.filter(flow=flow).order_by("seq").values_list("kind", flat=True))


# --- the schema of each script's input -----------------------------------------------------


def test_scripts_carry_their_input_as_json_schema(c):
    scripts = {item["name"]: item for item in c.get("/api/scripts").json()}
    form = scripts["t_form"]
    assert form["has_input_form"] is True
    schema = form["input_schema"]
    assert (schema["type"], schema["title"], schema["additionalProperties"]) == (
        "object",
        "OrderForm",
        False,
    )
    props = schema["properties"]
    assert props["approved"] == {"type": "boolean", "description": "Tick to approve"}
    assert props["amount"]["format"] == "decimal"
    assert props["amount"]["type"] == ["number", "string"] and props["amount"]["minimum"] == 0
    assert props["ship_on"] == {"type": "string", "format": "date"}
    assert props["size"] == {"type": "string", "enum": ["s", "l"]}
    assert props["quantity"] == {"type": "integer", "minimum": 1, "maximum": 99}
    assert schema["required"] == ["amount", "size", "quantity"]  # a checkbox never is
    assert scripts["t_approve"]["input_schema"]["x-decision"] is True
    assert scripts["t_wait"]["input_schema"] == {
        "type": "object",
        "properties": {"answer": {}},
        "required": ["answer"],
    }
    assert scripts["t_echo"]["input_schema"] is None
    assert scripts["t_echo"]["has_input_form"] is False
    assert scripts["t_times_out"]["handles_timeout"] is True
    assert scripts["t_plain_deadline"]["handles_timeout"] is False


# --- a waiting flow's detail ---------------------------------------------------------------


def test_a_waiting_flow_shows_its_schema_deadline_and_assignees(user, approver):
    before = timezone.now()
    flow = assigned(user, timeout=3600)
    detail = bearer(user).get(f"/api/flows/{flow.pk}").json()
    assert detail["state"] == "waiting"
    assert detail["input_schema"]["title"] == "Approval"
    assert set(detail["input_schema"]["properties"]) == {"decision", "comment", "amount"}
    deadline = datetime.fromisoformat(detail["deadline"])
    assert before + timedelta(seconds=3590) < deadline < timezone.now() + timedelta(seconds=3610)
    assert detail["assignees"] == {"users": [], "groups": ["approvers"]}
    assert (detail["results"], detail["results_hidden"]) == ([None], False)
    assert "input" not in detail["actions"] and "kill" in detail["actions"]  # no self-approval
    waiting = [e for e in detail["events"] if e["kind"] == "flow.waiting"][-1]
    assert waiting["data"]["deadline"]


def test_a_flow_that_does_not_wait_has_no_schema_deadline_or_assignees(c, routine, user):
    flow = api.start_flow(routine("t_echo"), user)
    detail = c.get(f"/api/flows/{flow.pk}").json()
    assert (detail["input_schema"], detail["deadline"]) == (None, None)
    assert detail["assignees"] == {"users": [], "groups": []}
    listed = c.get("/api/flows").json()["items"][0]
    assert "deadline" in listed and listed["deadline"] is None


# --- typed input ---------------------------------------------------------------------------


def test_invalid_form_input_is_a_400_with_the_field_errors_and_stores_nothing(c, routine, user):
    flow = api.start_flow(routine("t_form"), user)
    bad = {"amount": -3, "size": "xl", "quantity": 2}
    response = post(c, f"/api/flows/{flow.pk}/input", {"data": bad, "version": flow.version})
    assert response.status_code == 400, response.content
    body = response.json()
    fields = {tuple(error["loc"]): error["msg"] for error in body["errors"]}
    assert set(fields) == {
        ("body", "payload", "data", "amount"),
        ("body", "payload", "data", "size"),
    }
    assert "greater than or equal to 0" in fields[("body", "payload", "data", "amount")]
    assert "xl" in fields[("body", "payload", "data", "size")]
    assert body["detail"].startswith("Invalid input: data.amount: ")
    assert "data.size: " in body["detail"]
    assert {error["type"] for error in body["errors"]} == {"value_error"}
    not_an_object = post(c, f"/api/flows/{flow.pk}/input", {"data": [1, 2]})
    assert not_an_object.status_code == 400
    assert not_an_object.json()["errors"][0]["loc"] == ["body", "payload", "data"]
    stored = Flow.objects.get(pk=flow.pk)
    assert (stored.state, stored.version, stored.input, stored.has_input) == (
        "waiting",
        flow.version,
        None,
        False,
    )
    assert "input.pushed" not in events_of(flow)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ship_on", 123, "Input should be a string"),  # a number is no date (nor a 500)
        ("ship_on", [2030, 1, 2], "Input should be a string"),
        ("quantity", "3", "Input should be an integer"),  # strict, like every body integer
        ("quantity", True, "Input should be an integer"),
        ("amount", {"value": 1}, "Input should be a number or a string"),
        ("approved", "yes", "Input should be a boolean"),
        ("colour", "red", "Extra inputs are not permitted"),  # the schema admits no others
    ],
)
def test_input_that_does_not_fit_the_schema_types_is_a_400(c, routine, user, field, value, message):
    flow = api.start_flow(routine("t_form"), user)
    data = {"amount": "1", "size": "s", "quantity": 1, field: value}
    response = post(c, f"/api/flows/{flow.pk}/input", {"data": data})
    assert response.status_code == 400, response.content
    assert response.json()["errors"] == [
        {
            "loc": ["body", "payload", "data", field],
            "msg": message,
            "type": response.json()["errors"][0]["type"],
        }
    ]
    assert Flow.objects.get(pk=flow.pk).state == "waiting"


def test_steps_without_a_form_still_take_any_json(c, routine, user):
    flow = api.start_flow(routine("t_wait"), user)  # input_fields: a schema without types
    response = post(
        c, f"/api/flows/{flow.pk}/input", {"data": {"answer": [1, {"x": None}], "more": 1}}
    )
    assert response.status_code == 200, response.content


def test_valid_form_input_moves_the_flow_on_with_its_cleaned_data(c, routine, user):
    flow = api.start_flow(routine("t_form"), user)
    good = {
        "approved": False,
        "amount": "12.5",
        "ship_on": "2030-01-02",
        "size": "l",
        "quantity": 3,
    }
    response = post(c, f"/api/flows/{flow.pk}/input", {"data": good, "version": flow.version})
    assert response.status_code == 200, response.content
    assert (response.json()["state"], response.json()["deadline"]) == ("complete", None)
    assert c.get(f"/api/flows/{flow.pk}").json()["results"] == [good]  # decimals as exact text


def test_rejecting_needs_a_comment(c, user):
    flow = assigned(user, assign_to=[])  # nobody assigned: the owner answers
    missing = post(c, f"/api/flows/{flow.pk}/input", {"data": {"decision": "reject"}})
    assert missing.status_code == 400
    assert missing.json()["errors"][0]["loc"][-1] == "comment"
    rejected = post(
        c, f"/api/flows/{flow.pk}/input", {"data": {"decision": "reject", "comment": "too much"}}
    )
    assert rejected.json()["state"] == "killed"
    assert rejected.json()["error"] == "rejected: too much"


# --- who may see and answer ----------------------------------------------------------------


def test_an_approver_sees_and_answers_the_flow_but_cannot_override_it(user, approver):
    flow = assigned(user, timeout=3600)
    other = api.start_flow(api.create_routine("private", ["t_wait"], owner=user), user)
    carol = bearer(approver)
    url = f"/api/flows/{flow.pk}"
    detail = carol.get(url)
    assert detail.status_code == 200, detail.content
    assert detail.json()["actions"] == ["input"]
    assert detail.json()["owner"] == "alice"
    assert carol.get(f"{url}/events").status_code == 200
    for action, body in OVERRIDES:
        refused = post(carol, f"{url}/{action}", body)
        missing = post(carol, f"/api/flows/{MISSING}/{action}", body)
        assert refused.status_code == 404, (action, refused.content)
        assert refused.content == missing.content, action
    for foreign in (f"/api/flows/{other.pk}", f"/api/flows/{other.pk}/events"):
        assert carol.get(foreign).status_code == 404
    assert post(carol, f"/api/flows/{other.pk}/input", {"data": {"answer": 1}}).status_code == 404
    assert carol.get("/api/flows").json()["count"] == 0  # the listing: still only your own
    assert Flow.objects.get(pk=flow.pk).state == "waiting"

    body = {"data": {"decision": "approve", "amount": 10}, "version": detail.json()["version"]}
    approved = post(carol, f"{url}/input", body)
    assert approved.status_code == 200, approved.content
    assert approved.json()["state"] == "complete"
    pushed = FlowEvent.objects.get(flow=flow, kind="input.pushed")
    assert pushed.actor == approver and pushed.data["decision"] == "approve"
    assert carol.get(url).status_code == 404  # no longer waiting for carol
    assert bearer(user).get(url).json()["results"][0]["amount"] == "10"


def test_the_owner_of_an_assigned_step_may_not_answer_it(c, user, approver):
    flow = assigned(user)
    response = post(c, f"/api/flows/{flow.pk}/input", {"data": {"decision": "approve"}})
    assert response.status_code == 403
    assert response.json() == {"detail": NOT_YOURS_TO_ANSWER}
    assert "assigned" in response.json()["detail"]
    assert Flow.objects.get(pk=flow.pk).state == "waiting"
    assert "input.pushed" not in events_of(flow)


def test_a_stranger_gets_404_everywhere(user, approver, make_user):
    flow = assigned(user, timeout=3600)
    dave = bearer(make_user("dave"))
    url = f"/api/flows/{flow.pk}"
    calls = [("get", "", None), ("get", "/events", None)]
    calls += [("post", "/input", {"data": {"decision": "approve"}})]
    calls += [("post", f"/{action}", body) for action, body in OVERRIDES]
    for method, tail, body in calls:
        if method == "get":
            foreign, missing = dave.get(url + tail), dave.get(f"/api/flows/{MISSING}{tail}")
        else:
            foreign = post(dave, url + tail, body)
            missing = post(dave, f"/api/flows/{MISSING}{tail}", body)
        assert foreign.status_code == 404, (tail, foreign.content)
        assert foreign.content == missing.content
    assert dave.get("/api/waiting").json()["count"] == 0
    assert Flow.objects.get(pk=flow.pk).state == "waiting"


def test_results_are_hidden_from_assignees_when_the_step_says_so(user, approver):
    routine = api.create_routine(
        "hidden",
        ["t_echo", {"script": "t_approve_hidden", "params": {"assign_to": "approvers"}}],
        owner=user,
    )
    flow = api.start_flow(routine, user)
    carol = bearer(approver)
    seen = carol.get(f"/api/flows/{flow.pk}").json()
    assert (seen["results"], seen["results_hidden"]) == (None, True)
    assert seen["input_schema"]["title"] == "Approval"
    for event in seen["events"] + carol.get(f"/api/flows/{flow.pk}/events").json()["events"]:
        assert "result" not in (event["data"] or {}), event
    owners = bearer(user).get(f"/api/flows/{flow.pk}").json()
    assert owners["results_hidden"] is False and owners["results"][0]["position"] == 0
    assert any("result" in e["data"] for e in owners["events"] if e["kind"] == "step.completed")
    # t_approve does not hide them.
    shown = assigned(user, name="shown")
    assert carol.get(f"/api/flows/{shown.pk}").json()["results_hidden"] is False


# --- waiting for me, notifications ---------------------------------------------------------


def test_waiting_lists_my_flows_soonest_deadline_first(user, approver, routine):
    later = assigned(user, name="later", timeout=7200)
    never = assigned(user, name="never")
    soon = assigned(user, name="soon", timeout=60)
    own = api.start_flow(routine("t_wait"), user)  # the owner's, nobody assigned
    carol = bearer(approver)
    page = carol.get("/api/waiting").json()
    assert page["count"] == 3
    assert [item["id"] for item in page["items"]] == [soon.pk, later.pk, never.pk]
    first = page["items"][0]
    assert first["deadline"] and first["input_schema"]["title"] == "Approval"
    assert first["assignees"] == {"users": [], "groups": ["approvers"]}
    assert (first["version"], first["routine_name"]) == (soon.version, "soon")
    assert page["items"][2]["deadline"] is None
    second = carol.get("/api/waiting?limit=1&offset=1").json()
    assert (second["count"], [i["id"] for i in second["items"]]) == (3, [later.pk])
    assert [item["id"] for item in bearer(user).get("/api/waiting").json()["items"]] == [own.pk]
    assert carol.get("/api/waiting?limit=0").status_code == 400


def test_notifications_newest_first_with_the_unread_count(user, approver):
    first = assigned(user, name="first")
    second = assigned(user, name="second")
    carol = bearer(approver)
    page = carol.get("/api/notifications").json()
    assert (page["count"], page["unread"]) == (2, 2)
    assert [item["flow"] for item in page["items"]] == [second.pk, first.pk]
    item = page["items"][0]
    assert (item["kind"], item["cleared"], item["wait_number"]) == ("waiting", None, 1)
    assert "second" in item["message"]
    post(carol, f"/api/flows/{first.pk}/input", {"data": {"decision": "approve"}})
    after = carol.get("/api/notifications").json()
    assert (after["count"], after["unread"]) == (2, 1)
    assert after["items"][1]["cleared"] is not None
    assert bearer(user).get("/api/notifications").json()["count"] == 0
    assert Notification.objects.filter(user=approver).count() == 2


# --- the schema ----------------------------------------------------------------------------


def test_openapi_documents_the_human_steps(c):
    schema = c.get("/api/openapi.json").json()
    parts = schema["components"]["schemas"]
    detail = parts["FlowDetail"]["properties"]
    for name in ("input_schema", "deadline", "assignees", "results_hidden", "actions"):
        assert name in detail, name
    assert "JSON Schema" in detail["input_schema"]["description"]
    assert "deadline" in parts["FlowOut"]["properties"]
    assert "input_schema" in parts["ScriptOut"]["properties"]
    assert {"input_schema", "assignees"} <= set(parts["WaitingOut"]["properties"])
    assert "unread" in parts["NotificationPage"]["properties"]
    assert schema["paths"]["/api/waiting"]["get"]["summary"] == "Flows waiting for me"
    assert "/api/notifications" in schema["paths"]
    assert "403" in schema["paths"]["/api/flows/{flow_id}/input"]["post"]["description"]
