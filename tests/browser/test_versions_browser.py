"""Routine versions in a real browser: a new version made in the builder (the kept steps keep
their identity), the versions page comparing any two versions side by side, and a waiting
flow moved onto the new version from its page — the preview shows both versions, the step
it goes on at (matched by identity) and its results — with htmx and without JavaScript.
Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import re

import pytest

from engine import api
from engine.models import Flow, FlowEvent, RoutineVersion
from tests.browser.conftest import sign_in, watch_console

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def settled(page) -> None:
    """Wait until htmx has settled what it swapped in (its new content reacts only then)."""
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"
    )


def _onboarding(user):
    """v1 of a routine, and a flow of it waiting at its second step."""
    routine = api.create_routine(
        "Supplier onboarding",
        [
            {"script": "t_echo", "label": "Fetch details"},
            {"script": "t_wait", "label": "Approve supplier"},
            {"script": "t_echo", "label": "Record decision"},
        ],
        owner=user,
        description="Checks a supplier before the first order.",
    )
    flow = api.start_flow(routine, user)
    assert Flow.objects.get(pk=flow.pk).state == "waiting"
    return routine, flow


def test_versions_page_and_moving_a_flow_onto_a_new_version(
    browser, live_server, user, shots, csp_violations
):
    from playwright.sync_api import expect

    routine, flow = _onboarding(user)
    base = live_server.url
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch_console(page, csp_violations)
    sign_in(page, base, "alice")

    # A new version in the builder: a sanctions check first, the last step's params changed.
    page.goto(f"{base}/routines/")
    page.click(f"#routine-{routine.pk} a:has-text('Edit')")
    page.wait_for_url(f"{base}/routines/{routine.pk}/edit/")
    page.click("#add-t_echo")
    expect(page.locator("#steps > li")).to_have_count(4)
    key = page.locator("#steps > li").nth(3).get_attribute("data-key")
    for _ in range(3):  # to the top, with its ↑ button (each click answers a new builder)
        with page.expect_response(lambda r: r.url.endswith("/edit/")):
            page.click(f"#up-{key}")
    new_step = page.locator("#steps > li").nth(0)
    expect(new_step.locator("input[name=step_script]")).to_have_value("t_echo")
    new_step.locator("input[name=step_label]").fill("Sanctions check")
    page.locator("#steps > li").nth(3).locator("textarea").fill('{"archive": true}')
    page.click("button[value=save]")
    expect(page.locator(".notice.ok")).to_contain_text("version 2")
    v1, v2 = (RoutineVersion.objects.get(routine=routine, number=n).steps for n in (1, 2))
    assert [s["key"] for s in v2[1:]] == [s["key"] for s in v1]  # identities kept

    # The versions page, from the builder: v1 and v2 side by side.
    page.click("#routine-versions")
    page.wait_for_url(f"{base}/routines/{routine.pk}/versions/")
    expect(page.locator("#version-list tbody tr")).to_have_count(2)
    expect(page.locator("#version-2")).to_contain_text("current")
    diff = page.locator("#version-diff")
    expect(diff.locator("tr.diff-added")).to_have_count(1)
    expect(diff.locator("tr.diff-added")).to_contain_text("Sanctions check")
    expect(diff.locator("tr.diff-changed")).to_contain_text("params changed: archive")
    expect(diff.locator("tr.diff-same")).to_have_count(2)
    shots(page, "versions")
    # Any two, either way round: the comparison swaps in place (and the address follows).
    page.select_option("#id_a", "2")
    expect(page).to_have_url(re.compile(r"a=2"))
    settled(page)
    page.select_option("#id_b", "1")
    expect(page).to_have_url(re.compile(r"a=2&b=1"))
    expect(page.locator("#version-diff tr.diff-removed")).to_contain_text("Sanctions check")
    shots(page, "versions-reversed")
    page.set_viewport_size({"width": 390, "height": 844})
    shots(page, "versions-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # The flow's page: move it onto v2; the preview maps its step by identity.
    page.goto(f"{base}/flows/{flow.pk}/")
    page.click("#override-change_version")
    confirm = page.locator("#flow-confirm")
    expect(confirm).to_contain_text("It will go on at step 3 (Approve supplier) of v2")
    expect(page.locator("#id_position")).to_have_value("2")
    expect(confirm).to_contain_text("Results kept: step 1 (Fetch details) → step 2")
    expect(confirm.locator("td.marked")).to_have_count(2)
    shots(page, "version-move-preview")
    # Another step chosen: the preview says so; back to the flow's own step.
    settled(page)
    page.select_option("#id_position", "0")
    expect(confirm).to_contain_text("the step you chose")
    settled(page)
    page.select_option("#id_position", "2")
    expect(confirm).to_contain_text("the same step")
    settled(page)
    page.click("#confirm-submit")  # no reason: refused in place
    expect(confirm.locator(".field-error")).to_contain_text("required")
    assert Flow.objects.get(pk=flow.pk).routine_version == 1
    settled(page)
    page.fill("#id_reason", "sanctions check is required from now on")
    page.click("#confirm-submit")
    page.wait_for_url(f"{base}/flows/{flow.pk}/")
    expect(page.locator(".messages")).to_contain_text("moved onto version 2")
    expect(page.locator("h1")).to_contain_text("v2")
    expect(page.locator("#flow-status")).to_contain_text("step 3 of 4")
    expect(page.locator("#flow-timeline")).to_contain_text("manual.change_version")
    expect(page.locator("#flow-timeline")).to_contain_text("sanctions check is required")
    shots(page, "version-moved")
    moved = Flow.objects.get(pk=flow.pk)
    assert (moved.routine_version, moved.position, moved.state) == (2, 2, "waiting")
    assert csp_violations == []


def test_moving_a_flow_onto_another_version_without_javascript(browser, live_server, user, shots):
    from playwright.sync_api import expect

    routine, flow = _onboarding(user)
    steps = RoutineVersion.objects.get(routine=routine, number=1).steps
    api.update_routine(
        routine,
        routine.name,
        [steps[0], {"script": "t_wait", "label": "Two approvers"}, steps[2]],
        user,
    )
    base = live_server.url
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, base, "alice")
    page.goto(f"{base}/flows/{flow.pk}/")
    page.click("#override-change_version")  # a link to the confirmation page
    page.wait_for_url(re.compile(r"/change-version/"))
    expect(page.locator("#version-move-preview")).to_contain_text("choose the step it goes on at")
    page.select_option("#id_position", "1")
    page.click("#version-preview")
    expect(page.locator("#version-move-preview")).to_contain_text("the step you chose")
    page.fill("#id_reason", "two approvers now")
    shots(page, "version-move-nojs")
    page.click("#confirm-submit")
    page.wait_for_url(f"{base}/flows/{flow.pk}/")
    expect(page.locator(".messages")).to_contain_text("moved onto version 2")
    event = FlowEvent.objects.get(flow=flow, kind="manual.change_version")
    assert event.message == "two approvers now" and event.data["mapped"] is False
    context.close()
