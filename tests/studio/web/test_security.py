"""Access to the studio: every page and action needs a signed-in user; a second user can
neither see nor act on the first user's flows, routines or LTM runs (404 for every URL);
staff see everything; the assignees of a waiting step see its page and answer it, and
nothing else (no overrides, nothing once the wait is over); unsafe requests need the CSRF
token."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from engine import api
from engine.flows.status import FlowState
from engine.models import Flow, Routine

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HTTP_HX_REQUEST": "true"}
ACTIONS = ["move", "retry", "skip", "kill", "resume"]


@pytest.fixture
def alices(user):
    """Alice's routine, a waiting flow of it and an LTM run."""
    routine = api.create_routine("Alice's", ["t_echo", "t_wait"], owner=user)
    flow = api.start_flow(routine, user)
    run_id = api.start_ltm("order_process", user, {"order": "secret-order"})
    return routine, Flow.objects.get(pk=flow.pk), run_id


def _urls(routine, flow, run_id):
    """(method, url, data) of every URL that names one of Alice's records."""
    gets = [
        reverse("studio:flow_detail", args=[flow.pk]),
        reverse("studio:flow_live", args=[flow.pk]),
        reverse("studio:routine_edit", args=[routine.pk]),
        reverse("studio:routine_start", args=[routine.pk]),
        reverse("studio:ltm_run", args=[run_id]),
    ] + [reverse("studio:flow_confirm", args=[flow.pk, a]) for a in ACTIONS]
    posts = [
        (reverse("studio:flow_input", args=[flow.pk]), {"answer": "1", "version": flow.version}),
        (reverse("studio:routine_edit", args=[routine.pk]), {"name": "x", "op": "save"}),
        (reverse("studio:routine_start", args=[routine.pk]), {"initial_data": "{}"}),
        (reverse("studio:ltm_run_act", args=[run_id, "fire"]), {"label": "confirm"}),
        (reverse("studio:ltm_run_act", args=[run_id, "retry"]), {}),
        (reverse("studio:ltm_run_act", args=[run_id, "kill"]), {"reason": "x"}),
    ] + [
        (
            reverse("studio:flow_act", args=[flow.pk, a]),
            {"version": flow.version, "reason": "x", "position": "0"},
        )
        for a in ACTIONS
    ]
    return [("get", url, {}) for url in gets] + [("post", url, data) for url, data in posts]


def test_anonymous_is_sent_to_sign_in_everywhere(client, alices):
    urls = _urls(*alices) + [
        ("get", reverse(name), {})
        for name in (
            "studio:dashboard",
            "studio:waiting",
            "studio:notifications",
            "studio:routine_list",
            "studio:ltm_list",
        )
    ]
    for method, url, data in urls:
        response = getattr(client, method)(url, data)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


@pytest.mark.parametrize("htmx", [False, True])
def test_second_user_gets_404_for_every_foreign_url(client, alices, other_user, htmx):
    routine, flow, run_id = alices
    client.force_login(other_user)
    events = flow.events.count()
    headers = HTMX if htmx else {}
    for method, url, data in _urls(routine, flow, run_id):
        response = getattr(client, method)(url, data, **headers)
        assert response.status_code == 404, (method, url, response.status_code)
    flow.refresh_from_db()
    assert flow.state == FlowState.WAITING and flow.events.count() == events
    routine.refresh_from_db()
    assert routine.version == 1 and Flow.objects.count() == 1


def test_second_user_sees_none_of_it_in_lists(client, alices, other_user):
    routine, flow, run_id = alices
    client.force_login(other_user)
    pages = [
        "studio:dashboard",
        "studio:waiting",
        "studio:notifications",
        "studio:routine_list",
        "studio:ltm_list",
    ]
    for name in pages:
        html = client.get(reverse(name)).content.decode()
        assert f"flow-{flow.pk}-row" not in html and "Alice&#x27;s" not in html, name
        assert str(run_id)[:8] not in html, name
    search = client.get(reverse("studio:dashboard"), {"q": str(flow.pk)}).content.decode()
    assert f"flow-{flow.pk}-row" not in search
    owner_filter = client.get(reverse("studio:dashboard"), {"owner": flow.owner_id})
    assert f"flow-{flow.pk}-row" not in owner_filter.content.decode()


def test_staff_see_and_act_on_everyones_flows(client, alices, make_user):
    routine, flow, run_id = alices
    client.force_login(make_user("root", is_staff=True))
    assert f"flow-{flow.pk}-row" in client.get(reverse("studio:dashboard")).content.decode()
    assert client.get(reverse("studio:ltm_run", args=[run_id])).status_code == 200
    url = reverse("studio:flow_act", args=[flow.pk, "kill"])
    response = client.post(url, {"version": flow.version, "reason": "ops"}, **HTMX)
    assert response.status_code == 200 and "by root" in response.content.decode()


def test_shared_routine_is_visible_but_only_staff_edit_it(client, other_user):
    shared = Routine.objects.create(name="Shared")
    client.force_login(other_user)
    assert client.get(reverse("studio:routine_start", args=[shared.pk])).status_code == 200
    assert client.get(reverse("studio:routine_edit", args=[shared.pk])).status_code == 403


def test_unsafe_requests_need_the_csrf_token(alices, user):
    routine, flow, run_id = alices
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    url = reverse("studio:flow_act", args=[flow.pk, "kill"])
    assert client.post(url, {"version": flow.version, "reason": "x"}).status_code == 403
    page = client.get(reverse("studio:flow_detail", args=[flow.pk]))
    token = page.cookies["csrftoken"].value
    response = client.post(
        url, {"version": flow.version, "reason": "x"}, HTTP_X_CSRFTOKEN=token, **HTMX
    )
    assert response.status_code == 200


def test_api_tokens_page_creates_shows_once_and_revokes(client, user, other_user):
    from studio.models import ApiToken

    client.force_login(user)
    page = client.post("/tokens/", {"name": "billing sync"})
    assert page.status_code == 200
    token = ApiToken.objects.get(user=user)
    raw = page.context["raw"]
    assert raw in page.content.decode() and ApiToken.authenticate(raw) == token
    assert raw not in client.get("/tokens/").content.decode()  # shown once only
    client.force_login(other_user)
    assert client.post(f"/tokens/{token.pk}/revoke/").status_code == 404  # not theirs
    client.force_login(user)
    assert client.post(f"/tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    assert token.revoked and ApiToken.authenticate(raw) is None


@pytest.fixture
def assigned(user, make_user):
    """Alice's flow waiting for a decision of the "approvers" group, whose member is bob."""
    from django.contrib.auth.models import Group

    bob = make_user("bob")
    bob.groups.add(Group.objects.create(name="approvers"))
    step = {"script": "t_approve", "params": {"assign_to": "approvers", "timeout": 600}}
    routine = api.create_routine("Approval", ["t_echo", step], owner=user)
    flow = api.start_flow(routine, user)
    flow.refresh_from_db()
    assert flow.state == FlowState.WAITING
    return flow, bob


@pytest.mark.parametrize("htmx", [False, True])
def test_assignment_is_checked_on_the_page_partials_input_and_overrides(
    client, user, make_user, assigned, htmx
):
    flow, bob = assigned
    headers = HTMX if htmx else {}
    page = reverse("studio:flow_detail", args=[flow.pk])
    live = reverse("studio:flow_live", args=[flow.pk])
    answer = reverse("studio:flow_input", args=[flow.pk])
    # a stranger (not in the group): the same 404 as for any foreign flow, everywhere
    client.force_login(make_user("carol"))
    for method, url, data in [
        ("get", page, {}),
        ("get", live, {"version": 0}),
        ("post", answer, {"version": flow.version, "decision": "approve", "comment": "x"}),
        ("post", answer, {"version": flow.version, "decision": "approve", "from": "waiting"}),
    ]:
        response = getattr(client, method)(url, data, **headers)
        assert response.status_code == 404, (method, url)
    # the assignee: the page and its live area, no overrides (404 like a foreign flow's)
    client.force_login(bob)
    assert client.get(page, **headers).status_code == 200
    assert client.get(live, {"version": 0}, **headers).status_code == 200
    for method, url, data in _urls(flow.routine, flow, api.start_ltm("park_ltm", user)):
        if "/act/" in url or "/confirm/" in url or "/routines/" in url or "/ltm-runs/" in url:
            response = getattr(client, method)(url, data, **headers)
            assert response.status_code == 404, (method, url)
    flow.refresh_from_db()
    assert flow.state == FlowState.WAITING
    # the owner may not answer a step assigned to others (403), and keeps the overrides
    client.force_login(user)
    refused = client.post(answer, {"version": flow.version, "decision": "approve"}, **headers)
    assert refused.status_code == 403
    confirm = reverse("studio:flow_confirm", args=[flow.pk, "kill"])
    assert client.get(confirm, **headers).status_code == 200
    # once answered, the wait is over: the assignee no longer sees the flow
    client.force_login(bob)
    done = client.post(answer, {"version": flow.version, "decision": "approve"}, **headers)
    assert done.status_code == (200 if htmx else 302)
    assert client.get(page, **headers).status_code == 404
    assert client.get(live, {"version": 0}, **headers).status_code == 404


def test_answers_need_the_csrf_token_on_the_page_and_the_list(assigned):
    flow, bob = assigned
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    url = reverse("studio:flow_input", args=[flow.pk])
    data = {"version": flow.version, "decision": "approve", "comment": "ok"}
    assert client.post(url, data).status_code == 403
    assert client.post(url, {**data, "from": "waiting"}, **HTMX).status_code == 403
    flow.refresh_from_db()
    assert flow.state == FlowState.WAITING
    page = client.get(reverse("studio:waiting"))
    token = page.cookies["csrftoken"].value
    response = client.post(url, {**data, "from": "waiting"}, HTTP_X_CSRFTOKEN=token, **HTMX)
    assert response.status_code == 200
    flow.refresh_from_db()
    assert flow.state == FlowState.COMPLETE


def test_notifications_are_each_users_own(client, user, make_user, assigned):
    flow, bob = assigned
    client.force_login(bob)
    assert f'href="/flows/{flow.pk}/"' in client.get("/notifications/").content.decode()
    for other in (user, make_user("carol")):
        client.force_login(other)
        html = client.get("/notifications/").content.decode()
        assert f'href="/flows/{flow.pk}/"' not in html and "No notifications yet" in html
