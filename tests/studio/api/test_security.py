"""Who may do what through the REST API: a second user learns nothing of the first user's
objects (404, word for word the answer for a missing one), anonymous callers get 401 on
every operation of the schema, session calls need CSRF, routines only name registered
scripts, and nothing a user can write is ever unpickled."""

from __future__ import annotations

import os
import pickle
import re

import pytest
from django.contrib.auth.models import Permission
from django.middleware.csrf import CSRF_ALLOWED_CHARS, CSRF_SECRET_LENGTH
from django.test import Client
from django.utils.crypto import get_random_string

from engine import api
from engine.flows import codec
from engine.models import Flow, FlowEvent, FlowResult, Routine
from studio.models import ApiToken
from tests.conftest import ROOT, bearer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]

MISSING = 987654


def call(client: Client, method: str, url: str, body=None):
    return getattr(client, method)(url, body or {}, content_type="application/json")


def object_calls(flow_id: int, routine_id: int) -> list[tuple[str, str, dict]]:
    """Every endpoint that names a flow or a routine, with a body that would be valid."""
    flow = f"/api/flows/{flow_id}"
    routine_body = {"name": "taken", "steps": [{"script": "t_echo"}]}
    return [
        ("get", flow, {}),
        ("get", f"{flow}/events", {}),
        ("post", f"{flow}/input", {"data": {"answer": "from bob"}}),
        ("post", f"{flow}/move", {"position": 0}),
        ("post", f"{flow}/retry", {}),
        ("post", f"{flow}/skip", {}),
        ("post", f"{flow}/kill", {"reason": "bob"}),
        ("post", f"{flow}/resume", {}),
        ("get", f"/api/routines/{routine_id}", {}),
        ("put", f"/api/routines/{routine_id}", routine_body),
        ("post", "/api/flows", {"routine": routine_id}),
    ]


def test_a_second_user_gets_404_identical_to_missing_and_changes_nothing(user, other_user, routine):
    flow = api.start_flow(routine("t_wait", name="alice's secret routine"), user)
    before = (flow.version, FlowEvent.objects.filter(flow=flow).count(), Routine.objects.count())
    bob = bearer(other_user)
    for (method, url, body), (_, missing_url, _) in zip(
        object_calls(flow.pk, flow.routine_id),
        object_calls(MISSING, MISSING),
        strict=True,
    ):
        foreign = call(bob, method, url, body)
        missing = call(bob, method, missing_url, body)
        assert foreign.status_code == 404, (method, url, foreign.content)
        assert foreign.content == missing.content, (method, url)
        assert b"secret" not in foreign.content and b"alice" not in foreign.content
    flow.refresh_from_db()
    assert flow.state == "waiting"
    after = (flow.version, FlowEvent.objects.filter(flow=flow).count(), Routine.objects.count())
    assert after == before
    assert Flow.objects.filter(owner=other_user).count() == 0


def test_listings_show_nothing_of_others(user, other_user, routine):
    flow = api.start_flow(routine("t_wait", name="hidden"), user)
    bob = bearer(other_user)
    for query in ["", "?owner=alice", "?search=hidden", f"?routine={flow.routine_id}"]:
        page = bob.get(f"/api/flows{query}").json()
        assert (page["count"], page["items"]) == (0, []), query
    assert bob.get("/api/routines").json()["count"] == 0
    assert bob.get("/api/tokens").status_code == 401  # tokens are session-only anyway


def test_a_foreign_token_cannot_be_revoked(user, other_user):
    token, _ = ApiToken.issue(user, "alice's")
    browser = Client()
    browser.force_login(other_user)
    assert browser.delete(f"/api/tokens/{token.pk}").status_code == 404
    token.refresh_from_db()
    assert token.revoked is False


@pytest.mark.parametrize("privilege", ["staff", "operate_flow"])
def test_staff_and_operators_see_and_act_on_every_flow(user, make_user, routine, privilege):
    flow = api.start_flow(routine("t_wait"), user)
    boss = make_user("boss", is_staff=privilege == "staff")
    if privilege == "operate_flow":
        boss.user_permissions.add(Permission.objects.get(codename="operate_flow"))
    client = bearer(boss)
    assert client.get("/api/flows?owner=alice").json()["count"] == 1
    assert client.get(f"/api/flows/{flow.pk}").status_code == 200
    assert call(client, "post", f"/api/flows/{flow.pk}/kill").json()["state"] == "killed"


def test_anonymous_gets_401_on_every_operation(user):
    schema = bearer(user).get("/api/openapi.json").json()
    anonymous = Client()
    checked = 0
    for path, operations in schema["paths"].items():
        url = re.sub(r"\{[^}]+\}", "1", path)
        for method in operations:
            response = call(anonymous, method, url, {})
            assert response.status_code == 401, (method, path, response.content)
            checked += 1
    assert checked >= 15


def test_session_calls_need_csrf_on_unsafe_methods(user, routine):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    body = {"name": "R", "steps": [{"script": "t_echo"}]}
    assert browser.get("/api/flows").status_code == 200  # safe methods need none
    refused = call(browser, "post", "/api/routines", body)
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert not Routine.objects.exists()
    # What the studio's pages do: the CSRF cookie, echoed in the X-CSRFToken header.
    csrf = get_random_string(CSRF_SECRET_LENGTH, allowed_chars=CSRF_ALLOWED_CHARS)
    browser.cookies["csrftoken"] = csrf
    forged = browser.post(
        "/api/routines", body, content_type="application/json", headers={"X-CSRFToken": "x" * 32}
    )
    assert forged.status_code == 403
    accepted = browser.post(
        "/api/routines", body, content_type="application/json", headers={"X-CSRFToken": csrf}
    )
    assert accepted.status_code == 201, accepted.content


def test_token_calls_need_no_csrf(user):
    client = Client(
        enforce_csrf_checks=True,
        headers={"Authorization": f"Bearer {ApiToken.issue(user, 't')[1]}"},
    )
    body = {"name": "R", "steps": [{"script": "t_echo"}]}
    assert call(client, "post", "/api/routines", body).status_code == 201


@pytest.mark.parametrize(
    "script",
    [
        "os.system",
        "subprocess.run",
        "tests.catalog.Echo",
        "engine.core.flows.script.Task",
        "__import__('os').system('touch pwned')",
        "T_ECHO",
        "",
    ],
)
def test_routines_only_name_registered_scripts(user, monkeypatch, tmp_path, script):
    ran: list[object] = []
    monkeypatch.setattr(os, "system", lambda *args: ran.append(args) or 0)
    monkeypatch.chdir(tmp_path)
    client = bearer(user)
    body = {"name": "evil", "steps": [{"script": "t_echo"}, {"script": script}]}
    created = call(client, "post", "/api/routines", body)
    assert created.status_code == 400, created.content
    assert created.json()["errors"][0]["loc"][:4] == ["body", "payload", "steps", 1]
    good = api.create_routine("good", ["t_echo"], owner=user)
    updated = call(client, "put", f"/api/routines/{good.pk}", body)
    assert updated.status_code == 400
    assert list(Routine.objects.values_list("name", flat=True)) == ["good"]
    good.refresh_from_db()
    assert good.version == 1 and [step["script"] for step in good.snapshot()] == ["t_echo"]
    assert ran == [] and not (tmp_path / "pwned").exists()


def test_user_written_values_are_never_unpickled(user, routine, monkeypatch, settings):
    # The rate limit keeps counts in Django's cache, which pickles its own values: switched
    # off here so that every pickle.loads of the call would be a real finding.
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "API_RATE": "off"}
    calls: list[bytes] = []
    real_loads = pickle.loads
    monkeypatch.setattr(pickle, "loads", lambda data, **kw: calls.append(data) or real_loads(data))
    flow = api.start_flow(routine("t_wait"), user)
    forged = {codec.PICKLE_KEY: "gASVAAAAAAAAAAB9lC4=:forged", "repr": "<forged>"}
    client = bearer(user)
    pushed = call(client, "post", f"/api/flows/{flow.pk}/input", {"data": forged})
    assert pushed.status_code == 200
    # A stored result shaped like a pickled value (as a step could store user input) is
    # shown by its repr, never decoded.
    FlowResult.objects.update_or_create(flow=flow, position=0, defaults={"value": forged})
    detail = client.get(f"/api/flows/{flow.pk}").json()
    assert detail["results"] == ["<forged>"]
    assert client.get(f"/api/flows/{flow.pk}/events").status_code == 200
    assert calls == []


def test_the_api_code_never_unpickles():
    source = "\n".join(path.read_text() for path in (ROOT / "studio" / "api").glob("*.py"))
    for needle in ("import pickle", "pickle.load", "codec.decode", "codec import decode"):
        assert needle not in source
    assert ".results" not in source.replace("results_for_display", "")
