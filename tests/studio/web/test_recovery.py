"""Recovery in the studio's pages: a retrying flow's status, dashboard row and timeline; "Retry
now" and "Give up"; a retry, resume or move with edits of the flow's data and the step's
params (validated, recorded as a diff); the builder's retry settings of a step; the "Who
holds it" panel for operators; and the live fragments showing the same."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from engine import api
from engine.flows.status import FlowState
from engine.models import Flow, FlowEvent, Routine, RoutineStep, Worker
from studio.live import fragments
from studio.templatetags.studio_tags import clock

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def alice(client, user):
    client.force_login(user)
    return client


def _retrying(user, data=None, steps=("t_ui_needs_ok", "t_echo")) -> Flow:
    """A flow whose first step failed its first attempt: retrying, attempt 2 of 4 in an hour."""
    routine = api.create_routine("Charge", list(steps), owner=user)
    flow = api.start_flow(routine, user, data or {"amount": 10})
    flow.refresh_from_db()
    assert flow.state == FlowState.RETRYING and flow.attempt == 2
    return flow


def _act(client, flow, action, **data):
    data.setdefault("version", flow.version)
    return client.post(reverse("studio:flow_act", args=[flow.pk, action]), data, **HTMX)


def _confirm(client, flow, action, **query):
    url = reverse("studio:flow_confirm", args=[flow.pk, action])
    return client.get(url, {"version": flow.version, **query}, **HTMX)


def _events(flow, kind):
    return list(FlowEvent.objects.filter(flow=flow, kind=kind).order_by("seq"))


# --- a retrying flow, everywhere ----------------------------------------------------------


def test_a_retrying_flows_page_says_which_attempt_comes_when_with_the_last_error(alice, user):
    flow = _retrying(user)
    html = alice.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    assert 'class="state state-retrying"' in html and "Retrying" in html
    at = clock(flow.retry_at)
    assert "<strong>Retrying:</strong> attempt 2 of 4 at <time datetime=" in html
    assert f'>{at}</time> <span class="muted">(in 59 min)</span>' in html
    assert "Last error:</span> ValueError: data.ok is not set (attempt 1)" in html
    # the overrides of a retrying flow: retry now and give up (no resume)
    assert 'id="override-retry"' in html and "Retry now…" in html
    assert 'id="override-give_up"' in html and "Give up…" in html
    assert 'id="override-resume"' not in html
    # the timeline: the failed attempt, its error and the next attempt's time
    assert "attempt 1 of 4 failed" in html
    assert '<span class="muted">Error:</span> ValueError: data.ok is not set' in html
    assert "Next attempt at <time datetime=" in html
    # nobody but operators sees who holds it
    assert 'id="flow-holder"' not in html


def test_the_dashboard_row_and_filter_show_retrying_flows(alice, user):
    flow = _retrying(user)
    other = api.start_flow(api.create_routine("Plain", ["t_wait"], owner=user), user)
    html = alice.get(reverse("studio:dashboard")).content.decode()
    assert '<option value="retrying" >Retrying</option>' in html
    row = html[html.index(f'id="flow-{flow.pk}-row"') :]
    row = row[: row.index("</tr>")]
    assert "state-retrying" in row
    assert "attempt 2 of 4 at <time datetime=" in row and clock(flow.retry_at) in row
    only = alice.get(reverse("studio:dashboard"), {"state": "retrying"}, **HTMX).content.decode()
    assert f'id="flow-{flow.pk}-row"' in only and f'id="flow-{other.pk}-row"' not in only
    assert (
        '<option value="retrying" selected>'
        in alice.get(reverse("studio:dashboard"), {"state": "retrying"}).content.decode()
    )


def test_live_fragments_carry_the_retry(user):
    flow = _retrying(user)
    row = fragments.row(flow.pk, flow.seq)
    assert "state-retrying" in row and "attempt 2 of 4 at" in row
    live = fragments.fragments(user, "flow", flow.pk, {"seq": flow.seq})["flow-live"]
    assert "<strong>Retrying:</strong> attempt 2 of 4" in live and "Retry now…" in live


# --- retry now, give up -------------------------------------------------------------------


def test_retry_now_performs_the_due_attempt_at_once(alice, user):
    flow = _retrying(user)
    confirm = _confirm(alice, flow, "retry").content.decode()
    assert '<h2 id="confirm-h">Retry now?</h2>' in confirm
    assert "Attempt 2 of 4 of step 1 (T ui needs ok) runs now" in confirm
    assert 'name="reason"' in confirm and "Reason (optional)" in confirm
    assert "With edits: the flow's data and the step's params" in confirm
    assert json.loads(_textarea(confirm, "edit_data")) == {"amount": 10}
    response = _act(alice, flow, "retry", reason="the card service is back")
    assert response.status_code == 200
    flow.refresh_from_db()
    # attempt 2 ran at once, failed again: attempt 3 of 4 is due in an hour
    assert flow.state == FlowState.RETRYING and flow.attempt == 3
    retried = _events(flow, "manual.retry")[-1]
    assert retried.actor == user and retried.message == "the card service is back"
    assert retried.data["was"] == "retrying" and "edits" not in retried.data
    html = response.content.decode()
    assert "attempt 3 of 4" in html and "retried now: attempt 2" in html


def test_give_up_needs_a_reason_and_fails_the_flow_with_its_last_error(alice, user):
    flow = _retrying(user)
    confirm = _confirm(alice, flow, "give_up").content.decode()
    assert "Give up retrying?" in confirm and "Reason (required)" in confirm
    assert "the flow fails with its last error (ValueError: data.ok is not set" in confirm
    refused = _act(alice, flow, "give_up", reason="")
    assert refused.status_code == 400 and "This field is required" in refused.content.decode()
    flow.refresh_from_db()
    assert flow.state == FlowState.RETRYING
    assert _act(alice, flow, "give_up", reason="the card was cancelled").status_code == 200
    flow.refresh_from_db()
    assert flow.state == FlowState.FAILED and flow.retry_at is None
    assert flow.error.startswith("ValueError: data.ok is not set")
    event = _events(flow, "manual.give_up")[-1]
    assert event.message == "the card was cancelled" and event.actor == user
    html = alice.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    assert "gave up retrying" in html
    # no longer retrying: giving up again is a conflict, and nothing changes
    stale = _act(alice, flow, "give_up", reason="again")
    assert stale.status_code == 409
    assert Flow.objects.get(pk=flow.pk).version == flow.version


def test_without_htmx_the_overrides_redirect_and_the_confirmation_is_a_page(client, user):
    client.force_login(user)
    flow = _retrying(user)
    page = client.get(reverse("studio:flow_confirm", args=[flow.pk, "give_up"]))
    assert page.status_code == 200 and "<html" in page.content.decode()
    url = reverse("studio:flow_act", args=[flow.pk, "give_up"])
    bad = client.post(url, {"version": flow.version})
    assert bad.status_code == 400 and "<html" in bad.content.decode()
    done = client.post(url, {"version": flow.version, "reason": "no"})
    assert done.status_code == 302 and done["Location"] == f"/flows/{flow.pk}/"


def test_overrides_need_csrf_and_are_the_owners_or_operators(user, make_user):
    flow = _retrying(user)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    url = reverse("studio:flow_act", args=[flow.pk, "give_up"])
    assert strict.post(url, {"version": flow.version, "reason": "x"}).status_code == 403
    stranger = Client()
    stranger.force_login(make_user("carol"))
    for action in ("retry", "give_up"):
        assert _confirm(stranger, flow, action).status_code == 404
        assert _act(stranger, flow, action, reason="x").status_code == 404
    assert Flow.objects.get(pk=flow.pk).version == flow.version
    staff = Client()
    staff.force_login(make_user("root", is_staff=True))
    assert _act(staff, flow, "give_up", reason="operator").status_code == 200
    assert Flow.objects.get(pk=flow.pk).state == FlowState.FAILED


# --- reruns with edits --------------------------------------------------------------------


def _tag(html: str, id_: str) -> str:
    """The whole HTML tag whose id is `id_`."""
    at = html.index(f'id="{id_}"')
    start = html.rindex("<", 0, at)
    return html[start : html.index(">", at) + 1]


def _textarea(html: str, name: str) -> str:
    start = html.index(f'name="{name}"')
    start = html.index(">", start) + 1
    import html as entities

    return entities.unescape(html[start : html.index("</textarea>", start)])


def test_a_retry_with_edited_data_reruns_with_it_and_the_diff_is_in_the_timeline(alice, user):
    flow = _retrying(user, {"amount": 10, "note": "x"})
    edited = json.dumps({"amount": 12, "ok": True, "note": "x"})
    response = _act(alice, flow, "retry", reason="fixed the amount", edit_data=edited)
    assert response.status_code == 200
    flow.refresh_from_db()
    assert flow.state == FlowState.COMPLETE
    assert flow.data == {"amount": 12, "ok": True, "note": "x"}
    event = _events(flow, "manual.retry")[-1]
    assert event.data["edits"]["data"] == [
        {"path": "amount", "op": "changed", "old": 10, "new": 12},
        {"path": "ok", "op": "added", "new": True},
    ]
    assert "params" not in event.data["edits"]
    html = alice.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    diff = html[html.index('<pre class="event-message event-diff">') :]
    diff = diff[: diff.index("</pre>")]
    assert "fixed the amount" in diff and "data edited:" in diff
    assert "amount: 10 → 12" in diff and "ok: added true" in diff


def test_a_retry_with_edited_params_changes_only_that_step(alice, user):
    routine = api.create_routine(
        "P", [{"script": "t_ui_needs_ok", "params": {"card": "old"}}, "t_echo"], owner=user
    )
    flow = api.start_flow(routine, user, {"ok": False})
    flow.refresh_from_db()
    confirm = _confirm(alice, flow, "retry").content.decode()
    assert "Params of step 1 (T ui needs ok)" in confirm
    assert json.loads(_textarea(confirm, "edit_params")) == {"card": "old"}
    response = _act(
        alice,
        flow,
        "retry",
        edit_data=json.dumps({"ok": True}),
        edit_params=json.dumps({"card": "new"}),
        params_step="0",
    )
    assert response.status_code == 200
    flow.refresh_from_db()
    assert flow.state == FlowState.COMPLETE
    assert flow.results[0]["params"] == {"card": "new"}
    assert flow.steps[0]["params"] == {"card": "new"} and flow.steps[1].get("params") == {}
    edits = _events(flow, "manual.retry")[-1].data["edits"]
    assert edits["params"] == {
        "step": 0,
        "changes": [{"path": "card", "op": "changed", "old": "old", "new": "new"}],
    }
    assert Routine.objects.get(pk=routine.pk).steps.first().params == {"card": "old"}


@pytest.mark.parametrize(
    ("field", "text", "error"),
    [
        ("edit_data", "{broken", "not valid JSON"),
        ("edit_data", "[1, 2]", "must be a JSON object"),
        ("edit_params", '"text"', "must be a JSON object"),
        ("edit_data", '{"a": "\\u0000"}', "NUL"),
    ],
)
def test_edits_that_are_no_json_object_are_refused_and_change_nothing(
    alice, user, field, text, error
):
    flow = _retrying(user)
    response = _act(alice, flow, "retry", **{field: text})
    assert response.status_code == 400
    html = response.content.decode()
    assert error in html and 'aria-invalid="true"' in html
    assert '<details class="edits" id="flow-edits" open>' in html
    after = Flow.objects.get(pk=flow.pk)
    assert (after.version, after.data, after.state) == (flow.version, flow.data, flow.state)


def test_unchanged_edits_are_not_passed_on(alice, user):
    flow = _retrying(user, {"b": 1, "a": [1, 2]})
    same = '{"a": [1, 2],\n "b": 1}'
    assert _act(alice, flow, "retry", edit_data=same, edit_params="{}").status_code == 200
    retried = _events(flow, "manual.retry")[-1]
    assert "edits" not in retried.data and retried.message == ""


def test_a_type_change_is_an_edit(alice, user):
    flow = _retrying(user, {"amount": 1})
    assert _act(alice, flow, "retry", edit_data='{"amount": 1.0}').status_code == 200
    edits = _events(flow, "manual.retry")[-1].data["edits"]
    assert edits["data"] == [{"path": "amount", "op": "changed", "old": 1, "new": 1.0}]


def test_a_resume_with_a_reason_and_edits(alice, user):
    flow = _retrying(user)
    api.give_up(flow, user, "stop")
    flow.refresh_from_db()
    confirm = _confirm(alice, flow, "resume").content.decode()
    assert "Reason (optional)" in confirm and 'name="edit_data"' in confirm
    response = _act(alice, flow, "resume", reason="data fixed", edit_data='{"ok": true}')
    assert response.status_code == 200
    flow.refresh_from_db()
    assert flow.state == FlowState.COMPLETE
    event = _events(flow, "manual.resume")[-1]
    assert [c["path"] for c in event.data["edits"]["data"]] == ["amount", "ok"]
    assert event.message.startswith("data fixed\ndata edited:")


def test_a_move_edits_the_params_of_the_step_it_moves_to(alice, user):
    routine = api.create_routine(
        "M",
        [
            {"script": "t_echo", "params": {"n": 1}},
            {"script": "t_wait", "params": {"q": "first"}},
        ],
        owner=user,
    )
    flow = api.start_flow(routine, user)
    flow.refresh_from_db()
    assert flow.state == FlowState.WAITING and flow.position == 1
    # the confirmation shows the params of the step picked (by default the one before)
    confirm = _confirm(alice, flow, "move").content.decode()
    assert "Params of step 1 (t_echo)" in confirm or "Params of step 1 (T echo)" in confirm
    assert json.loads(_textarea(confirm, "edit_params")) == {"n": 1}
    assert 'hx-select="#edit-params"' in confirm
    picked = _confirm(alice, flow, "move", position="1").content.decode()
    assert json.loads(_textarea(picked, "edit_params")) == {"q": "first"}
    assert 'name="params_step" value="1"' in picked
    # params shown for step 1 but the move goes to step 2: refused, nothing changed
    wrong = _act(
        alice, flow, "move", position="1", reason="r", edit_params='{"n": 5}', params_step="0"
    )
    assert wrong.status_code == 400
    assert "These are the params of step 1, but the flow is to run step 2" in (
        wrong.content.decode()
    )
    assert Flow.objects.get(pk=flow.pk).version == flow.version
    moved = _act(
        alice,
        flow,
        "move",
        position="1",
        reason="ask again",
        edit_params='{"q": "second"}',
        params_step="1",
    )
    assert moved.status_code == 200
    flow.refresh_from_db()
    assert flow.steps[1]["params"] == {"q": "second"} and flow.state == FlowState.WAITING
    event = _events(flow, "manual.move")[-1]
    assert event.data["edits"]["params"]["step"] == 1
    assert 'step 2 params edited:\nq: "first" → "second"' in event.message


def test_skip_and_kill_have_no_edits(alice, user):
    flow = _retrying(user)
    for action in ("skip", "kill"):
        html = _confirm(alice, flow, action).content.decode()
        assert 'name="edit_data"' not in html and 'name="edit_params"' not in html


# --- who holds it -------------------------------------------------------------------------


def test_operators_see_who_holds_a_running_flow_and_what_housekeeping_will_do(
    client, user, make_user
):
    routine = api.create_routine("Hold", ["t_wait", "t_ui_hold"], owner=user)
    flow = api.start_flow(routine, user)
    now = timezone.now()
    Flow.objects.filter(pk=flow.pk).update(
        state=FlowState.RUNNING,
        position=1,
        worker="box:4242:ab12cd34",
        step_deadline=now + timedelta(hours=1),
        lease_until=now + timedelta(minutes=1),
    )
    since = now - timedelta(minutes=2)
    Worker.objects.create(
        id="box:4242:ab12cd34",
        host="box",
        pid=4242,
        held=[flow.pk],
        threads={str(flow.pk): {"thread": "huey-worker-<2>", "since": since.isoformat()}},
    )
    client.force_login(make_user("root", is_staff=True))
    html = client.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    panel = html[html.index('id="flow-holder"') :]
    panel = panel[: panel.index("</section>")]
    assert "Who holds it" in panel
    assert "box · process 4242" in panel and "beating" in panel
    assert "huey-worker-&lt;2&gt;" in panel and clock(since) in panel  # escaped
    assert "Last heartbeat" in panel and "s before this view" in panel
    assert "What housekeeping will do" in panel
    assert "Held by worker box (process 4242, thread huey-worker-&lt;2&gt;)" in panel
    assert "took longer than 3600 s" in panel and "attempt 2 of 2 follows at once" in panel
    # the owner (no operator) sees no panel
    client.force_login(user)
    assert (
        'id="flow-holder"'
        not in client.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    )


def test_the_panel_of_a_flow_nobody_holds(client, user, make_user):
    flow = _retrying(user)
    client.force_login(make_user("root", is_staff=True))
    html = client.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    assert "Nobody: no step of this flow is running." in html
    assert "attempt 2 of 4 of step 1 (T ui needs ok) is queued to run" in html


# --- the builder's retry settings ---------------------------------------------------------


def _builder(client, url, steps, op="save", name="Built", **extra):
    data = {"name": name, "description": "", "op": op, **extra}
    data["step_key"] = [s.get("key", f"k{i}") for i, s in enumerate(steps)]
    data["step_script"] = [s["script"] for s in steps]
    data["step_label"] = [s.get("label", "") for s in steps]
    data["step_params"] = [s.get("params", "{}") for s in steps]
    for name_ in ("retries", "retry_delay", "retry_backoff", "retry_max_delay"):
        data[f"step_{name_}"] = [s.get(name_, "") for s in steps]
    data["step_retry_jitter"] = [s.get("retry_jitter", "") for s in steps]
    data["step_time_limit"] = [s.get("time_limit", "") for s in steps]
    return client.post(url, data, **HTMX)


def test_the_builder_shows_each_steps_retry_settings_with_the_scripts_own(alice):
    url = reverse("studio:routine_new")
    html = _builder(alice, url, [{"script": "t_ui_hold"}], op="refresh").content.decode()
    assert "Retries and time limit" in html
    assert '<details class="step-retry" id="retry-k0">' in html  # collapsed
    for name, own in [("retries", "1"), ("time_limit", "3600"), ("retry_max_delay", "3600")]:
        field = _tag(html, f"{name}-k0")
        assert f'name="step_{name}"' in field and f'placeholder="{own}"' in field
        assert 'type="number"' in field
    assert 'placeholder="none"' not in html  # t_ui_hold has a time limit
    # the palette tells each script's policy in brief
    assert "Retries 3 times, after 3600 s" in html  # t_ui_needs_ok
    assert "Retries once, at once · time limit 3600 s" in html  # t_ui_hold


def test_the_builder_saves_overrides_and_keeps_the_step_keys(alice, user):
    url = reverse("studio:routine_new")
    steps = [
        {"script": "t_ui_needs_ok", "key": "pay-1", "retries": "5", "retry_delay": "2.5"},
        {"script": "t_echo", "key": "echo-1", "time_limit": "30"},
    ]
    response = _builder(alice, url, steps)
    assert response.status_code == 200, response.content.decode()[:2000]
    routine = Routine.objects.get(name="Built")
    saved = list(RoutineStep.objects.filter(routine=routine).order_by("order"))
    assert [(s.key, s.overrides) for s in saved] == [
        ("pay-1", {"retries": 5, "retry_delay": 2.5}),
        ("echo-1", {"time_limit": 30}),
    ]
    # the edit page shows them again, collapsed, with how many are set
    edit = alice.get(reverse("studio:routine_edit", args=[routine.pk])).content.decode()
    assert 'name="step_key" value="pay-1"' in edit
    assert 'value="5"' in _tag(edit, "retries-pay-1")
    assert "2 set for this step" in edit and "1 set for this step" in edit
    # and a flow of it runs with the step's policy: 6 attempts
    flow = api.start_flow(routine, user)
    flow.refresh_from_db()
    assert flow.state == FlowState.RETRYING and api.retry_status(flow)["attempts"] == 6


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("retries", "1.5", "retries must be a whole number"),
        ("retries", "500", "retries must be between 0 and 100"),
        ("retry_jitter", "2", "retry_jitter must be between 0 and 1"),
        ("time_limit", "0", "time_limit must be between"),
        ("retry_delay", "soon", "retry_delay must be a number"),
        ("retry_backoff", "nan", "retry_backoff must be a finite number"),
    ],
)
def test_bad_retry_settings_are_shown_beside_their_field_and_nothing_is_saved(
    alice, name, text, error
):
    url = reverse("studio:routine_new")
    response = _builder(alice, url, [{"script": "t_echo", name: text}])
    assert response.status_code == 400
    html = response.content.decode()
    assert '<details class="step-retry" id="retry-k0" open>' in html
    message = html[html.index(f'id="{name}-errors-k0"') :]
    assert error in message[: message.index("</p>")]
    assert 'aria-invalid="true"' in _tag(html, f"{name}-k0")
    assert not Routine.objects.filter(name="Built").exists()


def test_reordering_keeps_each_steps_settings(alice):
    url = reverse("studio:routine_new")
    steps = [{"script": "t_echo", "retries": "2"}, {"script": "t_wait", "time_limit": "9"}]
    html = _builder(alice, url, steps, op="down:k0").content.decode()
    assert html.index('id="time_limit-k1"') < html.index('id="retries-k0"')
    assert 'value="9"' in _tag(html, "time_limit-k1")
    assert 'value="2"' in _tag(html, "retries-k0")


def test_the_palette_tells_a_policy_in_brief():
    from studio.web.pages import retry_policy_text

    assert retry_policy_text({"retries": 0, "time_limit": 0.5}) == "Time limit 0.5 s"
    assert retry_policy_text({"retries": 0, "time_limit": None}) == ""
    policy = {
        "retries": 3,
        "retry_delay": 10.0,
        "retry_backoff": 2,
        "retry_max_delay": 60,
        "retry_jitter": 0.1,
        "retry_on": ["ConnectionError"],
        "time_limit": None,
    }
    assert retry_policy_text(policy) == (
        "Retries 3 times, after 10 s, each wait ×2 (at most 60 s), ±10% jitter on ConnectionError"
    )
