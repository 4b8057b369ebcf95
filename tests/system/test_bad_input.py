"""Bad input is a 4xx with a message the user can act on, never a 500, and leaves nothing
half-written — the same on SQLite and PostgreSQL (which refuses NUL characters and lone
surrogates that SQLite stores): NUL and surrogates in JSON and text, JSON nested 1,000
levels deep, integers out of any column's range, in the REST API and in every studio form."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from engine import api
from engine.flows.status import FlowState
from engine.ltm.models import LtmRun
from engine.models import Flow, FlowEvent, Routine
from studio.models import ApiToken
from tests.conftest import bearer
from tests.engine.test_jsonsafe import DEEP, HUGE, nested

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.bothmodes,
    pytest.mark.usefixtures("fresh_rate_counts"),
]
HTMX = {"HTTP_HX_REQUEST": "true"}
NUL_JSON = '{"answer": "a\\u0000b"}'  # JSON text: the NUL exists once parsed
SURROGATE_JSON = '{"answer": "a\\ud800b"}'


@pytest.fixture
def browser(client, user):
    client.force_login(user)
    return client


def post_json(client: Client, url: str, body: str):
    return client.post(url, body, content_type="application/json")


def _waiting_flow(user):
    routine = api.create_routine("Ask", ["t_wait", "t_echo"], owner=user)
    flow = api.start_flow(routine, user)
    assert flow.state == FlowState.WAITING
    return flow


def _unchanged(flow: Flow) -> None:
    """The flow is still as the test left it: waiting at its step with no input recorded."""
    fresh = Flow.objects.get(pk=flow.pk)
    assert (fresh.state, fresh.version, fresh.seq) == (flow.state, flow.version, flow.seq)
    assert not FlowEvent.objects.filter(flow=flow, kind="input.pushed").exists()


# --- REST API: NUL and surrogates anywhere are a 400 naming the field ----------------------


@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"])
def test_rest_start_flow_refuses_nul_and_surrogates_and_creates_nothing(user, routine, bad):
    routine_id = routine("t_echo").pk
    for data in ({"name": bad}, {bad: 1}, {"deep": {"list": [bad]}}):
        response = post_json(
            bearer(user), "/api/flows", json.dumps({"routine": routine_id, "data": data})
        )
        assert response.status_code == 400, response.content
        assert response.json()["errors"][0]["loc"][-1] == "data"
    assert not Flow.objects.exists()


def test_rest_refuses_lone_surrogates_in_text_fields(user, routine):
    c = bearer(user)
    flow = _waiting_flow(user)
    kill = post_json(c, f"/api/flows/{flow.pk}/kill", '{"reason": "a\\ud800"}')
    assert kill.status_code == 400
    assert kill.json()["errors"][0]["loc"][-1] == "reason"
    _unchanged(flow)
    body = '{"name": "R\\udc00", "steps": [{"script": "t_echo"}]}'
    assert post_json(c, "/api/routines", body).status_code == 400
    label = '{"name": "R", "steps": [{"script": "t_echo", "label": "\\ud800"}]}'
    assert post_json(c, "/api/routines", label).status_code == 400
    assert Routine.objects.filter(name__startswith="R").count() == 0


def test_rest_push_input_refuses_nul_and_surrogates_and_leaves_the_flow_waiting(user):
    flow = _waiting_flow(user)
    c = bearer(user)
    for data in (NUL_JSON, SURROGATE_JSON, '"\\u0000"', '{"\\ud800": 1}'):
        response = post_json(c, f"/api/flows/{flow.pk}/input", f'{{"data": {data}}}')
        assert response.status_code == 400, response.content
        assert response.json()["errors"][0]["loc"][-1] == "data"
    _unchanged(flow)


def test_rest_ltm_start_and_transition_refuse_nul_and_surrogates(user):
    c = bearer(user)
    for payload in ('{"order": "\\u0000"}', '{"order": "\\ud800"}', '{"\\u0000": 1}'):
        body = f'{{"ltm": "my_ltm", "payload": {payload}}}'
        assert post_json(c, "/api/ltm-runs", body).status_code == 400
    assert not LtmRun.objects.exists()
    run_id = api.start_ltm("park_ltm", user)
    for body in (
        '{"label": "release\\u0000"}',
        '{"label": "release", "payload": {"a": "\\ud800"}}',
    ):
        assert post_json(c, f"/api/ltm-runs/{run_id}/transitions", body).status_code == 400
    run = LtmRun.objects.get(pk=run_id)
    assert not run.events.filter(kind__startswith="manual.").exists()


def test_rest_token_name_refuses_surrogates(client, user):
    client.force_login(user)
    response = client.post(
        "/api/tokens", '{"name": "laptop\\ud800"}', content_type="application/json"
    )
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_rest_json_too_deep_or_not_finite_is_a_400_with_a_message(user, routine):
    routine_id = routine("t_echo").pk
    c = bearer(user)
    # 100 levels: Python parses it; the engine refuses it with a message.
    deep = post_json(c, "/api/flows", f'{{"routine": {routine_id}, "data": {nested(100)}}}')
    assert deep.status_code == 400
    assert "nested more than 64 levels" in json.dumps(deep.json())
    # 1,000 levels: the parser itself would run out of stack.
    deeper = post_json(c, "/api/flows", f'{{"routine": {routine_id}, "data": {{"a": {DEEP}}}}}')
    assert deeper.status_code == 400
    nan = post_json(c, "/api/flows", f'{{"routine": {routine_id}, "data": {{"a": NaN}}}}')
    assert nan.status_code == 400 and "finite" in json.dumps(nan.json())
    assert not Flow.objects.exists()


# --- HTML: start a flow -------------------------------------------------------------------


START_DATA_ERRORS = [
    (NUL_JSON, "answer: text must not contain NUL characters"),
    (SURROGATE_JSON, "answer: text must not contain lone surrogates"),
    ('{"\\u0000": 1}', "a key must not contain NUL characters"),
    (DEEP, "JSON must not be nested more than 64 levels"),
    (nested(1000), "JSON must not be nested more than 64 levels"),
    (nested(65), "JSON must not be nested more than 64 levels"),
    ('{"a": NaN}', "NaN is not a JSON value"),
    ('{"a": ' + "9" * 5000 + "}", "a number has too many digits"),
]


def test_start_flow_form_shows_the_error_on_the_field_and_starts_nothing(browser, routine):
    url = reverse("studio:routine_start", args=[routine("t_echo").pk])
    for initial_data, message in START_DATA_ERRORS:
        for headers in ({}, HTMX):
            response = browser.post(url, {"initial_data": initial_data}, **headers)
            assert response.status_code == 400, initial_data[:40]
            assert 'id="data-errors"' in response.content.decode()
            assert message in response.content.decode()
    assert not Flow.objects.exists()


def test_start_flow_form_accepts_64_levels(browser, routine):
    r = routine("t_echo")
    response = browser.post(
        reverse("studio:routine_start", args=[r.pk]), {"initial_data": nested(63)}
    )
    assert response.status_code == 302
    assert Flow.objects.count() == 1


# --- HTML: the routine builder --------------------------------------------------------------


def _builder(client, url, label="Greet", params="{}", **extra):
    data = {"name": "Built", "description": "", "op": "save", "step_key": ["k0"]}
    data.update(step_script=["t_echo"], step_label=[label], step_params=[params], **extra)
    return client.post(url, data, **HTMX)


BUILDER_ERRORS = [
    ("a\x00b", "{}", "the step name must not contain NUL characters"),
    ("ok", NUL_JSON, "answer: text must not contain NUL characters"),
    ("ok", SURROGATE_JSON, "answer: text must not contain lone surrogates"),
    ("ok", DEEP, "JSON must not be nested more than 64 levels"),
    ("ok", '{"a": ' + DEEP + "}", "JSON must not be nested more than 64 levels"),
]


def test_builder_refuses_bad_labels_and_params_beside_the_step(browser, user):
    existing = api.create_routine("Kept", ["t_echo"], owner=user)
    edit_url = reverse("studio:routine_edit", args=[existing.pk])
    for label, params, message in BUILDER_ERRORS:
        new = _builder(browser, reverse("studio:routine_new"), label, params)
        assert new.status_code == 400
        html = new.content.decode()
        assert 'id="errors-k0"' in html and message in html
        edit = _builder(browser, edit_url, label, params, routine_version=str(existing.version))
        assert edit.status_code == 400 and message in edit.content.decode()
    assert list(Routine.objects.values_list("name", "version")) == [("Kept", 1)]


def test_builder_refuses_a_routine_version_that_is_not_a_number(browser, user):
    existing = api.create_routine("Kept", ["t_echo"], owner=user)
    url = reverse("studio:routine_edit", args=[existing.pk])
    for version in ("²", HUGE + "0" * 30, "-1"):
        response = _builder(browser, url, routine_version=version)
        assert response.status_code == 400
        assert "routine version is not valid" in response.content.decode()
    existing.refresh_from_db()
    assert (existing.name, existing.version) == ("Kept", 1)


# --- HTML: the input form of a waiting flow ---------------------------------------------------


INPUT_ERRORS = [
    ('"a\\u0000b"', "answer: text must not contain NUL characters"),
    ('["\\ud800"]', "answer[0]: text must not contain lone surrogates"),
    (DEEP, "answer: JSON must not be nested more than 64 levels"),
    (nested(1000), "answer: JSON must not be nested more than 64 levels"),
    ("1" * 5000, "answer: a number has too many digits"),
    ("a\x00b", "Null characters are not allowed"),
]


def test_input_form_refuses_unstorable_values_and_the_flow_keeps_waiting(browser, user):
    flow = _waiting_flow(user)
    url = reverse("studio:flow_input", args=[flow.pk])
    for answer, message in INPUT_ERRORS:
        for headers in ({}, HTMX):
            response = browser.post(url, {"answer": answer, "version": flow.version}, **headers)
            assert response.status_code == 400
            assert message in response.content.decode()
    _unchanged(flow)


def test_input_form_reads_nan_as_text(browser, user):
    flow = _waiting_flow(user)
    url = reverse("studio:flow_input", args=[flow.pk])
    assert browser.post(url, {"answer": "NaN", "version": flow.version}).status_code == 302
    assert Flow.objects.get(pk=flow.pk).stored_results[0] == {"got": {"answer": "NaN"}}


def test_json_input_form_refuses_deep_and_nul_json(browser, user):
    routine = api.create_routine("Poll", ["t_checked"], owner=user)
    flow = api.start_flow(routine, user)
    assert flow.state == FlowState.WAITING
    url = reverse("studio:flow_input", args=[flow.pk])
    for value in (DEEP, '{"a": "\\u0000"}', '"\\udfff"'):
        response = browser.post(url, {"input": value, "version": flow.version})
        assert response.status_code == 400
        assert "must not" in response.content.decode()
    _unchanged(flow)


def test_input_form_refuses_a_version_that_is_not_a_number(browser, user):
    flow = _waiting_flow(user)
    url = reverse("studio:flow_input", args=[flow.pk])
    for version in ("²", HUGE, "1" * 5000, ""):
        for headers in ({}, HTMX):
            response = browser.post(url, {"answer": "yes", "version": version}, **headers)
            assert response.status_code == 400
            assert "reload the page" in response.content.decode()
    _unchanged(flow)


def test_override_with_a_version_out_of_range_is_a_400(browser, user):
    flow = _waiting_flow(user)
    url = reverse("studio:flow_act", args=[flow.pk, "kill"])
    for version in (HUGE, "1" * 5000, "²"):
        response = browser.post(url, {"version": version, "reason": "stop"})
        assert response.status_code == 400
    _unchanged(flow)


# --- HTML: API tokens -----------------------------------------------------------------------


def test_token_name_with_nul_or_too_long_is_a_400(browser):
    for name in ("laptop\x00", "x" * 101):
        response = browser.post("/tokens/", {"name": name})
        assert response.status_code == 400
        assert 'role="alert"' in response.content.decode()
    assert browser.post("/tokens/", {"name": "  "}).status_code == 400
    assert not ApiToken.objects.exists()
    assert browser.post("/tokens/", {"name": "laptop"}).status_code == 200
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["laptop"]


# --- HTML: LTMs -----------------------------------------------------------------------------


def test_ltm_start_form_refuses_unstorable_payloads_and_starts_nothing(browser):
    url = reverse("studio:ltm_start", args=["my_ltm"])
    for payload in ('{"order": "\\u0000"}', '{"order": "\\ud800"}', DEEP, nested(1000)):
        response = browser.post(url, {"payload": payload})
        assert response.status_code == 400
        assert "Payload: " in response.content.decode()
    assert not LtmRun.objects.exists()


def test_ltm_start_payload_may_hold_any_key(browser):
    response = browser.post(
        reverse("studio:ltm_start", args=["my_ltm"]), {"payload": '{"self": 1}'}
    )
    assert response.status_code == 302
    assert LtmRun.objects.count() == 1


def test_ltm_actions_refuse_bad_reasons_labels_and_payloads(browser, user):
    run_id = api.start_ltm("park_ltm", user)
    kill = reverse("studio:ltm_run_act", args=[run_id, "kill"])
    fire = reverse("studio:ltm_run_act", args=[run_id, "fire"])
    assert browser.post(kill, {"reason": "a\x00b"}).status_code == 400
    assert browser.post(kill, {"reason": "a\x00b"}, **HTMX).status_code == 400
    for data in (
        {"label": "release\x00"},
        {"label": "release", "payload": '{"a": "\\u0000"}'},
        {"label": "release", "payload": DEEP},
    ):
        assert browser.post(fire, data).status_code == 400
    run = LtmRun.objects.get(pk=run_id)
    assert run.state != "killed" and not run.error
    assert not run.events.filter(kind__startswith="manual.").exists()


# --- HTML: dashboard filters and search -------------------------------------------------------


MATCH_NOTHING = [
    {"routine": HUGE},
    {"routine": "1" * 5000},
    {"routine": "0"},
    {"owner": HUGE},
    {"q": "#" + HUGE},
    {"q": "#" + "1" * 5000},
    {"q": "#²"},
    {"q": "Ask\x00"},
]


def shown(response) -> list:
    """The flows a list page shows (the dashboard's keyset page, or a numbered page)."""
    page = response.context["page"]
    return list(page.flows if hasattr(page, "flows") else page.object_list)


def test_dashboard_filters_out_of_range_or_unstorable_match_nothing(client, make_user):
    staff = make_user("root", is_staff=True)  # staff may filter by owner
    _waiting_flow(staff)
    client.force_login(staff)
    for page in ("/", "/waiting/"):
        for query in MATCH_NOTHING:
            response = client.get(page, query)
            assert response.status_code == 200
            assert len(shown(response)) == 0, (page, query)
            if page == "/":
                assert "No flow matches these filters" in response.content.decode()
        # An impossible page number or cursor shows a page, never an error.
        for bad in ({"page": HUGE}, {"older": HUGE}, {"newer": "x-" + HUGE}, {"older": "\x00"}):
            response = client.get(page, bad)
            assert response.status_code == 200, (page, bad)
            assert len(shown(response)) <= 1, (page, bad)
        assert len(shown(client.get(page, {"page": HUGE}))) == 1


def test_dashboard_ignores_a_filter_that_is_not_a_number(browser, user):
    _waiting_flow(user)
    for routine in ("²", "١", "abc", "-1", " 1"):
        response = browser.get("/", {"routine": routine})
        assert response.status_code == 200
        assert len(shown(response)) == 1


def test_dashboard_search_by_id_still_works(browser, user):
    flow = _waiting_flow(user)
    response = browser.get("/", {"q": f"#{flow.pk}"})
    assert [f.pk for f in shown(response)] == [flow.pk]
