"""A routine's versions page (any two versions side by side) and moving a flow onto another
version from its page: the confirmation with its preview, the move, and every refusal (a
4xx with its message, nothing changed); sign-in, access, CSRF and escaping."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from engine import api
from engine.models import Flow, FlowEvent, RoutineVersion

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def client_alice(client, user):
    client.force_login(user)
    return client


def steps_of(routine, number=None):
    routine.refresh_from_db()
    row = RoutineVersion.objects.get(routine=routine, number=number or routine.version)
    return [dict(step) for step in row.steps]


def three_versions(user):
    """v1: A, B (waits); v2: A, B, C; v3: New, A, B, C — and a flow of v1 waiting at B."""
    routine = api.create_routine(
        "Onboarding",
        [{"script": "t_echo", "label": "A"}, {"script": "t_wait", "label": "B"}],
        owner=user,
    )
    flow = api.start_flow(routine, user)
    api.update_routine(
        routine, "Onboarding", [*steps_of(routine), {"script": "t_echo", "label": "C"}], user
    )
    api.update_routine(
        routine,
        "Onboarding",
        [{"script": "t_echo", "label": "New", "params": {"x": 1}}, *steps_of(routine)],
        user,
    )
    flow.refresh_from_db()
    return routine, flow


def frozen(flow):
    flow = Flow.objects.get(pk=flow.pk)
    events = FlowEvent.objects.filter(flow=flow).count()
    return flow.version, flow.routine_version, flow.state, flow.position, flow.steps, events


# --- the versions page ---------------------------------------------------------------------------


def test_the_versions_page_lists_versions_and_compares_the_previous_with_the_current(
    client_alice, user
):
    routine, _ = three_versions(user)
    url = reverse("studio:routine_versions", args=[routine.pk])
    html = client_alice.get(url).content.decode()
    for number, steps in ((1, 2), (2, 3), (3, 4)):
        row = html.split(f'id="version-{number}"')[1].split("</tr>")[0]
        assert f"v{number}" in row and "alice" in row and f"<td>{steps}</td>" in row
    assert 'id="version-3" class="current"' in html
    assert '<option value="2" selected>v2</option>' in html  # left: the previous
    assert '<option value="3" selected>v3</option>' in html  # right: the current
    diff = html.split('id="version-diff"')[1]
    assert diff.count('class="diff-row diff-added') == 1 and "New" in diff
    assert diff.count('class="diff-row diff-same') == 3
    assert "Compare with v2" in html
    # Links from the routine list and the builder.
    assert url in client_alice.get(reverse("studio:routine_list")).content.decode()
    builder = client_alice.get(reverse("studio:routine_edit", args=[routine.pk]))
    assert url in builder.content.decode()


def test_any_two_versions_side_by_side_and_htmx_gets_the_comparison_only(client_alice, user):
    routine, _ = three_versions(user)
    url = reverse("studio:routine_versions", args=[routine.pk])
    html = client_alice.get(url, {"a": "3", "b": "1"}).content.decode()
    diff = html.split('id="version-diff"')[1]
    assert diff.count("diff-removed") == 2 and "retry" not in diff  # New and C
    assert "params changed" not in diff
    partial = client_alice.get(url, {"a": "1", "b": "3"}, **HTMX)
    text = partial.content.decode()
    assert partial.status_code == 200 and "<html" not in text and 'id="version-compare"' in text
    assert 'id="version-list"' not in text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"a": "9"}, "Routine .* has no version 9; its versions are 1 to 3."),
        ({"b": "0"}, "has no version 0"),
        ({"a": "abc"}, "“abc” is not a version number."),
        ({"a": "-1"}, "is not a version number"),
        ({"b": "1" * 30}, "is not a version number"),
    ],
)
def test_a_version_that_does_not_exist_is_a_400_naming_the_versions(
    client_alice, user, query, message
):
    import re

    routine, _ = three_versions(user)
    response = client_alice.get(reverse("studio:routine_versions", args=[routine.pk]), query)
    assert response.status_code == 400
    assert re.search(message, response.content.decode()), response.content.decode()[-2000:]


def test_the_versions_page_is_escaped_and_only_for_who_sees_the_routine(
    client_alice, user, other_user
):
    routine = api.create_routine(
        "<b>R</b>", [{"script": "t_echo", "label": "<script>x()</script>"}], owner=user
    )
    api.update_routine(routine, "<i>R2</i>", ["t_echo"], user, description="<u>d</u>")
    url = reverse("studio:routine_versions", args=[routine.pk])
    html = client_alice.get(url).content.decode()
    assert "<script>x()" not in html and "&lt;script&gt;x()&lt;/script&gt;" in html
    assert "&lt;i&gt;R2&lt;/i&gt;" in html and "&lt;u&gt;d&lt;/u&gt;" in html
    assert "<i>R2</i>" not in html
    bob = Client()
    bob.force_login(other_user)
    assert bob.get(url).status_code == 404
    assert bob.get(reverse("studio:routine_versions", args=[987654])).status_code == 404
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]


# --- moving a flow onto another version ----------------------------------------------------------


def move_url(flow):
    return reverse("studio:flow_change_version", args=[flow.pk])


def test_the_flow_page_offers_the_move_in_its_states_only(client_alice, user):
    routine, flow = three_versions(user)
    page = reverse("studio:flow_detail", args=[flow.pk])
    assert 'id="override-change_version"' in client_alice.get(page).content.decode()
    for state, offered in (("running", False), ("complete", False), ("failed", True)):
        Flow.objects.filter(pk=flow.pk).update(state=state)
        assert ('id="override-change_version"' in client_alice.get(page).content.decode()) == (
            offered
        ), state


def test_the_confirmation_previews_the_diff_the_position_and_the_results(client_alice, user):
    routine, flow = three_versions(user)
    response = client_alice.get(move_url(flow), {"version": flow.version}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert "The flow is waiting at step 2 (B) of v1." in html
    assert "It will go on at step 3 (B) of v3, the same step" in html
    assert '<option value="2" selected>3. B (the flow\'s step)</option>' in html
    assert "Results kept:</strong> step 1 (A) → step 2 (A)" in html
    assert '<option value="3" selected>' in html  # the current version by default
    assert f'name="version" value="{flow.version}"' in html
    diff = html.split('id="version-diff"')[1]
    assert "goes on here" in diff and ">now<" in diff
    assert diff.count("diff-added") == 2  # New and C
    assert "params changed" not in diff and "x&quot;: 1" in diff
    # Without htmx: a page of its own.
    assert "<html" in client_alice.get(move_url(flow)).content.decode()


def test_a_preview_of_another_version_maps_the_position_again_and_keeps_the_reason(
    client_alice, user
):
    routine, flow = three_versions(user)
    data = {"version": flow.version, "to": "2", "shown": "3", "position": "0", "reason": "why"}
    response = client_alice.post(move_url(flow), {**data, "op": "preview"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200 and response["HX-Retarget"] == "#flow-confirm"
    assert '<option value="1" selected>2. B (the flow\'s step)</option>' in html
    assert 'value="why"' in html and "Move to v2" in html
    # The same version shown: the chosen step stays chosen.
    again = {**data, "shown": "2", "op": "preview"}
    html = client_alice.post(move_url(flow), again, **HTMX).content.decode()
    assert '<option value="0" selected>1. A</option>' in html
    assert "the step you chose" in html
    assert frozen(flow) == frozen(Flow.objects.get(pk=flow.pk))


def test_the_move_goes_through_and_is_in_the_timeline(client_alice, user):
    routine, flow = three_versions(user)
    data = {"version": flow.version, "to": "3", "shown": "3", "position": "2", "reason": "v3"}
    response = client_alice.post(move_url(flow), {**data, "op": "move"}, **HTMX)
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("studio:flow_detail", args=[flow.pk])
    flow.refresh_from_db()
    assert (flow.routine_version, flow.position, flow.state) == (3, 2, "waiting")
    event = FlowEvent.objects.get(flow=flow, kind="manual.change_version")
    assert event.actor == user and event.message == "v3"
    page = client_alice.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    assert "moved onto version 3 and went on at step 3 (B)" in page
    assert "manual.change_version" in page and "v3" in page


def test_without_javascript_the_move_redirects_to_the_flow(client_alice, user):
    routine, flow = three_versions(user)
    data = {"version": flow.version, "to": "2", "shown": "2", "position": "1", "reason": "x"}
    response = client_alice.post(move_url(flow), data)
    assert response.status_code == 302
    assert response["Location"] == reverse("studio:flow_detail", args=[flow.pk])
    assert Flow.objects.get(pk=flow.pk).routine_version == 2


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"reason": ""}, 400, "This field is required"),
        ({"position": ""}, 400, "This field is required"),
        ({"position": "9"}, 400, "Select a valid choice"),
        ({"shown": "2"}, 400, "You chose version 3: check its preview"),
        (
            {"to": "99", "shown": "99"},
            400,
            "There is no version “99” to move onto; the others are: v2, v3",
        ),
        ({"to": "1", "shown": "1"}, 400, "already on version 1"),
        ({"to": "x"}, 400, "There is no version “x”"),
        ({"version": "abc"}, 400, "flow version is missing"),
        ({"reason": "a\x00b"}, 400, "Null characters are not allowed"),
    ],
)
def test_bad_input_is_a_400_with_its_message_and_changes_nothing(
    client_alice, user, change, status, message
):
    routine, flow = three_versions(user)
    before = frozen(flow)
    data = {"version": flow.version, "to": "3", "shown": "3", "position": "2", "reason": "r"}
    for headers in ({}, HTMX):
        response = client_alice.post(move_url(flow), {**data, **change}, **headers)
        html = response.content.decode()
        assert response.status_code == status, (change, html[-1500:])
        assert message in html, (change, html[-3000:])
        assert frozen(flow) == before


def test_a_stale_page_or_a_refused_state_is_a_409(client_alice, user):
    routine, flow = three_versions(user)
    seen = flow.version
    data = {"version": seen, "to": "3", "shown": "3", "position": "2", "reason": "late"}
    api.kill_flow(flow, user, reason="meanwhile")
    before = frozen(flow)
    response = client_alice.post(move_url(flow), data, **HTMX)
    assert response.status_code == 409 and "changed since you loaded" in response.content.decode()
    assert response["HX-Retarget"] == "#flow-confirm-errors"
    plain = client_alice.post(move_url(flow), data)
    assert plain.status_code == 409 and "Reload the flow" in plain.content.decode()
    Flow.objects.filter(pk=flow.pk).update(state="complete")
    flow.refresh_from_db()
    before = frozen(flow)
    done = client_alice.post(move_url(flow), {**data, "version": flow.version}, **HTMX)
    assert done.status_code == 409 and "only a pending, waiting, failed or killed" in (
        done.content.decode()
    )
    assert frozen(flow) == before


def test_the_current_step_gone_asks_for_a_step(client_alice, user):
    routine = api.create_routine("r", [{"script": "t_wait", "label": "Ask"}], owner=user)
    flow = api.start_flow(routine, user)
    api.update_routine(routine, "r", [{"script": "t_echo", "label": "Other"}], user)
    html = client_alice.get(move_url(flow), **HTMX).content.decode()
    assert "That step is not in v2: choose the step it goes on at." in html
    assert '<option value="" selected>Choose a step</option>' in html


def test_a_routine_with_one_version_says_so(client_alice, user):
    routine = api.create_routine("r", ["t_wait"], owner=user)
    flow = api.start_flow(routine, user)
    html = client_alice.get(move_url(flow), **HTMX).content.decode()
    assert "which has no other version" in html and "confirm-submit" not in html
    response = client_alice.post(
        move_url(flow), {"version": flow.version, "to": "1", "reason": "x"}, **HTMX
    )
    assert response.status_code == 400 and "already on version 1" in response.content.decode()


def test_others_and_assignees_get_404_and_csrf_is_needed(user, other_user, make_user):
    routine, flow = three_versions(user)
    data = {"version": flow.version, "to": "3", "shown": "3", "position": "2", "reason": "x"}
    before = frozen(flow)
    bob = Client()
    bob.force_login(other_user)
    assert bob.get(move_url(flow)).status_code == 404
    assert bob.post(move_url(flow), data).status_code == 404
    # An assignee of the wait answers it, and may not move it.
    group = Group.objects.create(name="approvers")
    carol = make_user("carol")
    carol.groups.add(group)
    Flow.objects.get(pk=flow.pk).assignees.create(group=group)
    as_carol = Client()
    as_carol.force_login(carol)
    assert as_carol.post(move_url(flow), data).status_code == 404
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(move_url(flow), data).status_code == 403
    assert frozen(flow) == before
    anonymous = Client().post(move_url(flow), data)
    assert anonymous.status_code == 302 and frozen(flow) == before


REFUSED_REASONS = ("", "\x00", "a\x00b", "1" * 5000)
NASTY = ["", "\x00", "a\x00b", "-1", "1.5", "9223372036854775808", "1" * 5000, "²", "<b>x</b>"]


def test_nasty_values_in_any_field_are_never_a_server_error_and_store_nothing(client_alice, user):
    routine, flow = three_versions(user)
    before = frozen(flow)
    base = {"version": str(flow.version), "to": "3", "shown": "3", "position": "2", "reason": "r"}
    versions_url = reverse("studio:routine_versions", args=[routine.pk])
    for value in NASTY:
        for name in ("a", "b"):
            response = client_alice.get(versions_url, {name: value})
            assert response.status_code in (200, 400), (name, value)
            assert "<b>x</b>" not in response.content.decode()
        for name in base:
            # (a reason that is text is a good one: only refused ones go with a move)
            ops = (
                ["preview", "move"] if name != "reason" or value in REFUSED_REASONS else ["preview"]
            )
            for op in ops:
                for headers in ({}, HTMX):
                    data = {**base, name: value, "op": op}
                    response = client_alice.post(move_url(flow), data, **headers)
                    assert response.status_code < 500, (name, value, op)
                    assert "<b>x</b>" not in response.content.decode()
            response = client_alice.get(move_url(flow), {**base, name: value})
            assert response.status_code in (200, 400), (name, value)
    assert frozen(flow) == before
