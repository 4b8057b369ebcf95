"""The REST API end to end through Django's test client: each endpoint, each error code,
tokens, and versions (of flows and routines)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from django.test import Client

from engine import api
from engine.models import FlowEvent, Routine
from studio.api.throttling import UserRateThrottle
from studio.models import ApiToken

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


@pytest.fixture
def token(user) -> str:
    return ApiToken.issue(user, "tests")[1]


@pytest.fixture
def client_for():
    def make(raw: str) -> Client:
        return Client(headers={"Authorization": f"Bearer {raw}"})

    return make


@pytest.fixture
def c(client_for, token) -> Client:
    return client_for(token)


def post(client: Client, url: str, body=None):
    return client.post(url, body if body is not None else {}, content_type="application/json")


def put(client: Client, url: str, body):
    return client.put(url, body, content_type="application/json")


# --- schema, scripts, LTMs ----------------------------------------------------------------------


def test_openapi_schema_and_docs_are_served(c):
    schema = c.get("/api/openapi.json").json()
    assert schema["info"]["title"] == "Flow Studio API"
    assert "/api/flows/{flow_id}/input" in schema["paths"]
    docs = c.get("/api/docs")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_scripts_lists_the_registry(c):
    scripts = {item["name"]: item for item in c.get("/api/scripts").json()}
    assert scripts["t_wait"]["input_fields"] == ["answer"]
    assert scripts["t_offloaded"]["blocking"] is False


def test_ltms_lists_registered_machines(c):
    from engine.core.ltm.registry import ltm_registry

    names = [item["name"] for item in c.get("/api/ltms").json()]
    assert names == sorted(ltm_registry())


# --- routines -----------------------------------------------------------------------------------


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
    }
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


# --- flows ------------------------------------------------------------------------------------


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
    with django_assert_max_num_queries(6):
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


def test_events_since_a_sequence_number(c, routine, user):
    flow = api.start_flow(routine("t_echo", "t_echo", "t_echo"), user)
    everything = c.get(f"/api/flows/{flow.pk}/events").json()
    assert [e["seq"] for e in everything["events"]] == list(range(1, flow.seq + 1))
    later = c.get(f"/api/flows/{flow.pk}/events?since=3&limit=2").json()
    assert [e["seq"] for e in later["events"]] == [4, 5]
    assert later["more"] is (flow.seq > 5) and later["seq"] == flow.seq
    assert c.get(f"/api/flows/{flow.pk}/events?since={flow.seq}").json()["events"] == []


# --- errors -----------------------------------------------------------------------------------


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


# Integers in bodies are strict: a JSON integer, never a boolean, a string or a float; and
# bounded, so that a number no database column holds is a 400 as well.
LOOSE_INTEGERS = [True, False, "1", "0", 1.0, 0.0, 2**63, -1]


def assert_refused(response, field: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert field in body["detail"], body
    assert [error["loc"][-1] for error in body["errors"]] == [field]


@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_start_flow_routine_must_be_a_strict_integer(c, routine):
    r = routine("t_echo")
    assert r.pk == 1  # so that true, "1" and 1.0 would name it if they were taken loosely
    for value in [*LOOSE_INTEGERS, str(r.pk), float(r.pk), 2**64]:
        assert_refused(post(c, "/api/flows", {"routine": value}), "routine")
    assert not r.flows.exists()
    assert post(c, "/api/flows", {"routine": r.pk}).status_code == 201


def test_move_position_must_be_a_strict_integer(c, routine, user):
    flow = api.start_flow(routine("t_echo", "t_wait", "t_wait"), user)
    flow.refresh_from_db()
    assert (flow.state, flow.position) == ("waiting", 1)
    version = flow.version
    for value in [*LOOSE_INTEGERS, "2", 2.0, 2**64]:
        response = post(c, f"/api/flows/{flow.pk}/move", {"position": value, "reason": "r"})
        assert_refused(response, "position")
    flow.refresh_from_db()
    assert (flow.position, flow.version) == (1, version)  # never moved
    moved = post(c, f"/api/flows/{flow.pk}/move", {"position": 2, "reason": "r"})
    assert (moved.status_code, moved.json()["position"]) == (200, 2)


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("input", {"data": {"answer": 1}}),
        ("move", {"position": 0}),
        ("retry", {}),
        ("skip", {}),
        ("kill", {}),
        ("resume", {}),
    ],
)
def test_flow_action_version_must_be_a_strict_integer(c, routine, user, action, body):
    flow = api.start_flow(routine("t_wait"), user)
    flow.refresh_from_db()
    version = flow.version
    # The flow's own version as a string or a float would match it if taken loosely.
    for value in [*LOOSE_INTEGERS, str(flow.version), float(flow.version), True]:
        response = post(c, f"/api/flows/{flow.pk}/{action}", {**body, "version": value})
        assert_refused(response, "version")
    flow.refresh_from_db()
    assert (flow.state, flow.version) == ("waiting", version)  # nothing happened


def test_routine_update_version_must_be_a_strict_integer(c, user):
    routine = api.create_routine("R", ["t_echo"], owner=user)
    body = {"name": "R2", "steps": [{"script": "t_wait"}]}
    for value in [*LOOSE_INTEGERS, "1", 1.0]:
        assert_refused(put(c, f"/api/routines/{routine.pk}", {**body, "version": value}), "version")
    routine.refresh_from_db()
    assert (routine.version, routine.name) == (1, "R")
    assert put(c, f"/api/routines/{routine.pk}", {**body, "version": 1}).status_code == 200


def test_an_invalid_field_is_named_in_the_detail(c, routine):
    response = post(c, "/api/flows", {"routine": "one", "data": []})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("Invalid input: ") and "routine: " in detail and "data: " in detail
    nested = post(c, "/api/routines", {"name": "R", "steps": [{"script": 5}]})
    assert "steps.0.script: " in nested.json()["detail"]
    assert "limit: " in c.get("/api/flows?limit=0").json()["detail"]


def test_401_without_or_with_a_bad_token(routine, user):
    assert Client().get("/api/flows").status_code == 401
    bad = Client(headers={"Authorization": "Bearer fs_not-a-token"}).get("/api/flows")
    assert bad.status_code == 401 and bad.json()["detail"].startswith("Authentication")


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


def test_429_beyond_the_configured_rate(c, settings):
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "API_RATE": "3/hour"}
    codes = [c.get("/api/scripts").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    limited = c.get("/api/scripts")
    assert int(limited["Retry-After"]) > 0


# --- tokens -----------------------------------------------------------------------------------


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


def test_a_token_of_an_inactive_user_is_refused(user, token, client_for):
    user.is_active = False
    user.save()
    assert client_for(token).get("/api/flows").status_code == 401


def test_actions_without_a_body(c, routine, user):
    flow = api.start_flow(routine("t_wait"), user)
    killed = c.generic("POST", f"/api/flows/{flow.pk}/kill")
    assert (killed.status_code, killed.json()["state"]) == (200, "killed")
    assert c.generic("POST", f"/api/flows/{flow.pk}/resume").json()["state"] == "waiting"


@pytest.mark.bothmodes
def test_rate_counts_are_shared_by_server_processes_when_scaled_out(user, settings):
    """Scaled out, several server processes answer one user: the counts live in Redis, so a
    request to another process is counted with the rest (a second process is refused)."""
    if not os.environ.get("REDIS_URL"):
        pytest.skip("embedded mode has one server process: its counts are in local memory")
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "API_RATE": "3/hour"}
    throttle, request = UserRateThrottle(), SimpleNamespace(auth=user)
    assert [throttle.allow_request(request) for _ in range(3)] == [True, True, True]
    other_process = (
        "import django; django.setup(); from types import SimpleNamespace as S; "
        "from studio.api.throttling import UserRateThrottle as T; "
        f"print(T().allow_request(S(auth=S(pk={user.pk}))))"
    )
    env = dict(os.environ, FLOWSTUDIO_API_RATE="3/hour")
    done = subprocess.run(
        [sys.executable, "-c", other_process], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip().splitlines()[-1:] == ["False"], done.stdout + done.stderr
