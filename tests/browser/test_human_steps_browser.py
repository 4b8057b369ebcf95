"""Human steps in a real browser, on the real daphne server with its engine: a typed form
(checkbox, number, date picker, select) refused with its errors and then accepted; an
approval assigned to the "approvers" group, which an approver sees arrive in the header's
notification count, decides from "Waiting for me" with a comment, while the owner's page
follows the flow live and the approver's count goes back to 0, all without a reload.
Screenshots go to artifacts/screenshots/human-steps-*.png."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from engine import api
from engine.models import Flow
from tests.browser.conftest import SCREENSHOTS, sign_in, watch_console
from tests.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.consumer]
WAIT = 60_000  # ms: a generous bound for the engine to act, not a speed check
DEADLINE = 3 * 3600 + 12 * 60 + 30  # seconds: "due in 3 h 12 min"


def shot(page, name: str) -> None:
    """A screenshot that leaves the caret as it is (Playwright would hide it with an inline
    style on every input, which the page's CSP refuses: see test_ltm_history_browser)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(
        path=str(SCREENSHOTS / f"human-steps-{name}.png"), full_page=True, caret="initial"
    )


def _waiting(flow_id: int) -> bool:
    return Flow.objects.get(pk=flow_id).state == "waiting"


def test_typed_form_is_refused_with_errors_then_accepted(browser, studio, user, csp_violations):
    from playwright.sync_api import expect

    routine = api.create_routine("Order", ["t_form", "t_echo"], owner=user)
    flow = api.start_flow(routine, user)
    assert wait_until(lambda: _waiting(flow.pk))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watch_console(page, csp_violations)
    sign_in(page, studio.origin, user.username)
    page.goto(f"{studio.origin}/flows/{flow.pk}/")
    expect(page.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)
    form = page.locator("#flow-input")
    expect(form.locator("input[name=approved]")).to_have_attribute("type", "checkbox")
    expect(form.locator("input[name=amount]")).to_have_attribute("type", "number")
    expect(form.locator("input[name=ship_on]")).to_have_attribute("type", "date")
    expect(form.locator("select[name=size]")).to_be_visible()
    expect(form).to_contain_text("Tick to approve")

    form.locator("input[name=amount]").fill("-3")
    form.locator("input[name=quantity]").fill("")
    form.locator("button[type=submit]").click()
    expect(form.locator(".field-error").first).to_be_visible()
    expect(form).to_contain_text("greater than or equal to 0")
    expect(form).to_contain_text("This field is required")
    expect(form.locator("input[name=amount]")).to_have_attribute("aria-invalid", "true")
    assert _waiting(flow.pk)
    shot(page, "typed-form-errors")

    form.locator("input[name=approved]").check()
    form.locator("input[name=amount]").fill("12.50")
    form.locator("input[name=ship_on]").fill("2030-01-02")
    form.locator("select[name=size]").select_option("l")
    form.locator("input[name=quantity]").fill("3")
    shot(page, "typed-form")
    form.locator("button[type=submit]").click()
    expect(page.locator("#flow-status .state")).to_contain_text("Complete", timeout=WAIT)
    expect(page.locator("#flow-results")).to_contain_text('"ship_on": "2030-01-02"')
    flow.refresh_from_db()
    assert flow.results[0] == {
        "approved": True,
        "amount": "12.50",
        "ship_on": "2030-01-02",
        "size": "l",
        "quantity": 3,
    }
    assert csp_violations == []
    context.close()


def test_an_approver_decides_from_the_waiting_list_while_the_owner_watches(
    browser, studio, user, make_user, csp_violations
):
    from playwright.sync_api import expect

    approver = make_user("approver")
    approver.groups.add(Group.objects.create(name="approvers"))
    step = {
        "script": "ask_approval",
        "label": "Manager approves",
        "params": {
            "question": "Approve the laptop purchase?",
            "assign_to": "approvers",
            "timeout": DEADLINE,
        },
    }
    routine = api.create_routine("Laptop purchase", ["t_echo", step], owner=user)

    # The approver is signed in, on the dashboard, with nothing waiting for them.
    theirs = browser.new_context(viewport={"width": 1280, "height": 900})
    desk = theirs.new_page()
    watch_console(desk, csp_violations)
    sign_in(desk, studio.origin, approver.username)
    count = desk.locator("#notification-count")
    expect(count).to_have_text("0")
    expect(desk.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)
    desk.evaluate("window.notReloaded = true")

    # The owner starts the flow: the step waits for the approvers, not for them.
    flow = api.start_flow(routine, user)
    assert wait_until(lambda: _waiting(flow.pk))
    mine = browser.new_context(viewport={"width": 1280, "height": 900})
    owner = mine.new_page()
    watch_console(owner, csp_violations)
    sign_in(owner, studio.origin, user.username)
    owner.goto(f"{studio.origin}/flows/{flow.pk}/")
    expect(owner.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)
    expect(owner.locator("#flow-waits-for")).to_contain_text("Waiting for approvers")
    expect(owner.locator("#flow-input")).to_have_count(0)
    expect(owner.locator("#override-kill")).to_be_visible()
    expect(owner.locator("#flow-assignees")).to_contain_text("approvers")
    expect(owner.locator("#flow-deadline")).to_contain_text("due in 3 h 12 min")
    expect(owner.locator("#notification-count")).to_have_text("0")
    owner.evaluate("window.notReloaded = true")
    shot(owner, "owner-waiting")

    # The approver's header counts it, live, without a reload.
    expect(count).to_have_text("1", timeout=WAIT)
    expect(count).to_have_class("count-badge has-unread")
    assert desk.evaluate("window.notReloaded") is True
    desk.click("#notifications-link")
    desk.wait_for_url(f"{studio.origin}/notifications/")
    notes = desk.locator("#notification-list")
    expect(notes).to_contain_text("Manager approves waits for you")
    expect(notes).to_contain_text("Approve the laptop purchase?")
    expect(notes.locator(f'a[href="/flows/{flow.pk}/"]')).to_be_visible()
    expect(notes).to_contain_text("● open")
    shot(desk, "notifications")

    # "Waiting for me": the decision, answered in place with a comment and an amount.
    desk.click("nav >> text=Waiting for me")
    desk.wait_for_url(f"{studio.origin}/waiting/")
    expect(desk.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)
    desk.evaluate("window.notReloaded = true")
    row = desk.locator(f"#flow-{flow.pk}-row")
    expect(row).to_contain_text("Approve the laptop purchase?")
    expect(row).to_contain_text("due in 3 h 12 min")
    row.locator("input[name=amount]").fill("1200")
    row.locator("input[name=amount]").press("Enter")  # decides nothing: no default button
    desk.wait_for_timeout(500)
    assert _waiting(flow.pk)
    row.locator("textarea[name=comment]").fill("Within the budget")
    shot(desk, "waiting-decision")
    desk.set_viewport_size({"width": 390, "height": 844})
    shot(desk, "waiting-decision-phone")
    desk.set_viewport_size({"width": 1280, "height": 900})
    row.locator("button[value=approve]").click()
    expect(desk.locator("#waiting-note")).to_contain_text(f"You approved flow #{flow.pk}.")
    expect(row).to_have_count(0)
    expect(desk.locator("#waiting-list")).to_contain_text("Nothing waits for you")
    expect(count).to_have_text("0", timeout=WAIT)  # live: the notification was cleared
    shot(desk, "waiting-answered")

    # Meanwhile the owner's page moved on by itself.
    expect(owner.locator("#flow-status .state")).to_contain_text("Complete", timeout=WAIT)
    event = owner.locator("#flow-timeline .event.kind-inputpushed")
    expect(event).to_contain_text("✓ Approved")
    expect(event).to_contain_text("by approver")
    expect(event).to_contain_text("Within the budget")
    expect(owner.locator("#flow-results")).to_contain_text('"amount": "1200"')
    shot(owner, "owner-approved")
    assert owner.evaluate("window.notReloaded") is True
    assert desk.evaluate("window.notReloaded") is True

    desk.goto(f"{studio.origin}/notifications/")
    expect(desk.locator("#notification-list")).to_contain_text("✓ cleared")
    assert csp_violations == []
    theirs.close()
    mine.close()
