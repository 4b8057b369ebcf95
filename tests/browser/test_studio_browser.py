"""The studio in a real browser, with a real engine consumer: build a routine, run flows,
push input, override by hand, open an LTM; with JavaScript off the core forms still work.
Screenshots of each page go to artifacts/screenshots/."""

from __future__ import annotations

import json
import re

import pytest

from engine import api
from engine.flows.status import FlowState
from engine.models import Flow, Routine
from tests.browser.conftest import sign_in, watch_console

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
WAIT = 60_000  # ms: a generous bound for the engine consumer to act, not a speed check


def _steps(page) -> list[str]:
    return page.locator("#steps input[name=step_script]").evaluate_all(
        "els => els.map(e => e.value)"
    )


def _state(page):
    from playwright.sync_api import expect

    return expect(page.locator("#flow-status .state"))


def test_studio_end_to_end(browser, live_server, consumer, user, shots, csp_violations):
    from playwright.sync_api import expect

    base = live_server.url
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch_console(page, csp_violations)
    sign_in(page, base, "alice")
    expect(page.locator(".empty")).to_contain_text("No flows yet")
    shots(page, "dashboard-empty")

    # Build a 3-step routine from the palette, with a waiting step.
    page.goto(f"{base}/routines/new/")
    page.fill("#id_name", "Browser onboarding")
    for script in ("greet", "t_echo", "ask_approval"):
        count = len(_steps(page))
        page.click(f"#add-{script}")
        expect(page.locator("#steps > li")).to_have_count(count + 1)
    assert _steps(page) == ["greet", "t_echo", "ask_approval"]
    # Keyboard alternative to drag and drop: focus ↑ of the last step, press Enter.
    last_up = page.locator("#steps > li").nth(2).locator("button[id^=up-]")
    last_up.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#steps > li").nth(1).locator("input[name=step_script]")).to_have_value(
        "ask_approval"
    )
    # Drag and drop: the echo step back to the end.
    # The drop reorders at once and then asks the server to renumber the steps: wait for its
    # answer before typing, or the swap that follows replaces what was typed.
    with page.expect_response(lambda r: r.url.endswith("/routines/new/")):
        page.locator("#steps > li").nth(2).drag_to(page.locator("#steps > li").nth(1))
    expect(page.locator("#steps > li").nth(1).locator("input[name=step_script]")).to_have_value(
        "t_echo"
    )
    assert _steps(page) == ["greet", "t_echo", "ask_approval"]
    page.locator("#steps > li").nth(2).locator("input[name=step_label]").fill("Manager approves")
    page.locator("#steps > li").nth(2).locator("textarea").fill("{broken")
    page.click("button[value=save]")
    expect(page.locator(".field-error").first).to_contain_text("not valid JSON")
    assert not Routine.objects.filter(name="Browser onboarding").exists()
    page.locator("#steps > li").nth(2).locator("textarea").fill('{"question": "OK to proceed?"}')
    page.locator("#id_description").click()  # leaving the field updates the preview
    expect(page.locator("#routine-preview svg")).to_contain_text("Manager approves")
    page.click("button[value=save]")
    expect(page.locator(".notice.ok")).to_contain_text("version 1")
    shots(page, "routine-builder")
    routine = Routine.objects.get(name="Browser onboarding")

    # Start a flow with initial data; it waits for approval.
    page.goto(f"{base}/routines/")
    shots(page, "routines")
    page.locator(f"#routine-{routine.pk} a", has_text="Start a flow").click()
    page.fill("#id_initial_data", json.dumps({"name": "Ada"}))
    page.click("#start-form button[type=submit]")
    page.wait_for_url(re.compile(r"/flows/\d+/$"))  # straight to the new flow's page
    expect(page.locator(".messages")).to_contain_text("started")
    _state(page).to_contain_text("Waiting", timeout=WAIT)
    expect(page.locator("#flow-status")).to_contain_text("OK to proceed?")
    shots(page, "flow-waiting")

    # Decide: the step is a decision (Approve / Reject; not assigned, so its owner decides).
    page.fill("#flow-input textarea[name=comment]", "looks right")
    page.click("#flow-input button[value=approve]")
    _state(page).to_contain_text("Complete", timeout=WAIT)
    expect(page.locator("#flow-results")).to_contain_text("Hello, Ada!")
    expect(page.locator("#flow-timeline")).to_contain_text("input.pushed")
    expect(page.locator("#flow-timeline")).to_contain_text("✓ Approved")
    expect(page.locator("#flow-timeline")).to_contain_text("looks right")
    shots(page, "flow-complete")

    # Kill another flow with a reason: confirmation first, then the timeline shows it.
    other = api.start_flow(routine, user)
    page.goto(f"{base}/flows/{other.pk}/")
    _state(page).to_contain_text("Waiting", timeout=WAIT)
    page.click("#override-kill")
    expect(page.locator("#flow-confirm")).to_contain_text("The flow ends as KILLED")
    page.click("#confirm-submit")  # no reason: refused in place
    expect(page.locator("#flow-confirm .field-error")).to_be_visible()
    page.fill("#id_reason", "customer cancelled")
    shots(page, "flow-kill-confirm")
    page.click("#confirm-submit")
    _state(page).to_contain_text("Killed")
    expect(page.locator("#flow-timeline .event").first).to_contain_text("manual.kill")
    expect(page.locator("#flow-timeline .event").first).to_contain_text("by alice")
    expect(page.locator("#flow-timeline")).to_contain_text("customer cancelled")
    expect(page.locator("#flow-confirm")).to_be_empty()
    shots(page, "flow-killed")

    # Move it back a step (to the echo step); it runs on and waits again.
    page.click("#override-move")
    page.select_option("#id_position", "1")
    page.fill("#id_reason", "redo the echo")
    page.click("#confirm-submit")
    expect(page.locator("#flow-timeline")).to_contain_text("manual.move")
    _state(page).to_contain_text("Waiting", timeout=WAIT)
    assert Flow.objects.get(pk=other.pk).state == FlowState.WAITING
    shots(page, "flow-moved")

    # A stale confirmation: the flow changes after it opened; the kill answers "changed".
    page.click("#override-kill")
    expect(page.locator("#flow-confirm")).to_contain_text("The flow ends as KILLED")
    api.resume(other, user)
    page.fill("#id_reason", "late")
    page.click("#confirm-submit")
    expect(page.locator("#flow-confirm")).to_contain_text("changed since you loaded")
    assert not Flow.objects.get(pk=other.pk).events.filter(message="late").exists()

    # The dashboard, on a laptop and on a phone.
    page.goto(f"{base}/")
    expect(page.locator(f"#flow-{other.pk}-row")).to_be_visible()
    shots(page, "dashboard")
    page.set_viewport_size({"width": 390, "height": 844})
    shots(page, "dashboard-phone")
    page.goto(f"{base}/flows/{other.pk}/")
    shots(page, "flow-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # An LTM's diagram, and a run of it.
    page.goto(f"{base}/ltms/")
    shots(page, "ltms")
    page.goto(f"{base}/ltms/order_process/")
    expect(page.locator(".diagram svg .cluster").first).to_be_attached()
    shots(page, "ltm-diagram")
    page.click("#start-ltm")
    expect(page.locator("#ltm-run-live .diagram svg")).to_be_visible()
    shots(page, "ltm-run")
    assert csp_violations == []


def test_core_forms_work_without_javascript(browser, live_server, user, shots):
    from playwright.sync_api import expect

    base = live_server.url
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, base, "alice")
    routine = api.create_routine("No JS", ["t_echo", "t_wait"], owner=user)
    page.goto(f"{base}/routines/{routine.pk}/start/")
    page.fill("#id_initial_data", "{}")
    page.click("#start-form button[type=submit]")
    page.wait_for_url(re.compile(r"/flows/\d+/$"))
    flow = Flow.objects.get(routine=routine)
    page.click("#override-kill")  # a link to the confirmation page
    page.wait_for_url(re.compile(r"/confirm/kill/"))
    page.fill("#id_reason", "no js needed")
    page.click("#confirm-submit")
    page.wait_for_url(f"{base}/flows/{flow.pk}/")
    expect(page.locator("#flow-timeline")).to_contain_text("no js needed")
    shots(page, "flow-killed-nojs")
    context.close()
