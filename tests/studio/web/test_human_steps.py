"""Human steps in the studio's pages: a script's typed form rendered with proper widgets and
validated by the engine, Approve / Reject decisions, who may see and answer an assigned
step (assignee, owner, stranger), results hidden from assignees when the step says so,
"Waiting for me" (soonest deadline first, answerable in place), the notifications page and
the header's count, and the live fragments per viewer's role."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from engine import api
from engine.flows.status import FlowState
from engine.models import Flow, Notification

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def bob(make_user):
    """An approver: a member of the "approvers" group."""
    member = make_user("bob")
    member.groups.add(Group.objects.create(name="approvers"))
    return member


@pytest.fixture
def carol(make_user):
    """A stranger to every flow here."""
    return make_user("carol")


def _flow(owner, *steps, name="Expense"):
    routine = api.create_routine(name, list(steps), owner=owner)
    flow = api.start_flow(routine, owner)
    flow.refresh_from_db()
    return flow


def _approval(owner, timeout=3600, assign_to="approvers", script="t_approve", before=()):
    params = {"timeout": timeout}
    if assign_to:
        params["assign_to"] = assign_to
    flow = _flow(owner, *before, {"script": script, "params": params})
    assert flow.state == FlowState.WAITING
    return flow


def _page(client, flow):
    return client.get(reverse("studio:flow_detail", args=[flow.pk]))


def _answer(client, flow, htmx=True, **data):
    data.setdefault("version", flow.version)
    headers = HTMX if htmx else {}
    return client.post(reverse("studio:flow_input", args=[flow.pk]), data, **headers)


def _tag(html: str, name: str) -> str:
    """The opening tag of the form control named `name`."""
    found = re.search(rf'<(input|select|textarea)[^>]*name="{name}"[^>]*>', html)
    assert found, f"no control named {name}"
    return found.group(0)


# --- typed input ------------------------------------------------------------------------------


def test_a_typed_form_renders_its_widgets_help_texts_and_required_marks(client, user):
    flow = _flow(user, "t_form")
    client.force_login(user)
    html = _page(client, flow).content.decode()
    assert 'type="checkbox"' in _tag(html, "approved")
    amount = _tag(html, "amount")
    assert 'type="number"' in amount and 'min="0"' in amount and "required" in amount
    assert 'type="date"' in _tag(html, "ship_on")
    assert _tag(html, "size").startswith("<select")
    assert '<option value="l">Large</option>' in html
    assert 'type="number"' in _tag(html, "quantity") and 'value="1"' in _tag(html, "quantity")
    # help text, tied to its field; required marks beside the labels of required fields
    assert f'id="id_f{flow.pk}_approved_helptext">Tick to approve<' in html
    assert f'aria-describedby="id_f{flow.pk}_approved_helptext"' in _tag(html, "approved")
    label = re.search(rf'<label for="id_f{flow.pk}_amount">(.*?)</label>', html, re.S)
    assert label and "(required)" in label.group(1) and "*" in label.group(1)
    label = re.search(rf'<label for="id_f{flow.pk}_ship_on">(.*?)</label>', html, re.S)
    assert label and "required" not in label.group(1)
    assert 'name="version"' in html and ">Submit<" in html


@pytest.mark.parametrize("htmx", [True, False])
def test_invalid_typed_input_answers_400_with_field_errors_and_the_flow_waits(client, user, htmx):
    flow = _flow(user, "t_form")
    events = flow.events.count()
    client.force_login(user)
    bad = {"amount": "-3", "size": "xl", "quantity": "", "ship_on": "not a date"}
    response = _answer(client, flow, htmx=htmx, **bad)
    html = response.content.decode()
    assert response.status_code == 400
    assert "greater than or equal to 0" in html and "Select a valid choice" in html
    assert "Enter a valid date" in html and "This field is required" in html
    assert 'aria-invalid="true"' in _tag(html, "amount")
    assert 'value="-3"' in _tag(html, "amount")  # what the user typed stays
    assert ("<html" in html) is not htmx
    if htmx:
        assert response["HX-Retarget"] == "#flow-input"
    flow.refresh_from_db()
    assert flow.state == FlowState.WAITING and flow.events.count() == events


def test_valid_typed_input_moves_the_flow_on_with_typed_values(client, user):
    flow = _flow(user, "t_form")
    client.force_login(user)
    response = _answer(
        client,
        flow,
        approved="on",
        amount="12.5",
        ship_on="2030-01-02",
        size="l",
        quantity="3",
    )
    assert response.status_code == 200 and 'id="flow-live"' in response.content.decode()
    flow.refresh_from_db()
    assert flow.state == FlowState.COMPLETE
    assert flow.results[0] == {
        "approved": True,
        "amount": "12.5",
        "ship_on": "2030-01-02",
        "size": "l",
        "quantity": 3,
    }


def test_the_input_post_keeps_the_version_guard(client, user):
    flow = _flow(user, "t_form")
    client.force_login(user)
    good = {"amount": "1", "size": "s", "quantity": "1"}
    stale = _answer(client, flow, **good, version=flow.version + 1)
    assert stale.status_code == 409 and "changed" in stale.content.decode()
    missing = _answer(client, flow, **{**good, "version": ""})
    assert missing.status_code == 400
    flow.refresh_from_db()
    assert flow.state == FlowState.WAITING
    plain = _answer(client, flow, htmx=False, **good)
    assert plain.status_code == 302 and plain["Location"] == f"/flows/{flow.pk}/"


def test_input_fields_and_json_steps_keep_their_forms(client, user):
    client.force_login(user)
    fields = _flow(user, "t_wait")
    html = _page(client, fields).content.decode()
    assert 'name="answer"' in html and "read as JSON" in html and "Send input" in html
    json_step = _flow(user, "t_checked")
    assert 'name="input"' in _page(client, json_step).content.decode()
    assert _answer(client, fields, answer='{"a": 1}').status_code == 200
    fields.refresh_from_db()
    assert fields.results[0] == {"got": {"answer": {"a": 1}}}


# --- decisions --------------------------------------------------------------------------------


def test_a_decision_shows_approve_and_reject_and_rejecting_needs_a_comment(client, user):
    flow = _approval(user, assign_to=None)  # nobody assigned: the owner decides
    client.force_login(user)
    html = _page(client, flow).content.decode()
    assert 'name="decision" value="approve"' in html and 'name="decision" value="reject"' in html
    assert "Your decision" in html and 'name="comment"' in html and 'name="amount"' in html
    # Enter in a field decides nothing: the form's default (first) submit button is disabled
    first = re.search(r'<form[^>]*flow_input|<form method="post" action="/flows/\d+/input/"', html)
    assert first
    buttons = re.findall(r"<button[^>]*>", html[first.end() :])
    assert "disabled" in buttons[0] and 'value="approve"' in buttons[1]

    refused = _answer(client, flow, decision="reject", comment="  ")
    text = refused.content.decode()
    assert refused.status_code == 400 and "Say why you reject it." in text
    assert f'id="id_f{flow.pk}_comment_error"' in text
    flow.refresh_from_db()
    assert flow.state == FlowState.WAITING

    rejected = _answer(client, flow, decision="reject", comment="too <b>dear</b>")
    assert rejected.status_code == 200
    flow.refresh_from_db()
    assert flow.state == FlowState.KILLED and "too <b>dear</b>" in flow.error
    timeline = _page(client, flow).content.decode()
    assert "✕ Rejected" in timeline and "by alice" in timeline
    assert "too &lt;b&gt;dear&lt;/b&gt;" in timeline and "too <b>dear" not in timeline


def test_an_approval_shows_who_decided_when_and_the_comment(client, user, bob):
    flow = _approval(user)
    client.force_login(bob)
    assert _answer(client, flow, decision="approve", comment="fine", amount="40").status_code == 200
    flow.refresh_from_db()
    assert flow.state == FlowState.COMPLETE
    assert flow.results[0]["decision"] == "approve" and flow.results[0]["amount"] == "40"
    client.force_login(user)
    html = _page(client, flow).content.decode()
    event = re.search(
        r'<li id="flow-event-\d+" class="event kind-inputpushed">(.*?)</li>', html, re.S
    )
    assert event, html
    assert "✓ Approved" in event.group(1) and "by bob" in event.group(1)
    assert "fine" in event.group(1) and "<time datetime=" in event.group(1)


def test_a_decision_without_a_button_is_refused(client, user):
    flow = _approval(user, assign_to=None)
    client.force_login(user)
    response = _answer(client, flow, comment="pressed Enter")
    assert response.status_code == 400 and "Choose Approve or Reject." in response.content.decode()


# --- assignees, owner, strangers --------------------------------------------------------------


def test_the_assignee_sees_the_form_without_overrides(client, user, bob):
    flow = _approval(user, timeout=3 * 3600 + 12 * 60 + 30)
    client.force_login(bob)
    html = _page(client, flow).content.decode()
    assert 'id="flow-input"' in html and 'value="approve"' in html
    assert 'id="flow-overrides"' not in html and "override-kill" not in html
    assert 'approvers <span class="tag-kind">group</span>' in html and "due in 3 h 12 min" in html
    assert 'id="flow-deadline"' in html
    # no overrides for the assignee: their confirmations and actions are someone else's flow
    for action in ("kill", "skip"):
        confirm = reverse("studio:flow_confirm", args=[flow.pk, action])
        act = reverse("studio:flow_act", args=[flow.pk, action])
        assert client.get(confirm).status_code == 404
        assert client.post(act, {"version": flow.version, "reason": "x"}).status_code == 404
    # nothing else of the owner's: their dashboard lists no flow of alice
    assert f"flow-{flow.pk}-row" not in client.get(reverse("studio:dashboard")).content.decode()


def test_the_owner_of_an_assigned_wait_sees_whom_it_waits_for_and_the_overrides(client, user, bob):
    flow = _approval(user)
    client.force_login(user)
    html = _page(client, flow).content.decode()
    assert 'id="flow-input"' not in html and 'value="approve"' not in html
    assert "Waiting for approvers" in html and 'id="override-kill"' in html
    refused = _answer(client, flow, decision="approve", comment="self-approval")
    assert refused.status_code == 403
    flow.refresh_from_db()
    assert flow.state == FlowState.WAITING


@pytest.mark.parametrize("htmx", [True, False])
def test_a_stranger_gets_404_on_the_page_the_live_area_and_the_input(
    client, user, bob, carol, htmx
):
    flow = _approval(user)
    client.force_login(carol)
    headers = HTMX if htmx else {}
    assert client.get(reverse("studio:flow_detail", args=[flow.pk]), **headers).status_code == 404
    live = reverse("studio:flow_live", args=[flow.pk])
    assert client.get(live, {"version": 0}, **headers).status_code == 404
    answer = _answer(client, flow, htmx=htmx, decision="approve", comment="me too")
    assert answer.status_code == 404
    from_list = _answer(
        client, flow, htmx=htmx, decision="approve", comment="x", **{"from": "waiting"}
    )
    assert from_list.status_code == 404
    flow.refresh_from_db()
    assert flow.state == FlowState.WAITING


def test_an_assignee_who_answered_no_longer_sees_the_flow(client, user, bob):
    flow = _approval(user)
    client.force_login(bob)
    response = _answer(client, flow, decision="approve", comment="ok")
    html = response.content.decode()
    assert response.status_code == 200 and f"You approved flow #{flow.pk}." in html
    assert 'id="flow-live"' in html and 'id="flow-results"' not in html
    assert _page(client, flow).status_code == 404  # the wait is over: no longer theirs
    other = _approval(user)
    plain = _answer(client, other, htmx=False, decision="approve", comment="ok")
    assert plain.status_code == 302 and plain["Location"] == reverse("studio:waiting")


def test_results_are_hidden_from_assignees_when_the_step_says_so(client, user, bob):
    secret = {"script": "t_echo", "params": {"secret": "salary-4711"}}
    flow = _approval(user, script="t_approve_hidden", before=[secret])
    client.force_login(bob)
    html = _page(client, flow).content.decode()
    assert 'id="results-hidden"' in html and "salary-4711" not in html
    assert 'id="flow-input"' in html
    client.force_login(user)
    assert "salary-4711" in _page(client, flow).content.decode()
    shown = _approval(user, before=[secret])  # t_approve shows the results to assignees
    client.force_login(bob)
    assert "salary-4711" in _page(client, shown).content.decode()


# --- "waiting for me" -------------------------------------------------------------------------


def test_waiting_for_me_lists_assigned_flows_soonest_deadline_first(client, user, bob, carol):
    later = _approval(user, timeout=7200)
    sooner = _approval(user, timeout=600)
    no_deadline = _approval(user, timeout=None)
    bobs_own = _flow(bob, "t_wait", name="Bob's own")
    _flow(carol, "t_wait", name="Carol's")
    client.force_login(bob)
    html = client.get(reverse("studio:waiting")).content.decode()
    order = [int(pk) for pk in re.findall(r'<li id="flow-(\d+)-row"', html)]
    assert order == [sooner.pk, later.pk] + sorted([no_deadline.pk, bobs_own.pk], reverse=True)
    assert "Carol&#x27;s" not in html
    assert "4 flows waiting for you" in html
    assert "due in 9 min" in html and "due in 1 h 59 min" in html
    # every decision row answers in place: Approve / Reject, a comment, the list's own marker
    row = html[html.index(f'id="flow-{sooner.pk}-row"') :]
    row = row[: row.index("</li>")]
    assert 'value="approve"' in row and 'value="reject"' in row and 'name="comment"' in row
    assert (
        'name="from" value="waiting"' in row
        and 'approvers <span class="tag-kind">group</span>' in row
    )
    # the owner of an assigned wait does not find it here: it waits for others
    client.force_login(user)
    assert f"flow-{sooner.pk}-row" not in client.get(reverse("studio:waiting")).content.decode()


def test_a_decision_is_answered_from_the_list(client, user, bob):
    first = _approval(user, timeout=600)
    second = _approval(user, timeout=7200)
    client.force_login(bob)
    refused = _answer(client, first, decision="reject", comment="", **{"from": "waiting"})
    html = refused.content.decode()
    assert refused.status_code == 400 and refused["HX-Retarget"] == f"#flow-{first.pk}-row"
    assert html.startswith(f'<li id="flow-{first.pk}-row"') and "Say why you reject it." in html
    first.refresh_from_db()
    assert first.state == FlowState.WAITING

    done = _answer(client, first, decision="approve", comment="ok", **{"from": "waiting"})
    html = done.content.decode()
    assert done.status_code == 200 and done["HX-Retarget"] == "#waiting-list"
    assert f"You approved flow #{first.pk}." in html and 'hx-swap-oob="true"' in html
    assert f"flow-{first.pk}-row" not in html and f"flow-{second.pk}-row" in html
    first.refresh_from_db()
    assert first.state == FlowState.COMPLETE

    plain = _answer(
        client, second, htmx=False, decision="approve", comment="", **{"from": "waiting"}
    )
    assert plain.status_code == 302 and plain["Location"] == reverse("studio:waiting")
    page = client.get(reverse("studio:waiting")).content.decode()
    assert f"You approved flow #{second.pk}." in page and "Nothing waits for you" in page


def test_a_typed_form_row_answers_from_the_list_and_shows_errors_in_place(client, user):
    flow = _flow(user, "t_form")
    client.force_login(user)
    html = client.get(reverse("studio:waiting")).content.decode()
    assert "<summary>Answer…</summary>" in html and 'type="date"' in html
    bad = _answer(client, flow, amount="-1", size="s", quantity="1", **{"from": "waiting"})
    assert (
        bad.status_code == 400 and '<details class="answer-details" open>' in bad.content.decode()
    )
    plain = _answer(
        client, flow, htmx=False, amount="-1", size="s", quantity="1", **{"from": "waiting"}
    )
    assert plain.status_code == 400 and "greater than or equal to 0" in plain.content.decode()
    good = _answer(client, flow, amount="2", size="s", quantity="1", **{"from": "waiting"})
    assert good.status_code == 200 and "Your answer to flow" in good.content.decode()
    flow.refresh_from_db()
    assert flow.state == FlowState.COMPLETE


# --- notifications ----------------------------------------------------------------------------


def _count(html: str) -> int:
    found = re.search(r'<span id="notification-count"[^>]*>(\d+)</span>', html)
    assert found, "no notification count in the header"
    return int(found.group(1))


def test_notifications_page_and_header_count(client, user, bob):
    first = _approval(user)
    second = _approval(user)
    client.force_login(bob)
    for name in ("studio:dashboard", "studio:routine_list", "studio:ltm_list", "studio:tokens"):
        assert _count(client.get(reverse(name)).content.decode()) == 2, name
    html = client.get(reverse("studio:notifications")).content.decode()
    assert _count(html) == 2 and "2 open · 2 in all" in html
    ids = [int(pk) for pk in re.findall(r'<tr id="notification-(\d+)"', html)]
    newest_first = list(
        Notification.objects.filter(user=bob)
        .order_by("-created", "-id")
        .values_list("pk", flat=True)
    )
    assert ids == newest_first
    assert f'href="/flows/{second.pk}/"' in html and "waits for you (approve the order" in html
    assert html.count("● open") == 2

    client.post(
        reverse("studio:flow_input", args=[first.pk]),
        {"version": first.version, "decision": "approve", "comment": "ok"},
    )
    html = client.get(reverse("studio:notifications")).content.decode()
    assert _count(html) == 1 and "1 open · 2 in all" in html
    assert html.count("● open") == 1 and "✓ cleared" in html
    # the cleared one no longer links to a flow the assignee may no longer see
    assert f'href="/flows/{first.pk}/"' not in html and f'href="/flows/{second.pk}/"' in html
    client.force_login(user)  # the owner was told nothing: the wait was assigned to others
    assert _count(client.get(reverse("studio:dashboard")).content.decode()) == 0


def test_notifications_need_sign_in_and_show_only_ones_own(client, user, bob, carol):
    _approval(user)
    assert client.get(reverse("studio:notifications")).status_code == 302
    client.force_login(carol)
    html = client.get(reverse("studio:notifications")).content.decode()
    assert "No notifications yet" in html and _count(html) == 0


def test_a_script_in_a_wait_reason_or_notification_is_escaped(client, user, bob):
    evil = "<script>alert('x')</script>"
    steps = [
        {
            "script": "ask_approval",
            "label": evil,
            "params": {"question": evil, "assign_to": "approvers"},
        }
    ]
    flow = _flow(user, *steps, name=f"Evil {evil}")
    assert flow.state == FlowState.WAITING and Notification.objects.filter(user=bob).exists()
    client.force_login(bob)
    pages = [
        client.get(reverse("studio:notifications")),
        client.get(reverse("studio:waiting")),
        _page(client, flow),
    ]
    for response in pages:
        html = response.content.decode()
        assert evil not in html, response.request["PATH_INFO"]
        assert "&lt;script&gt;alert(" in html, response.request["PATH_INFO"]


# --- live fragments per role ------------------------------------------------------------------


def test_live_fragments_differ_by_role_and_stop_for_a_finished_assignee(user, bob, carol):
    from studio.live import fragments, reads

    flow = _approval(user)
    event = {"seq": flow.seq}
    owner_role = reads.flow_role(user, flow.pk)
    bob_role = reads.flow_role(bob, flow.pk)
    assert owner_role == ("owner", user.pk) and bob_role == ("assignee", bob.pk)
    assert reads.flow_role(carol, flow.pk) is None and not reads.may_see(carol, "flow", flow.pk)
    owners = fragments.fragments(user, "flow", flow.pk, event, owner_role)["flow-live"]
    bobs = fragments.fragments(bob, "flow", flow.pk, event, bob_role)["flow-live"]
    assert "override-kill" in owners and 'value="approve"' not in owners
    assert "override-kill" not in bobs and 'value="approve"' in bobs
    # the cache keeps them apart: each role gets its own again
    assert fragments.peek("flow", flow.pk, flow.seq, owner_role) == {"flow-live": owners}
    assert fragments.peek("flow", flow.pk, flow.seq, bob_role) == {"flow-live": bobs}
    # an assignee's events carry no results or inputs
    limited = reads.limited_event({"seq": 3, "data": {"result": 1, "input": 2, "step": 0}})
    assert limited["data"] == {"step": 0}

    api.push_input(flow, {"decision": "approve", "comment": "ok"}, bob)
    flow.refresh_from_db()
    gone = fragments.fragments(bob, "flow", flow.pk, {"seq": flow.seq}, bob_role)["flow-live"]
    assert "no longer waits for you" in gone and "flow-results" not in gone
    assert not reads.may_see(bob, "flow", flow.pk)
    assert Flow.objects.get(pk=flow.pk).state == FlowState.COMPLETE


def test_the_waiting_list_and_notifications_queries_do_not_grow_with_rows(client, user, bob):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def count(name: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse(name)).status_code == 200
        return len(ctx.captured_queries)

    _approval(user)
    client.force_login(bob)
    few = {name: count(name) for name in ("studio:waiting", "studio:notifications")}
    for _ in range(6):
        _approval(user)
    _flow(bob, "t_form", name="Bob's order")
    assert {name: count(name) for name in few} == few
