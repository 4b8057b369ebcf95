"""The studio's pages through the Django test client: the routine builder, the dashboard, a
flow's page with input and overrides, and how errors answer (never a 500)."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from engine import api
from engine.flows.status import FlowState
from engine.ltm.models import LtmRun
from engine.models import Flow, Routine
from studio.web import pages

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def client_alice(client, user):
    client.force_login(user)
    return client


def _flow(user, *scripts, data=None, name="test routine"):
    routine = api.create_routine(name, list(scripts), owner=user)
    flow = api.start_flow(routine, user, data or {})
    flow.refresh_from_db()
    return flow


# --- sign in, headers, assets -----------------------------------------------------------


def test_pages_need_sign_in(client):
    response = client.get(reverse("studio:dashboard"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_sign_in_page_and_sign_in(client, user):
    page = client.get(reverse("login"))
    assert page.status_code == 200 and b"Sign in" in page.content
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 302
    assert client.get(reverse("studio:dashboard")).status_code == 200


def test_csp_header_and_local_htmx_without_inline_script(client_alice):
    response = client_alice.get(reverse("studio:dashboard"))
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    html = response.content.decode()
    assert '<script src="/static/django_htmx/htmx-2.min.js"' in html
    assert "//cdn" not in html and "unpkg" not in html
    # Every <script> element loads a file: no inline code for the CSP to block.
    assert html.count("<script") == html.count("<script src=")
    assert 'hx-headers=\'{"X-CSRFToken": "' in html


def test_sign_out_is_a_post(client_alice):
    assert client_alice.post(reverse("logout")).status_code == 302
    assert client_alice.get(reverse("studio:dashboard")).status_code == 302


# --- routine builder ----------------------------------------------------------------------


def _builder_post(client, url, steps, op, name="Built", **extra):
    data = {"name": name, "description": "", "op": op, **extra}
    data["step_key"] = [f"k{i}" for i in range(len(steps))]
    data["step_script"] = [s[0] for s in steps]
    data["step_label"] = [s[1] for s in steps]
    data["step_params"] = [s[2] for s in steps]
    return client.post(url, data, **HTMX)


def test_builder_palette_lists_registered_scripts(client_alice):
    html = client_alice.get(reverse("studio:routine_new")).content.decode()
    assert "t_wait" in html and "waits for: answer" in html
    assert "Stores what it was given" in html  # the docstring
    assert "No steps yet" in html


def test_palette_shows_form_fields_decisions_and_the_params_convention():
    by_name = {info["name"]: info for info in pages.palette()}
    fields = {f["name"]: (f["kind"], f["required"]) for f in by_name["t_form"]["form_fields"]}
    assert fields == {
        "approved": ("yes / no", False),
        "amount": ("decimal number", True),
        "ship_on": ("date", False),
        "size": ("one of: s, l", True),
        "quantity": ("whole number", True),
    }
    decision = by_name["t_approve"]
    assert decision["decision"] and decision["human"]
    assert decision["form_fields"][0] == {
        "name": "decision",
        "kind": "Approve / Reject",
        "required": True,
        "help": "",
    }
    assert by_name["t_wait"]["human"] and not by_name["t_wait"]["form_fields"]
    assert not by_name["t_echo"]["human"] and not by_name["t_echo"]["decision"]
    # The docstring's paragraphs, `code` marked: the convention's params show as code.
    assert ("assign_to", True) in [part for para in decision["paragraphs"] for part in para]


def test_builder_palette_renders_fields_and_params_hint(client_alice):
    html = client_alice.get(reverse("studio:routine_new")).content.decode()
    assert "<code>decision</code> Approve / Reject" in html
    assert "<code>size</code> one of: s, l" in html
    assert "Params, by convention: <code>assign_to</code>" in html
    response = _builder_post(client_alice, reverse("studio:routine_new"), [], "add:t_approve")
    assert "Waits for a person. Optional: <code>assign_to</code>" in response.content.decode()


def test_builder_add_reorder_remove(client_alice):
    url = reverse("studio:routine_new")
    response = _builder_post(client_alice, url, [("t_echo", "", "{}")], "add:t_wait")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.index('value="t_echo"') < html.index('value="t_wait"')
    assert "<svg" in html  # the preview was drawn
    steps = [("t_echo", "first", "{}"), ("t_wait", "second", "{}")]
    html = _builder_post(client_alice, url, steps, "up:k1").content.decode()
    assert html.index('value="second"') < html.index('value="first"')
    html = _builder_post(client_alice, url, steps, "remove:k0").content.decode()
    assert 'value="first"' not in html and 'value="second"' in html
    assert Routine.objects.count() == 0  # nothing saved by editing


def test_builder_invalid_params_show_inline_and_save_nothing(client_alice):
    url = reverse("studio:routine_new")
    steps = [("t_echo", "", "{}"), ("t_wait", "", "{not json")]
    response = _builder_post(client_alice, url, steps, "save")
    assert response.status_code == 400
    assert "params not valid JSON" in response.content.decode()
    response = _builder_post(client_alice, url, [("t_echo", "", "[1]")], "save")
    assert response.status_code == 400 and "must be a JSON object" in response.content.decode()
    response = _builder_post(client_alice, url, [], "save")
    assert response.status_code == 400 and "at least one step" in response.content.decode()
    response = _builder_post(client_alice, url, [("t_echo", "", "{}")], "save", name="")
    assert response.status_code == 400
    assert Routine.objects.count() == 0


def test_builder_saves_and_edit_makes_a_new_version(client_alice, user):
    url = reverse("studio:routine_new")
    steps = [("t_echo", "Say", '{"x": 1}'), ("t_wait", "Ask", "{}")]
    response = client_alice.post(
        url,
        {
            "name": "Built",
            "op": "save",
            "step_key": ["a", "b"],
            "step_script": [s[0] for s in steps],
            "step_label": [s[1] for s in steps],
            "step_params": [s[2] for s in steps],
        },
    )
    routine = Routine.objects.get(name="Built")
    assert response.status_code == 302  # no htmx: a redirect
    assert [s["name"] for s in routine.snapshot()] == ["Say", "Ask"]
    assert routine.snapshot()[0]["params"] == {"x": 1}
    flow = api.start_flow(routine, user)
    edit = reverse("studio:routine_edit", args=[routine.pk])
    assert "has flows" in client_alice.get(edit).content.decode()
    response = _builder_post(
        client_alice, edit, [("t_echo", "Only", "{}")], "save", routine_version=routine.version
    )
    assert response.status_code == 200 and "version 2" in response.content.decode()
    routine.refresh_from_db()
    flow.refresh_from_db()
    assert routine.version == 2 and [s["name"] for s in routine.snapshot()] == ["Only"]
    assert [s["name"] for s in flow.steps] == ["Say", "Ask"]  # the flow kept its steps
    stale = _builder_post(client_alice, edit, [("t_echo", "", "{}")], "save", routine_version=1)
    assert stale.status_code == 409 and "changed" in stale.content.decode()


def test_preview_draws_the_steps(client_alice):
    response = client_alice.post(
        reverse("studio:routine_preview"),
        {"name": "P", "step_script": ["t_echo"], "step_label": ["Hello step"]},
        **HTMX,
    )
    assert response.status_code == 200 and "<svg" in response.content.decode()
    assert "Hello step" in response.content.decode()


# --- starting flows, the dashboard --------------------------------------------------------


def test_start_flow_with_data_and_bad_json(client_alice, user):
    routine = api.create_routine("R", ["t_echo"], owner=user)
    url = reverse("studio:routine_start", args=[routine.pk])
    bad = client_alice.post(url, {"initial_data": "{oops"})
    assert bad.status_code == 400 and "not valid JSON" in bad.content.decode()
    not_object = client_alice.post(url, {"initial_data": "[1, 2]"})
    assert not_object.status_code == 400 and "JSON object" in not_object.content.decode()
    assert Flow.objects.count() == 0
    response = client_alice.post(url, {"initial_data": '{"name": "Ada"}'})
    flow = Flow.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/flows/{flow.pk}/")
    assert flow.data == {"name": "Ada"}
    assert f"Flow #{flow.pk} started." in client_alice.get(response["Location"]).content.decode()
    partial = client_alice.post(url, {"initial_data": ""}, **HTMX)
    second = Flow.objects.exclude(pk=flow.pk).get()
    assert partial.status_code == 200 and partial["HX-Redirect"] == f"/flows/{second.pk}/"


def test_dashboard_lists_filters_and_searches(client_alice, user):
    waiting = _flow(user, "t_wait", name="Waits")
    done = _flow(user, "t_echo", name="Echoes")
    html = client_alice.get(reverse("studio:dashboard")).content.decode()
    assert f'id="flow-{waiting.pk}-row"' in html and f'id="flow-{done.pk}-row"' in html
    assert "need an answer" in html and "step 1 of 1" in html
    only_waiting = client_alice.get(reverse("studio:dashboard"), {"state": "waiting"}, **HTMX)
    html = only_waiting.content.decode()
    assert f"flow-{waiting.pk}-row" in html and f"flow-{done.pk}-row" not in html
    assert "<html" not in html  # htmx gets the table partial only
    html = client_alice.get(reverse("studio:dashboard"), {"q": "echoes"}).content.decode()
    assert f"flow-{done.pk}-row" in html and f"flow-{waiting.pk}-row" not in html
    mine = client_alice.get(reverse("studio:waiting")).content.decode()
    assert f"flow-{waiting.pk}-row" in mine and f"flow-{done.pk}-row" not in mine


def test_dashboard_empty_state(client_alice):
    assert "No flows yet" in client_alice.get(reverse("studio:dashboard")).content.decode()
    html = client_alice.get(reverse("studio:waiting")).content.decode()
    assert "Nothing waits for you" in html


def test_dashboard_queries_do_not_grow_with_flows(client_alice, user, make_user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    routine = api.create_routine("Many", ["t_wait"], owner=user)

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client_alice.get(reverse("studio:dashboard")).status_code == 200
        return len(ctx.captured_queries)

    api.start_flow(routine, user)
    few = count()
    for _ in range(12):
        api.start_flow(routine, user)
    assert count() == few


# --- a flow's page --------------------------------------------------------------------------


def test_flow_page_shows_diagram_results_timeline_and_input(client_alice, user):
    flow = _flow(user, "t_echo", "t_wait")
    html = client_alice.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    for element in ('id="flow-status"', 'id="flow-results"', 'id="flow-timeline"'):
        assert element in html
    assert 'id="flow-input"' in html and 'name="answer"' in html
    assert "<svg" in html and "need an answer" in html
    assert "flow.created" in html and "by alice" in html
    # the completed step is named by its own number, not by where the flow went next
    assert "step 1 done" in html and "at step 2" in html


def test_push_input_completes_the_flow(client_alice, user):
    flow = _flow(user, "t_wait")
    url = reverse("studio:flow_input", args=[flow.pk])
    response = client_alice.post(url, {"answer": "42", "version": flow.version}, **HTMX)
    assert response.status_code == 200 and 'id="flow-live"' in response.content.decode()
    flow.refresh_from_db()
    assert flow.state == FlowState.COMPLETE
    assert flow.results[0] == {"got": {"answer": 42}}


def test_push_json_input_validation_and_stale_page(client_alice, user):
    flow = _flow(user, "t_checked")  # waits, declares no input_fields: a JSON textarea
    url = reverse("studio:flow_input", args=[flow.pk])
    page = client_alice.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    assert 'name="input"' in page
    bad = client_alice.post(url, {"input": "{nope", "version": flow.version}, **HTMX)
    assert bad.status_code == 400 and "not valid JSON" in bad.content.decode()
    stale = client_alice.post(url, {"input": "{}", "version": flow.version + 7}, **HTMX)
    assert stale.status_code == 409 and "changed" in stale.content.decode()
    assert stale["HX-Retarget"] == "#flow-input-errors"
    plain = client_alice.post(url, {"input": "{nope", "version": flow.version})
    assert plain.status_code == 400 and "<html" in plain.content.decode()


def test_results_and_input_are_escaped(client_alice, user):
    evil = "<script>alert('x')</script>"
    routine = api.create_routine(
        "R", [{"script": "t_echo", "label": evil, "params": {"v": evil}}], owner=user
    )
    flow = api.start_flow(routine, user, {"note": evil})
    html = client_alice.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    assert evil not in html
    assert "&lt;script&gt;alert(" in html


def test_failed_flow_traceback_for_staff_only(client, user, make_user):
    flow = _flow(user, "t_raise")
    assert flow.state == FlowState.FAILED and flow.traceback
    client.force_login(user)
    html = client.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    assert "boom" in html and "Traceback" not in html
    assert "override-retry" in html and "override-skip" in html
    client.force_login(make_user("root", is_staff=True))
    html = client.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    assert "<summary>Traceback</summary>" in html


def test_live_area_answers_204_while_unchanged(client_alice, user):
    flow = _flow(user, "t_wait")
    url = reverse("studio:flow_live", args=[flow.pk])
    assert client_alice.get(url, {"version": flow.version}, **HTMX).status_code == 204
    changed = client_alice.get(url, {"version": flow.version - 1}, **HTMX)
    assert changed.status_code == 200 and 'id="flow-live"' in changed.content.decode()


# --- overrides ------------------------------------------------------------------------------


def _act(client, flow, action, **data):
    data.setdefault("version", flow.version)
    return client.post(reverse("studio:flow_act", args=[flow.pk, action]), data, **HTMX)


def test_confirm_fragment_previews_the_action(client_alice, user):
    flow = _flow(user, "t_echo", "t_wait", "t_echo")
    url = reverse("studio:flow_confirm", args=[flow.pk, "skip"])
    html = client_alice.get(url, {"version": flow.version}, **HTMX).content.decode()
    assert "Step 2 (T wait) is skipped" in html and "goes on with step 3" in html
    assert f'name="version" value="{flow.version}"' in html and "<html" not in html
    move = reverse("studio:flow_confirm", args=[flow.pk, "move"])
    html = client_alice.get(move).content.decode()
    assert "<html" in html and "1. T echo" in html and "Reason (required)" in html
    assert (
        client_alice.get(reverse("studio:flow_confirm", args=[flow.pk, "nuke"])).status_code == 404
    )


def test_kill_needs_a_reason_and_shows_in_timeline(client_alice, user):
    flow = _flow(user, "t_wait")
    missing = _act(client_alice, flow, "kill", reason="")
    assert missing.status_code == 400 and "required" in missing.content.decode()
    done = _act(client_alice, flow, "kill", reason="customer <b>left</b>")
    html = done.content.decode()
    assert done.status_code == 200 and "manual.kill" in html and "by alice" in html
    assert "customer &lt;b&gt;left&lt;/b&gt;" in html
    assert '<div id="flow-confirm" class="confirm-area" aria-live="polite"></div>' in html  # closed
    flow.refresh_from_db()
    assert flow.state == FlowState.KILLED


def test_stale_page_gets_409_and_no_double_action(client_alice, user):
    flow = _flow(user, "t_wait")
    seen = flow.version
    api.resume(flow, user)  # someone else acted meanwhile
    response = _act(client_alice, flow, "kill", reason="late", version=seen)
    assert response.status_code == 409 and "changed" in response.content.decode()
    assert response["HX-Retarget"] == "#flow-confirm-errors"
    flow.refresh_from_db()
    assert flow.state != FlowState.KILLED
    plain = client_alice.post(
        reverse("studio:flow_act", args=[flow.pk, "kill"]), {"version": seen, "reason": "x"}
    )
    assert plain.status_code == 409 and "Reload the flow" in plain.content.decode()


def test_state_error_is_409_with_its_message(client_alice, user):
    flow = _flow(user, "t_wait")
    response = _act(client_alice, flow, "retry")
    assert (
        response.status_code == 409
        and "only a failed, killed or retrying flow" in response.content.decode()
    )


def test_move_back_a_step_and_resume_and_skip(client_alice, user):
    flow = _flow(user, "t_echo", "t_wait")
    assert flow.position == 1
    bad = _act(client_alice, flow, "move", position="9", reason="back")
    assert bad.status_code == 400
    response = _act(client_alice, flow, "move", position="0", reason="redo the echo")
    assert response.status_code == 200 and "manual.move" in response.content.decode()
    flow.refresh_from_db()
    assert flow.state == FlowState.WAITING and flow.position == 1  # ran again up to the wait
    assert _act(client_alice, flow, "resume").status_code == 200
    flow.refresh_from_db()
    response = _act(client_alice, flow, "skip")
    flow.refresh_from_db()
    assert response.status_code == 200 and flow.state == FlowState.COMPLETE
    redirect = client_alice.post(
        reverse("studio:flow_act", args=[flow.pk, "move"]),
        {"version": flow.version, "position": "0", "reason": "again"},
    )
    assert redirect.status_code == 302


# Each action the studio may offer, called as the engine's service API is.
ENGINE_CALLS = {
    "input": lambda flow, user: api.push_input(flow.pk, {"approved": True}, user),
    "move": lambda flow, user: api.move_to(flow.pk, 0, user, reason="test"),
    "retry": lambda flow, user: api.retry(flow.pk, user),
    "skip": lambda flow, user: api.skip(flow.pk, user),
    "kill": lambda flow, user: api.kill_flow(flow.pk, user, reason="test"),
    "resume": lambda flow, user: api.resume(flow.pk, user),
}


def _flow_in(user, state):
    flow = _flow(user, "t_echo", "t_wait", "t_echo")
    Flow.objects.filter(pk=flow.pk).update(state=state)
    flow.refresh_from_db()
    return flow


@pytest.mark.parametrize("state", FlowState.values)
def test_offered_actions_are_the_ones_the_engine_accepts(client_alice, user, other_user, state):
    """`engine.api.available_actions` says which actions fit a state; the engine's own
    checks agree, and the flow's page offers exactly those."""
    for action, call in ENGINE_CALLS.items():
        flow = _flow_in(user, state)
        offered = api.available_actions(flow, user)
        assert api.available_actions(flow, other_user) == []
        try:
            call(flow, user)
        except api.FlowStateError as exc:
            assert action not in offered, f"{action} offered to a {state} flow: {exc}"
        else:
            assert action in offered, f"{action} accepted for a {state} flow, not offered"
    flow = _flow_in(user, state)
    offered = api.available_actions(flow, user)
    html = client_alice.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    for action in ENGINE_CALLS:
        shown = ('id="flow-input"' if action == "input" else f'id="override-{action}"') in html
        assert shown == (action in offered), (state, action)


def test_pretty_json_output_is_indented(client_alice, user):
    flow = _flow(user, "t_result_fields")
    html = client_alice.get(reverse("studio:flow_detail", args=[flow.pk])).content.decode()
    assert json.dumps({"a": 1, "b": "two"}, indent=2).replace('"', "&quot;") in html


# --- LTM pages ------------------------------------------------------------------------------


def test_ltm_list_and_diagram_with_clusters(client_alice):
    html = client_alice.get(reverse("studio:ltm_list")).content.decode()
    assert 'id="ltm-order_process"' in html and "<svg" in html
    html = client_alice.get(reverse("studio:ltm_detail", args=["order_process"])).content.decode()
    assert 'class="cluster"' in html  # the sub-machine is drawn as a cluster
    assert client_alice.get(reverse("studio:ltm_detail", args=["nope"])).status_code == 404


def test_ltm_run_start_fire_and_kill(client_alice, user):
    start = reverse("studio:ltm_start", args=["order_process"])
    bad = client_alice.post(start, {"payload": "[1]"})
    assert bad.status_code == 400 and "JSON object" in bad.content.decode()
    response = client_alice.post(start, {"payload": '{"order": "A-17"}'})
    assert response.status_code == 302
    run_url = response["Location"]
    html = client_alice.get(run_url).content.decode()
    run_id = run_url.rstrip("/").split("/")[-1]
    assert "<svg" in html and 'id="ltm-timeline"' in html and "run.created" in html
    global_state = LtmRun.objects.get(pk=run_id).global_state
    assert all(key in html for key in global_state)  # the global state is shown
    act = lambda action, **data: client_alice.post(  # noqa: E731
        reverse("studio:ltm_run_act", args=[run_id, action]), data, **HTMX
    )
    wrong = act("fire", label="no_such_label", payload="")
    assert wrong.status_code == 409 and "moves nothing" in wrong.content.decode()
    fired = act("fire", label="confirm", payload='{"by": "<i>ops</i>"}')
    assert fired.status_code == 200 and "manual.transition" in fired.content.decode()
    assert "&lt;i&gt;ops&lt;/i&gt;" in fired.content.decode()
    assert act("retry").status_code == 409  # nothing failed
    killed = act("kill", reason="stop")
    assert killed.status_code == 200 and "manual.kill" in killed.content.decode()
    assert act("kill", reason="again").status_code == 409


def test_ltm_run_page_fires_a_parameterised_label_with_params_and_a_namespace(client_alice, user):
    from engine.ltm.registry import discover

    discover()
    run_id = api.start_ltm("flou_pairs", user)
    fire = reverse("studio:ltm_run_act", args=[run_id, "fire"])

    bad = client_alice.post(fire, {"label": "next_{k}", "params": '"1"'}, **HTMX)
    assert bad.status_code == 400 and "list of objects" in bad.content.decode()
    fired = client_alice.post(fire, {"label": "next_{k}", "params": '[{"k": "1"}]'}, **HTMX)

    assert fired.status_code == 200
    statuses = {fqn: i.status for fqn, i in api.load_ltm(run_id).instances.items()}
    assert statuses["flou_pairs.first_1"] == "completed"
    assert statuses["flou_pairs.first_2"] == "active"  # the params chose the source
    run_id = api.start_ltm("flou_namespaces", user)
    fire = reverse("studio:ltm_run_act", args=[run_id, "fire"])
    fired = client_alice.post(fire, {"label": "start", "namespace": "global"}, **HTMX)
    assert fired.status_code == 200
    assert api.load_ltm(run_id).instances["flou_namespaces.side.after"].status == "active"
