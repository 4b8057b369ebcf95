"""Live updates in a real browser: the dashboard and a flow's page move by themselves, over
the websocket, with no reload and no polling; the input form appears when the flow waits."""

from __future__ import annotations

import pytest

from engine import api
from tests.browser.conftest import sign_in, watch_console

pytestmark = [pytest.mark.browser, pytest.mark.consumer]
WAIT = 60_000  # ms: a generous bound for the engine to act, not a speed check


def test_dashboard_and_flow_page_update_live(browser, studio, user, shots, csp_violations):
    from playwright.sync_api import expect

    steps = [{"script": "t_sleep", "params": {"sleep": 1.5}}, "t_wait"]
    steps += [{"script": "t_sleep", "params": {"sleep": 0.4}}] * 3
    routine = api.create_routine("Live demo", steps, owner=user)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    dashboard = context.new_page()
    watch_console(dashboard, csp_violations)
    polls: list[str] = []
    context.on("request", lambda r: polls.append(r.url) if "/live/" in r.url else None)
    sign_in(dashboard, studio.origin, user.username)
    expect(dashboard.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)

    flow = api.start_flow(routine, user)  # started elsewhere: the row appears by itself
    row = dashboard.locator(f"#flow-{flow.pk}-row")
    expect(row).to_contain_text("Running", timeout=WAIT)
    dashboard.evaluate("window.notReloaded = true")

    page = context.new_page()
    watch_console(page, csp_violations)
    page.goto(f"{studio.origin}/flows/{flow.pk}/")
    expect(page.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)
    page.evaluate("window.notReloaded = true")
    expect(page.locator("#flow-input")).to_have_count(0)
    shots(page, "running")
    # The first step ends and the flow waits: the input form appears without a reload.
    expect(page.locator("#flow-input")).to_be_visible(timeout=WAIT)
    expect(page.locator("#flow-status")).to_contain_text("need an answer")
    expect(row).to_contain_text("Waiting", timeout=WAIT)
    shots(page, "waiting")
    shots(dashboard, "dashboard-waiting")

    page.fill("#flow-input [name=answer]", "42")
    page.locator("#flow-input button[type=submit]").click()
    expect(page.locator("#flow-input")).to_have_count(0, timeout=WAIT)
    expect(page.locator("#flow-status")).to_contain_text("Complete", timeout=WAIT)
    expect(page.locator("#flow-results")).to_contain_text('"got"')
    expect(row).to_contain_text("Complete", timeout=WAIT)
    shots(page, "complete")
    shots(dashboard, "dashboard-complete")

    assert page.evaluate("window.notReloaded") is True
    assert dashboard.evaluate("window.notReloaded") is True
    assert polls == [], f"the pages polled while live: {polls}"
    assert csp_violations == []
    context.close()
