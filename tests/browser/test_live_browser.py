"""Live updates in a real browser: the dashboard and a flow's page move by themselves, over
the websocket, with no reload and no polling; the input form appears when the flow waits."""

from __future__ import annotations

import pytest

from engine import api
from engine.models import Flow, LtmRun
from tests.browser.conftest import sign_in, watch_console
from tests.conftest import wait_until

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


def test_open_pages_catch_up_after_a_server_restart(browser, studio, user):
    """The server stops; while it is down a flow is killed, an LTM run killed and a flow
    started — their messages reach no one — and it starts again on the same port. Every open
    page (the dashboard, "waiting for me", the flow's page, the run's page) reconnects, says
    what it shows and comes to the database's state, without a reload. (The dashboard does not
    poll at all: only what its socket brings on reconnecting can change it.)"""
    from playwright.sync_api import expect

    flow = api.start_flow(api.create_routine("Restart", ["t_wait"], owner=user), user)
    run_id = api.start_ltm("park_ltm", user)
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "waiting")
    assert wait_until(lambda: LtmRun.objects.get(pk=run_id).state == "complete")
    later = api.create_routine("Started while down", ["t_wait"], owner=user)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    dashboard = context.new_page()
    sign_in(dashboard, studio.origin, user.username)
    waiting, page, run_page = context.new_page(), context.new_page(), context.new_page()
    waiting.goto(f"{studio.origin}/waiting/")
    page.goto(f"{studio.origin}/flows/{flow.pk}/")
    run_page.goto(f"{studio.origin}/ltm-runs/{run_id}/")
    pages = [dashboard, waiting, page, run_page]
    for each in pages:
        expect(each.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)
        each.evaluate("window.notReloaded = true")
    row, waiting_row = (p.locator(f"#flow-{flow.pk}-row") for p in (dashboard, waiting))
    expect(row).to_contain_text("Waiting")
    expect(waiting_row).to_contain_text("Waiting")
    expect(page.locator("#flow-input")).to_be_visible()
    expect(run_page.locator("#ltm-status")).not_to_contain_text("Killed")

    studio.stop()
    for each in pages:
        expect(each.locator("#live-indicator")).to_have_text("Offline", timeout=WAIT)
    api.kill_flow(flow, user, reason="while the server was down")
    api.kill_ltm(run_id, user, reason="while the server was down")
    started = api.start_flow(later, user)
    studio.start()  # the same port: the pages reconnect by themselves

    for each in pages:
        expect(each.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)
    expect(row).to_contain_text("Killed", timeout=WAIT)
    # "Waiting for me" fetches its list again on reconnecting: the killed flow waits no more
    expect(waiting_row).to_have_count(0, timeout=WAIT)
    expect(page.locator("#flow-status")).to_contain_text("Killed", timeout=WAIT)
    expect(page.locator("#flow-input")).to_have_count(0)
    expect(run_page.locator("#ltm-status")).to_contain_text("Killed", timeout=WAIT)
    new_row = dashboard.locator(f"#flow-{started.pk}-row")
    expect(new_row).to_contain_text("Started while down", timeout=WAIT)
    expect(new_row).to_contain_text("Waiting", timeout=WAIT)
    for each in pages:
        assert each.evaluate("window.notReloaded") is True
    context.close()
