"""A clean console on every page a user visits, on the real daphne server with its engine:
no console error, no Content-Security-Policy violation and no failed request (a missing
favicon, say) on the main pages, each after at least one htmx swap where the page has one.
The swaps follow a textarea the user resized (the browser keeps its size as an inline style,
which htmx's settling must not copy: the CSP refuses inline styles). The live indicator shows
only on pages with live content. (No screenshots here: Playwright's caret hiding leaves
inline styles of its own behind.)"""

from __future__ import annotations

import re

import pytest

from engine import api
from engine.models import Flow, LtmRun
from tests.browser.conftest import sign_in
from tests.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.consumer]
WAIT = 60_000  # ms: a generous bound for the engine to act, not a speed check

# What the page says when it loads: a CSP violation reaches the console this way too.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", function (event) {
  console.error("CSP violation: " + event.violatedDirective + " " + event.blockedURI + " "
                + event.sourceFile + ":" + event.lineNumber);
});
"""


def _resize(page, selector: str) -> None:
    """Drag a textarea's resize handle, as a user does: the browser sets its inline size."""
    page.locator(selector).evaluate("el => el.scrollIntoView({block: 'center'})")
    box = page.locator(selector).bounding_box()
    x, y = box["x"] + box["width"] - 3, box["y"] + box["height"] - 3
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x, y + 60, steps=5)
    page.mouse.up()
    assert "height" in (page.locator(selector).get_attribute("style") or "")


def test_main_pages_leave_the_console_clean(browser, studio, user):
    from playwright.sync_api import expect

    waiting = api.start_flow(api.create_routine("Waits", ["t_wait"], owner=user), user)
    complete = api.start_flow(api.create_routine("Echoes", ["t_echo"], owner=user), user)
    assert wait_until(lambda: Flow.objects.get(pk=waiting.pk).state == "waiting")
    assert wait_until(lambda: Flow.objects.get(pk=complete.pk).state == "complete")
    origin = studio.origin

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(REPORT_VIOLATIONS)
    problems: list[str] = []
    where = {"page": "sign-in"}

    def on_console(message) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            problems.append(f"{where['page']}: console {message.type}: {message.text}")

    def on_response(response) -> None:
        if response.status >= 400:
            problems.append(f"{where['page']}: HTTP {response.status} {response.url}")

    def on_failed(request) -> None:
        # A request the page itself cancelled by leaving (a poll, say) is no failure.
        if "ERR_ABORTED" not in (request.failure or ""):
            problems.append(f"{where['page']}: failed {request.url}: {request.failure}")

    context.on("response", on_response)
    context.on("requestfailed", on_failed)
    page = context.new_page()
    page.on("console", on_console)
    indicator = page.locator("#live-indicator")

    def visit(name: str, path: str, live: bool) -> None:
        """Open a page: the live indicator says "Live" where the page has live content (`live`)
        and is hidden elsewhere."""
        where["page"] = name
        page.goto(f"{origin}{path}")
        if live:
            expect(indicator).to_have_text("Live", timeout=WAIT)
        else:
            expect(indicator).to_be_hidden()

    sign_in(page, origin, user.username)

    # Flows: filter (an htmx swap of the table).
    visit("dashboard", "/", live=True)
    page.select_option("#id_state", "waiting")
    expect(page.locator("#flow-table")).not_to_contain_text("Echoes")
    expect(page.locator(f"#flow-{waiting.pk}-row")).to_be_visible()

    visit("waiting for me", "/waiting/", live=True)
    expect(page.locator("main")).to_contain_text("Waits")

    # A flow's page, waiting and complete: open an override's confirmation (htmx).
    visit("waiting flow", f"/flows/{waiting.pk}/", live=True)
    page.click("#override-kill")
    expect(page.locator("#flow-confirm")).to_contain_text("KILLED")
    page.locator("#flow-confirm .js-dismiss").click()
    expect(page.locator("#flow-confirm")).to_be_empty()

    visit("complete flow", f"/flows/{complete.pk}/", live=True)
    page.click("#override-move")
    expect(page.locator("#flow-confirm select")).to_be_visible()

    # Routines, the builder (a resized params field, then steps added: htmx swaps) and the
    # start form, which goes to the new flow's page.
    visit("routines", "/routines/", live=False)
    visit("builder", "/routines/new/", live=False)
    page.fill("#id_name", "Console check")
    page.click("#add-t_echo")
    expect(page.locator("#steps > li")).to_have_count(1)
    _resize(page, "#steps textarea[name=step_params]")
    page.click("#add-t_wait")
    expect(page.locator("#steps > li")).to_have_count(2)
    expect(page.locator("#routine-preview svg")).to_be_visible()

    visit("start form", f"/routines/{waiting.routine_id}/start/", live=False)
    page.fill("#id_initial_data", '{"name": "Ada"}')
    page.click("#start-form button[type=submit]")
    page.wait_for_url(re.compile(r"/flows/\d+/$"))
    where["page"] = "started flow"
    expect(indicator).to_have_text("Live", timeout=WAIT)
    expect(page.locator("#flow-status")).to_contain_text("Waiting", timeout=WAIT)

    # LTMs: the list, one LTM (start a run), the run's page (a resized payload field, then a
    # transition fired: an htmx swap of its live area).
    visit("LTMs", "/ltms/", live=False)
    visit("LTM", "/ltms/park_ltm/", live=False)
    expect(page.locator(".diagram svg")).to_be_visible()
    page.click("#start-ltm")
    page.wait_for_url(re.compile(r"/ltm-runs/[0-9a-f-]+/$"))
    where["page"] = "LTM run"
    expect(indicator).to_have_text("Live", timeout=WAIT)
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    assert wait_until(lambda: LtmRun.objects.get(pk=run_id).state == "complete")
    # The area shows the run as it is (no pushed update is due to replace the field).
    seq = str(LtmRun.objects.get(pk=run_id).seq)
    expect(page.locator("#ltm-run-live")).to_have_attribute("data-seq", seq, timeout=WAIT)
    _resize(page, "#id_payload")
    page.fill("#id_label", "release")
    page.click("#ltm-controls button[type=submit].primary")
    expect(page.locator("#id_label")).to_have_value("")  # the live area came back, fresh
    expect(page.locator("#ltm-run-live")).to_contain_text(re.compile("released", re.I))

    visit("tokens", "/tokens/", live=False)

    # Schedules: the cron hint as it is typed (htmx), a schedule created, a confirmation
    # opened and dismissed.
    visit("schedules", "/schedules/", live=False)
    page.select_option("#id_routine", label="Echoes")
    page.fill("#id_cron", "@yearly")
    expect(page.locator("#cron-hint")).to_contain_text("only in January")
    page.click("#create-schedule")
    expect(page.locator(".messages")).to_contain_text("created")
    page.locator("[id^=pause-]").first.click()
    expect(page.locator("#schedule-confirm")).to_contain_text("Pause the schedule?")
    page.locator("#schedule-confirm .js-dismiss").click()
    expect(page.locator("#schedule-confirm")).to_be_empty()

    where["page"] = "favicon"
    answer = page.goto(f"{origin}/favicon.ico")
    assert answer is not None and answer.ok
    assert answer.headers["content-type"].startswith("image/svg+xml")

    context.close()
    assert problems == []
