"""The LTM time machine over the REST API: a run as it was after any event
(`GET /api/ltm-runs/{id}/at/{seq}`), rolled back to it (`POST .../rollback`) or copied from it
(`POST .../copy`); its errors, its access rule and its OpenAPI description."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import Client

from engine import api
from engine.models import LtmEvent, LtmExecution, LtmRun
from tests.conftest import bearer
from tests.engine.ltm.support import django_runtime  # noqa: F401  (autouse fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]

# Integers in bodies are strict (a JSON integer, never a boolean, a string or a float) and
# bounded; in a path, digits only.
LOOSE_INTEGERS = [True, False, "1", "0", 1.0, 0.0, 2**63, -1]
LOOSE_PATH_NUMBERS = ["x", "true", "1.0", "-1", "+1", "%201", "1_0", "0x1", str(2**63)]


def post(client: Client, url: str, body: Any = None):
    return client.post(url, body if body is not None else {}, content_type="application/json")


def statuses(body: dict[str, Any]) -> dict[str, str]:
    return {item["fqn"]: item["status"] for item in body["instances"]}


def assert_refused(response, field: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert field in body["detail"], body
    assert [error["loc"][-1] for error in body["errors"]] == [field], body


@pytest.fixture
def pairs(user) -> tuple[str, int]:
    """A run of `flou_pairs` and its seq when it had started; `second_1` was made since."""
    run_id = api.start_ltm("flou_pairs", user)
    start = LtmRun.objects.get(pk=run_id).seq
    api.fire_transition(run_id, "next_{k}", user, params=[{"k": "1"}])
    assert LtmRun.objects.get(pk=run_id).seq > start
    return str(run_id), start


def test_get_at_a_seq_shows_the_run_as_it_was(user, pairs):
    run_id, start = pairs
    client = bearer(user)
    latest = LtmRun.objects.get(pk=run_id).seq

    then = client.get(f"/api/ltm-runs/{run_id}/at/{start}")

    assert then.status_code == 200, then.content
    body = then.json()
    assert (body["id"], body["ltm"], body["seq"]) == (run_id, "flou_pairs", start)
    assert start <= body["at"] < latest
    assert (body["history_from"], body["latest"]) == (1, latest)
    assert "flou_pairs.second_1" not in statuses(body)
    assert body["global_state"] == dict(api.ltm_at(run_id, start, user).state)
    root = next(item for item in body["instances"] if item["fqn"] == "flou_pairs")
    assert set(root) == {"fqn", "name", "status", "state", "params", "error", "entry"}
    assert root["name"] == "flou_pairs"
    now = client.get(f"/api/ltm-runs/{run_id}/at/{latest}").json()
    detail = client.get(f"/api/ltm-runs/{run_id}").json()
    assert "flou_pairs.second_1" in statuses(now)
    assert statuses(now) == statuses(detail)  # the latest event is the run as it is
    assert (now["seq"], now["at"], now["state"]) == (latest, latest, detail["state"])
    assert detail["history_from"] == 1


def test_a_seq_outside_the_history_is_400_naming_the_range(user, pairs):
    run_id, start = pairs
    client = bearer(user)
    run = LtmRun.objects.get(pk=run_id)
    span = f"1 to {run.seq}"

    for bad in (0, run.seq + 1):
        response = client.get(f"/api/ltm-runs/{run_id}/at/{bad}")
        assert response.status_code == 400 and span in response.json()["detail"], bad
        response = post(client, f"/api/ltm-runs/{run_id}/rollback", {"seq": bad, "reason": "r"})
        assert response.status_code == 400 and span in response.json()["detail"], bad
        response = post(client, f"/api/ltm-runs/{run_id}/copy", {"seq": bad})
        assert response.status_code == 400 and span in response.json()["detail"], bad
    for bad in LOOSE_PATH_NUMBERS:
        assert_refused(client.get(f"/api/ltm-runs/{run_id}/at/{bad}"), "seq")
    for bad in [*LOOSE_INTEGERS, str(start), float(start)]:
        body = {"seq": bad, "reason": "r"}
        assert_refused(post(client, f"/api/ltm-runs/{run_id}/rollback", body), "seq")
        assert_refused(post(client, f"/api/ltm-runs/{run_id}/copy", {"seq": bad}), "seq")
        body = {"seq": start, "reason": "r", "expected_seq": bad}
        assert_refused(post(client, f"/api/ltm-runs/{run_id}/rollback", body), "expected_seq")
    for bad in ["true", 1, 0, "yes"]:
        body = {"seq": start, "reason": "r", "discard_running": bad}
        assert_refused(post(client, f"/api/ltm-runs/{run_id}/rollback", body), "discard_running")
    after = LtmRun.objects.get(pk=run_id)
    assert (after.seq, after.version) == (run.seq, run.version)  # nothing happened
    assert LtmRun.objects.count() == 1  # and nothing was copied


def test_another_users_run_and_an_unknown_run_are_404(user, other_user, pairs):
    run_id, start = pairs
    before = LtmRun.objects.get(pk=run_id)
    bob = bearer(other_user)
    missing = str(uuid.uuid4())
    for method, suffix, body in [
        ("get", f"/at/{start}", None),
        ("get", "/at/0", None),  # 404 before the range is checked
        ("post", "/rollback", {"seq": start, "reason": "bob"}),
        ("post", "/rollback", {"seq": start, "reason": "  "}),
        ("post", "/copy", {}),
        ("post", "/copy", {"seq": 0}),
    ]:
        foreign = getattr(bob, method)(
            f"/api/ltm-runs/{run_id}{suffix}", body or {}, content_type="application/json"
        )
        absent = getattr(bob, method)(
            f"/api/ltm-runs/{missing}{suffix}", body or {}, content_type="application/json"
        )
        assert foreign.status_code == 404, (method, suffix, foreign.content)
        assert foreign.content == absent.content
    after = LtmRun.objects.get(pk=run_id)
    assert (after.seq, after.version) == (before.seq, before.version)
    assert LtmRun.objects.count() == 1
    assert not LtmEvent.objects.filter(actor=other_user).exists()
    assert Client().get(f"/api/ltm-runs/{run_id}/at/{start}").status_code == 401


def test_rollback_restores_the_statuses_and_records_who_and_why(user, pairs):
    run_id, start = pairs
    client = bearer(user)
    then = client.get(f"/api/ltm-runs/{run_id}/at/{start}").json()
    before = LtmRun.objects.get(pk=run_id).seq

    response = post(
        client, f"/api/ltm-runs/{run_id}/rollback", {"seq": start, "reason": "second thoughts"}
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == run_id and body["seq"] > before
    assert statuses(body) == statuses(then)
    assert "flou_pairs.second_1" not in statuses(body)
    rollback = [event for event in body["events"] if event["kind"] == "rollback"]
    assert len(rollback) == 1
    assert rollback[0]["actor"] == "alice"
    assert rollback[0]["data"]["reason"] == "second thoughts"
    assert (rollback[0]["data"]["to"], rollback[0]["data"]["from"]) == (start, before)
    assert body == client.get(f"/api/ltm-runs/{run_id}").json()  # the run's detail
    # Nothing was erased: the run as it was before the rollback can still be looked at.
    past = client.get(f"/api/ltm-runs/{run_id}/at/{before}").json()
    assert "flou_pairs.second_1" in statuses(past)


def test_a_rollback_with_a_stale_expected_seq_is_409_and_changes_nothing(user, pairs):
    run_id, start = pairs
    client = bearer(user)
    run = LtmRun.objects.get(pk=run_id)

    body = {"seq": start, "reason": "late", "expected_seq": start}
    stale = post(client, f"/api/ltm-runs/{run_id}/rollback", body)

    assert stale.status_code == 409 and "moved on" in stale.json()["detail"]
    after = LtmRun.objects.get(pk=run_id)
    assert (after.seq, after.version) == (run.seq, run.version)
    body["expected_seq"] = run.seq
    assert post(client, f"/api/ltm-runs/{run_id}/rollback", body).status_code == 200


def test_a_running_execution_must_be_confirmed_discarded(user, pairs):
    run_id, start = pairs
    client = bearer(user)
    # As if a worker were executing second_1 now.
    LtmExecution.objects.filter(run_id=run_id, fqn="flou_pairs.second_1").update(
        status="claimed", closed_seq=None
    )
    version = LtmRun.objects.get(pk=run_id).version
    url = f"/api/ltm-runs/{run_id}/rollback"

    refused = post(client, url, {"seq": start, "reason": "undo"})

    assert refused.status_code == 409 and "second_1 is executing" in refused.json()["detail"]
    assert LtmRun.objects.get(pk=run_id).version == version
    done = post(client, url, {"seq": start, "reason": "undo", "discard_running": True})
    assert done.status_code == 200, done.content
    assert "flou_pairs.second_1" not in statuses(done.json())
    event = LtmEvent.objects.get(run_id=run_id, kind="rollback")
    assert event.data["discarded"] == ["flou_pairs.second_1"]


def test_a_rollback_of_a_killed_run_or_to_where_it_is_is_409(user, pairs):
    run_id, start = pairs
    client = bearer(user)
    url = f"/api/ltm-runs/{run_id}/rollback"
    latest = LtmRun.objects.get(pk=run_id).seq

    here = post(client, url, {"seq": latest, "reason": "no-op"})
    assert here.status_code == 409 and "nothing to roll back" in here.json()["detail"]
    api.kill_ltm(run_id, user, "stop")
    killed = LtmRun.objects.get(pk=run_id)

    response = post(client, url, {"seq": start, "reason": "revive"})

    assert response.status_code == 409 and "killed" in response.json()["detail"]
    after = LtmRun.objects.get(pk=run_id)
    assert (after.seq, after.version, after.state) == (killed.seq, killed.version, "killed")
    # A killed run can still be looked at, and copied.
    assert client.get(f"/api/ltm-runs/{run_id}/at/{start}").status_code == 200
    assert post(client, f"/api/ltm-runs/{run_id}/copy", {"seq": start}).status_code == 201


def test_a_rollback_needs_a_reason(user, pairs):
    run_id, start = pairs
    client = bearer(user)
    url = f"/api/ltm-runs/{run_id}/rollback"
    run = LtmRun.objects.get(pk=run_id)

    blank = post(client, url, {"seq": start, "reason": "   "})
    assert blank.status_code == 400 and "reason" in blank.json()["detail"]
    assert_refused(post(client, url, {"seq": start, "reason": ""}), "reason")
    assert_refused(post(client, url, {"seq": start}), "reason")
    assert_refused(post(client, url, {"seq": start, "reason": "r", "typo": 1}), "typo")
    after = LtmRun.objects.get(pk=run_id)
    assert (after.seq, after.version) == (run.seq, run.version)


def test_copy_makes_a_new_run_of_the_caller_and_leaves_the_source(user, make_user, pairs):
    run_id, start = pairs
    client = bearer(user)
    source_before = client.get(f"/api/ltm-runs/{run_id}").json()
    then = client.get(f"/api/ltm-runs/{run_id}/at/{start}").json()

    response = post(client, f"/api/ltm-runs/{run_id}/copy", {"seq": start})

    assert response.status_code == 201, response.content
    copy = response.json()
    assert copy["id"] != run_id and copy["ltm"] == "flou_pairs" and copy["owner"] == "alice"
    assert LtmRun.objects.get(pk=copy["id"]).owner == user
    assert statuses(copy) == statuses(then)
    assert copy == client.get(f"/api/ltm-runs/{copy['id']}").json()
    assert client.get(f"/api/ltm-runs/{run_id}").json() == source_before  # untouched
    # Without a body (or without seq): the run as it is now.
    latest = post(client, f"/api/ltm-runs/{run_id}/copy")
    assert latest.status_code == 201 and statuses(latest.json()) == statuses(source_before)
    # An operator's copy of someone else's run is the operator's.
    olga = make_user("olga", is_staff=True)
    theirs = post(bearer(olga), f"/api/ltm-runs/{run_id}/copy", {"seq": None})
    assert theirs.status_code == 201 and theirs.json()["owner"] == "olga"
    assert LtmRun.objects.get(pk=theirs.json()["id"]).owner == olga


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node` with a `$ref` (also one inside anyOf, beside null) followed."""
    for option in node.get("anyOf", []):
        if "$ref" in option:
            node = option
    if "$ref" in node:
        return schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def test_the_openapi_schema_describes_the_time_machine(c):
    schema = c.get("/api/openapi.json").json()
    paths = schema["paths"]

    at = paths["/api/ltm-runs/{run_id}/at/{seq}"]["get"]
    params = {param["name"]: param for param in at["parameters"]}
    assert params["seq"]["in"] == "path" and params["seq"]["schema"]["type"] == "integer"
    assert params["run_id"]["schema"]["format"] == "uuid"
    ok = _resolve(schema, at["responses"]["200"]["content"]["application/json"]["schema"])
    assert {"seq", "at", "state", "error", "global_state", "instances"} <= set(ok["properties"])
    assert {"history_from", "latest"} <= set(ok["properties"])
    assert at["summary"] and at["description"]

    rollback = paths["/api/ltm-runs/{run_id}/rollback"]["post"]
    body = rollback["requestBody"]["content"]["application/json"]["schema"]
    shape = _resolve(schema, body)
    assert set(shape["properties"]) == {"seq", "reason", "discard_running", "expected_seq"}
    assert set(shape["required"]) == {"seq", "reason"}
    assert rollback["requestBody"]["required"] is True
    assert "200" in rollback["responses"] and rollback["description"]

    copy = paths["/api/ltm-runs/{run_id}/copy"]["post"]
    shape = _resolve(schema, copy["requestBody"]["content"]["application/json"]["schema"])
    assert set(shape["properties"]) == {"seq"}
    assert "201" in copy["responses"] and copy["description"]
    detail = schema["components"]["schemas"]["LtmRunDetail"]
    assert "history_from" in detail["properties"]
