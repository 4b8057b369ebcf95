"""Recovery in a real browser, with a real engine consumer: a retrying flow's dashboard row and
page ("Retrying: attempt 2 of 4 at ..."), "Retry now", a rerun with edited data whose diff
shows in the timeline, the builder's retry settings of a step (an error beside its field),
and the "Who holds it" panel of a running flow for an operator. Screenshots go to
artifacts/screenshots/recovery-*.png."""

from __future__ import annotations

import pytest

from engine import api
from engine.flows.status import FlowState
from engine.models import Flow, RoutineStep, Worker
from tests.browser.conftest import SCREENSHOTS, sign_in, watch_console
from tests.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
WAIT = 60_000  # ms: a generous bound for the engine consumer to act, not a speed check


def shot(page, name: str) -> None:
    """A screenshot that leaves the caret as it is (Playwright would hide it with an inline
    style on every input, which the page's CSP refuses)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"recovery-{name}.png"), full_page=True, caret="initial")


def opened(page, action: str) -> None:
    """Open an override's confirmation and wait until htmx has wired it up (new content is
    processed when it settles, a moment after it appears)."""
    from playwright.sync_api import expect

    page.click(f"#override-{action}")
    expect(page.locator(f"#confirm-{action}")).to_be_visible()
    expect(page.locator("#flow-confirm .htmx-added")).to_have_count(0)


def _state(flow_id: int) -> str:
    return Flow.objects.get(pk=flow_id).state


def test_a_retrying_flow_is_retried_now_then_rerun_with_edited_data(
    browser, live_server, consumer, user, csp_violations
):
    from playwright.sync_api import expect

    base = live_server.url
    echo = {"script": "t_echo", "label": "Receipt", "params": {"copies": 1}}
    routine = api.create_routine("Charge card", ["t_ui_needs_ok", echo], owner=user)
    flow = api.start_flow(routine, user, {"amount": 10, "card": "4242"})
    assert wait_until(lambda: _state(flow.pk) == FlowState.RETRYING)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch_console(page, csp_violations)
    sign_in(page, base, user.username)
    row = page.locator(f"#flow-{flow.pk}-row")
    expect(row.locator(".state")).to_contain_text("Retrying")
    expect(row.locator(".retry-note")).to_contain_text("attempt 2 of 4 at")
    page.select_option("#id_state", "retrying")
    expect(page.locator("#flow-table .count")).to_have_text("1 flow")
    shot(page, "dashboard-row")

    page.goto(f"{base}/flows/{flow.pk}/")
    status = page.locator("#flow-retry")
    expect(status).to_contain_text("Retrying: attempt 2 of 4 at")
    expect(status).to_contain_text("Last error: ValueError: data.ok is not set (attempt 1)")
    expect(page.locator("#flow-timeline")).to_contain_text("attempt 1 of 4 failed")
    shot(page, "retrying-page")

    # Retry now: attempt 2 runs at once (and fails again: attempt 3 is due in an hour).
    opened(page, "retry")
    confirm = page.locator("#flow-confirm")
    expect(confirm.locator("h2")).to_have_text("Retry now?")
    confirm.locator("#id_reason").fill("the card service is back")
    shot(page, "retry-now-confirm")
    confirm.locator("#confirm-submit").click()
    expect(page.locator("#flow-retry")).to_contain_text("attempt 3 of 4", timeout=WAIT)
    expect(page.locator("#flow-timeline")).to_contain_text("retried now: attempt 2")

    # Retry now with edited data: the step succeeds and the timeline shows the diff.
    opened(page, "retry")
    expect(confirm.locator("#flow-edits")).to_be_visible()
    confirm.locator("#flow-edits summary").click()
    data = confirm.locator("#id_edit_data")
    expect(data).to_have_value('{\n  "amount": 10,\n  "card": "4242"\n}')
    data.fill("{broken")
    confirm.locator("#confirm-submit").click()
    expect(confirm.locator("#edit-data-errors")).to_contain_text("not valid JSON")
    expect(page.locator("#flow-confirm .htmx-added")).to_have_count(0)  # (wired up again)
    assert _state(flow.pk) == FlowState.RETRYING
    confirm.locator("#id_edit_data").fill('{"amount": 12, "card": "4242", "ok": true}')
    confirm.locator("#id_reason").fill("the amount was wrong")
    shot(page, "rerun-with-edits-confirm")
    confirm.locator("#confirm-submit").click()
    expect(page.locator("#flow-status .state")).to_contain_text("Complete", timeout=WAIT)
    diff = page.locator("#flow-timeline .event-diff").first
    expect(diff).to_contain_text("the amount was wrong")
    expect(diff).to_contain_text("amount: 10 → 12")
    expect(diff).to_contain_text("ok: added true")
    shot(page, "rerun-with-edits-timeline")
    assert Flow.objects.get(pk=flow.pk).data == {"amount": 12, "card": "4242", "ok": True}

    # A move shows the params of the step picked: picking another one swaps them in.
    opened(page, "move")
    expect(confirm.locator("#id_edit_params")).to_have_value("{}")  # step 1's, by default
    with page.expect_response(lambda r: "/confirm/move/" in r.url):
        confirm.locator("#id_position").select_option("1")
    expect(confirm.locator("#edit-params label")).to_contain_text("Params of step 2 (Receipt)")
    expect(confirm.locator("#id_edit_params")).to_have_value('{\n  "copies": 1\n}')
    confirm.locator("#flow-edits summary").click()
    confirm.locator("#id_edit_params").fill('{"copies": 2}')
    confirm.locator("#id_reason").fill("one more receipt")
    shot(page, "move-with-params-confirm")
    confirm.locator("#confirm-submit").click()
    expect(page.locator("#flow-timeline .event-diff").first).to_contain_text(
        "step 2 params edited:\ncopies: 1 → 2", timeout=WAIT
    )
    expect(page.locator("#flow-status .state")).to_contain_text("Complete", timeout=WAIT)
    assert Flow.objects.get(pk=flow.pk).results[1]["params"] == {"copies": 2}
    assert csp_violations == []


def test_the_builders_retry_settings_of_a_step(browser, live_server, user, csp_violations):
    from playwright.sync_api import expect

    base = live_server.url
    routine = api.create_routine("Charge card", ["t_ui_needs_ok", "t_echo"], owner=user)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch_console(page, csp_violations)
    sign_in(page, base, user.username)
    page.goto(f"{base}/routines/{routine.pk}/edit/")
    palette = page.locator(".palette-list")
    expect(palette).to_contain_text("Retries 3 times, after 3600 s")
    first = page.locator("#steps > li").nth(0)
    settings = first.locator(".step-retry")
    expect(settings.locator("input[name=step_retries]")).not_to_be_visible()  # collapsed
    settings.locator("summary").click()
    retries = settings.locator("input[name=step_retries]")
    expect(retries).to_have_attribute("placeholder", "3")
    expect(settings.locator("input[name=step_time_limit]")).to_have_attribute("placeholder", "none")
    retries.fill("500")
    settings.locator("input[name=step_retry_delay]").fill("30")
    page.click("button[value=save]")
    error = page.locator("#steps > li").nth(0).locator(".step-retry .field-error")
    expect(error).to_contain_text("retries must be between 0 and 100")
    expect(page.locator("#steps > li").nth(0).locator(".step-retry")).to_have_attribute("open", "")
    shot(page, "builder-retry-error")
    assert RoutineStep.objects.get(routine=routine, order=0).overrides == {}
    page.locator("#steps > li").nth(0).locator("input[name=step_retries]").fill("5")
    page.click("button[value=save]")
    expect(page.locator(".notice.ok")).to_contain_text("version 2")
    expect(page.locator("#steps > li").nth(0).locator(".step-retry summary")).to_contain_text(
        "2 set for this step"
    )
    page.locator("#steps > li").nth(0).locator(".step-retry summary").click()
    page.locator("#add-t_ui_needs_ok").scroll_into_view_if_needed()  # its policy, in the palette
    shot(page, "builder-retry-fields")
    step = RoutineStep.objects.get(routine=routine, order=0)
    assert step.overrides == {"retries": 5, "retry_delay": 30}
    assert csp_violations == []


def test_an_operator_sees_who_holds_a_running_flow(
    browser, live_server, consumer, user, make_user, tmp_path, csp_violations
):
    from playwright.sync_api import expect

    base = live_server.url
    make_user("root", is_staff=True)
    release = tmp_path / "release"
    step = {"script": "t_ui_hold", "label": "Export", "params": {"release": str(release)}}
    routine = api.create_routine("Nightly export", [step, "t_echo"], owner=user)
    flow = api.start_flow(routine, user)

    def listed() -> bool:
        return any(str(flow.pk) in (row.threads or {}) for row in Worker.objects.all())

    assert wait_until(lambda: _state(flow.pk) == FlowState.RUNNING and listed())
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    watch_console(page, csp_violations)
    sign_in(page, base, "root")
    page.goto(f"{base}/flows/{flow.pk}/")
    panel = page.locator("#flow-holder")
    expect(panel.locator("h2")).to_have_text("Who holds it")
    expect(panel.locator("#holder-worker")).to_contain_text("process")
    expect(panel.locator("#holder-worker")).to_contain_text("beating")
    expect(panel.locator("#holder-thread")).to_contain_text("since")
    expect(panel.locator("#holder-beat")).to_contain_text("s before this view")
    plan = panel.locator("#flow-plan")
    expect(plan).to_contain_text("Held by worker")
    expect(plan).to_contain_text("If that worker stops beating for")
    expect(plan).to_contain_text('fails with "took longer than 3600 s"')
    expect(plan).to_contain_text("attempt 2 of 2 follows at once")
    shot(page, "holder-panel")
    release.write_text("go")
    expect(page.locator("#flow-status .state")).to_contain_text("Complete", timeout=WAIT)
    expect(panel.locator("#holder-none")).to_contain_text("Nobody")
    expect(plan).to_contain_text("Nothing: the flow has finished.")
    assert csp_violations == []
