"""An LTM run's history in a real browser, on the real daphne server with its engine: the
slider and the event log show the run as it was after an earlier event, "Roll back to here…"
asks for a reason and rolls back, and other pages watching the run follow live — one showing
the run now moves to the rolled-back state, one showing the past keeps it (its "of M" follows)
until "Back to now". Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import re

import pytest

from engine import api
from engine.models import LtmEvent, LtmExecution, LtmRun
from tests.browser.conftest import SCREENSHOTS, in_front, sign_in, watch_console
from tests.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.consumer]
WAIT = 60_000  # ms: a generous bound for the engine to act, not a speed check


def shot(page, name: str) -> None:
    """A screenshot under artifacts/screenshots/. Unlike the `shots` fixture's, it leaves the
    caret as it is: to hide it Playwright sets an inline style on every input (left behind as
    `style=""`), which htmx's settling of a swapped element with the same id then copies back
    — an inline style the page's CSP refuses, and this test counts CSP violations."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    in_front(page)
    page.screenshot(
        path=str(SCREENSHOTS / f"ltm-history-{name}.png"), full_page=True, caret="initial"
    )


def _settled(run_id: str, fqn: str) -> bool:
    run = LtmRun.objects.get(pk=run_id)
    return run.state == "complete" and run.instances.filter(fqn=fqn, status="active").exists()


def test_history_view_rollback_and_watchers_follow(browser, studio, user, csp_violations):
    from playwright.sync_api import expect

    run_id = api.start_ltm("flou_pairs", user)
    assert wait_until(lambda: _settled(run_id, "flou_pairs.first_2"))
    started = LtmRun.objects.get(pk=run_id).seq
    api.fire_transition(run_id, "next_{k}", user, params=[{"k": "1"}])
    assert wait_until(lambda: _settled(run_id, "flou_pairs.second_1"))
    now = LtmRun.objects.get(pk=run_id).seq
    url = f"{studio.origin}/ltm-runs/{run_id}/"

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watch_console(page, csp_violations)
    sign_in(page, studio.origin, user.username)
    watcher, past_watcher = context.new_page(), context.new_page()
    for each in (watcher, past_watcher):
        watch_console(each, csp_violations)
    pages = [page, watcher, past_watcher]
    for each in pages:
        each.goto(url)
        expect(each.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)
        expect(each.locator("#ltm-run-live")).to_have_attribute("data-seq", str(now))
        each.evaluate("window.notReloaded = true")
    in_front(page)  # the watchers opened after it
    live_states = page.locator("#ltm-run-live table")
    expect(live_states).to_contain_text("flou_pairs.second_1")

    # The slider, by keyboard: Home goes to the first event; the past view replaces the live
    # area in place and keeps the focus on its own slider.
    slider = page.locator("#history-now")
    expect(slider).to_have_attribute("max", str(now))
    slider.focus()
    page.keyboard.press("Home")
    banner = page.locator("#past-h")
    expect(banner).to_contain_text(f"Viewing the run as it was after event 1 of {now}")
    expect(page.locator("#ltm-run-live")).to_be_hidden()
    expect(page.locator("#history-past")).to_be_focused()
    expect(page.locator("#history-past")).to_have_value("1")
    expect(page).to_have_url(f"{url}?at=1")

    # A click on an earlier event of the log: the run right after the start.
    page.locator(f"#ltm-past a.at-link[href$='?at={started}']").click()
    expect(banner).to_contain_text(f"Viewing the run as it was after event {started} of {now}")
    past_states = page.locator("#past-states")
    expect(past_states).to_contain_text("flou_pairs.first_1")
    expect(past_states).not_to_contain_text("flou_pairs.second_1")
    expect(page.locator("#ltm-past .diagram svg")).to_be_visible()
    expect(page.locator("#ltm-past .event.is-viewed")).to_contain_text(f"#{started}")
    shot(page, "history")

    # The other past watcher looks at the same event (through the address, without htmx).
    past_watcher.goto(f"{url}?at={started}")
    expect(past_watcher.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)
    expect(past_watcher.locator("#past-h")).to_contain_text(f"after event {started} of {now}")
    past_watcher.evaluate("window.notReloaded = true")

    # Roll back to here…: the confirmation says what will happen and wants a reason.
    page.locator("#history-rollback").click()
    confirm = page.locator("#history-confirm-rollback")
    expect(confirm).to_contain_text(f"The run goes back to how it was after event {started}")
    expect(confirm).to_contain_text("the rollback can itself be rolled back")
    expect(page.locator("#id_history_reason")).to_be_focused()
    page.locator("#history-confirm-submit").click()  # no reason: refused beside the field
    expect(page.locator("#history-reason-errors")).to_be_visible()
    expect(page.locator("#id_history_reason")).to_be_focused()
    assert LtmRun.objects.get(pk=run_id).seq == now
    page.locator("#history-confirm-rollback .js-dismiss").click()  # Cancel closes it
    expect(page.locator("#history-confirm-rollback")).to_have_count(0)
    page.locator("#history-rollback").click()
    page.fill("#id_history_reason", "undo <next_1> for the demo")
    shot(page, "confirm")
    page.locator("#history-confirm-submit").click()

    # The page shows the run now, rolled back: the past view closed, the live area back.
    expect(page.locator("#ltm-notice")).to_have_text(f"Rolled back to event {started}.")
    expect(page.locator("#ltm-past")).not_to_have_class(re.compile("viewing"))
    expect(page.locator("#ltm-run-live")).to_be_visible()
    expect(live_states).not_to_contain_text("flou_pairs.second_1")
    rollback = LtmEvent.objects.get(run_id=run_id, kind="rollback")
    assert rollback.actor == user and rollback.data["reason"] == "undo <next_1> for the demo"
    latest = LtmRun.objects.get(pk=run_id).seq
    expect(page.locator("#history-now")).to_have_attribute("max", str(latest))
    expect(page.locator(f"#ltm-event-{rollback.seq}")).to_contain_text("undo <next_1> for the demo")
    shot(page, "rolled-back")
    expect(page.locator("#ltm-run-live")).to_have_attribute("data-seq", str(latest))
    expect(page.locator("#ltm-notice")).to_be_visible()  # the live update leaves it

    # The watcher showing the run now follows live, without a reload.
    expect(watcher.locator(f"#ltm-event-{rollback.seq}")).to_contain_text("rollback", timeout=WAIT)
    expect(watcher.locator("#ltm-run-live table")).not_to_contain_text("flou_pairs.second_1")
    expect(watcher.locator("#ltm-run-live")).to_have_attribute("data-seq", str(latest))

    # The one showing the past keeps it; its "of M" and the slider's end follow the run, and
    # "Back to now" shows the latest at once.
    expect(past_watcher.locator("#past-h")).to_contain_text(
        f"after event {started} of {latest}", timeout=WAIT
    )
    expect(past_watcher.locator(".js-moved-on")).to_be_visible()
    expect(past_watcher.locator("#history-past")).to_have_attribute("max", str(latest))
    expect(past_watcher.locator("#ltm-run-live")).to_be_hidden()
    in_front(past_watcher)
    past_watcher.locator("#history-back").click()
    expect(past_watcher.locator("#ltm-run-live")).to_be_visible()
    expect(past_watcher.locator(f"#ltm-event-{rollback.seq}")).to_contain_text("rollback")
    expect(past_watcher).to_have_url(url)

    for each in pages:
        assert each.evaluate("window.notReloaded") is True
    assert csp_violations == []
    context.close()


@pytest.mark.django_db(transaction=True)
def test_rollback_while_a_state_executes_asks_to_discard_it(
    browser, live_server, user, csp_violations
):
    """The confirmation names what is executing now and wants the explicit box ticked: the
    rollback is refused (409, said in the confirmation) until it is. (Huey in immediate mode,
    the run's execution marked as claimed by hand; no websocket: the page is offline.)"""
    from playwright.sync_api import expect

    run_id = api.start_ltm("flou_pairs", user)
    started = LtmRun.objects.get(pk=run_id).seq
    api.fire_transition(run_id, "next_{k}", user, params=[{"k": "1"}])
    LtmExecution.objects.filter(run_id=run_id, fqn="flou_pairs.second_1").update(status="claimed")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch_console(page, csp_violations)
    sign_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}/ltm-runs/{run_id}/?at={started}")
    page.locator("#history-rollback").click()
    expect(page.locator("#history-running")).to_contain_text("flou_pairs.second_1 is executing now")
    page.fill("#id_history_reason", "the second step went wrong")
    page.locator("#history-confirm-submit").click()
    errors = page.locator("#history-confirm-errors")
    expect(errors).to_contain_text("is executing now")
    expect(page.locator("#id_history_reason")).to_have_value("the second step went wrong")
    page.locator("#id_discard_running").check()
    shot(page, "confirm-running")
    page.locator("#history-confirm-submit").click()
    expect(page.locator("#ltm-notice")).to_have_text(f"Rolled back to event {started}.")
    expect(page.locator("#ltm-run-live table")).not_to_contain_text("flou_pairs.second_1")
    rollback = LtmEvent.objects.get(run_id=run_id, kind="rollback")
    assert rollback.data["discarded"] == ["flou_pairs.second_1"]
    assert csp_violations == []
    page.close()


@pytest.mark.django_db(transaction=True)
def test_history_works_without_javascript(browser, live_server, user):
    """With JavaScript off every step is a page: an event's number opens the run as it was
    then (?at=N), "Roll back to here…" the page with the confirmation, the form rolls back
    and the run's page says so; the slider's form shows another event with its button."""
    from playwright.sync_api import expect

    run_id = api.start_ltm("flou_pairs", user)
    started = LtmRun.objects.get(pk=run_id).seq
    api.fire_transition(run_id, "next_{k}", user, params=[{"k": "1"}])
    base = f"{live_server.url}/ltm-runs/{run_id}/"

    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, live_server.url, user.username)
    page.goto(base)
    page.locator(f"#ltm-event-{started} a.at-link").click()
    page.wait_for_url(f"{base}?at={started}")
    expect(page.locator("#past-h")).to_contain_text(f"after event {started}")
    expect(page.locator("#ltm-run-live")).to_be_hidden()
    expect(page.locator("#past-states")).not_to_contain_text("flou_pairs.second_1")
    page.locator("#history-rollback").click()
    page.wait_for_url(re.compile(rf"/at/{started}/rollback/\?seen="))
    page.fill("#id_history_reason", "no js needed")
    page.locator("#history-confirm-submit").click()
    page.wait_for_url(base)
    expect(page.locator(".messages")).to_contain_text(f"Rolled back to event {started}.")
    expect(page.locator("#ltm-timeline")).to_contain_text("no js needed")
    expect(page.locator("#ltm-run-live table")).not_to_contain_text("flou_pairs.second_1")
    # The slider's form: its button shows the event it is set to.
    page.locator("#history-now").evaluate("el => { el.value = '1'; }")
    page.locator("#history-now-show").click()
    page.wait_for_url(f"{base}?at=1")
    expect(page.locator("#past-h")).to_contain_text("after event 1 of")
    context.close()


@pytest.mark.django_db(transaction=True)
def test_a_new_run_page_shows_now(browser, live_server, user, csp_violations):
    """Starting a run from an LTM's page lands on the run now: the live area with its
    diagram and the history slider at the last event, no past view."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch_console(page, csp_violations)
    sign_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}/ltms/order_process/")
    page.click("#start-ltm")
    expect(page.locator("#ltm-run-live .diagram svg")).to_be_visible()
    expect(page.locator("#ltm-past")).to_be_hidden()
    seq = page.locator("#ltm-run-live").get_attribute("data-seq")
    expect(page.locator("#history-now")).to_have_value(str(seq))
    assert csp_violations == []
    page.close()
