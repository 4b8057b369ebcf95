"""Access to the studio: every page and action needs a signed-in user; a second user can
neither see nor act on the first user's flows, routines or LTM runs (404 for every URL);
staff see everything; unsafe requests need the CSRF token."""

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
        for name in ("studio:dashboard", "studio:waiting", "studio:routine_list", "studio:ltm_list")
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
    pages = ["studio:dashboard", "studio:waiting", "studio:routine_list", "studio:ltm_list"]
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
