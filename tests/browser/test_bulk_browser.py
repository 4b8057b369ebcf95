"""Bulk actions in a real browser: on the dashboard, every flow matching a filter (a thousand)
selected, previewed — counts per state, refusals and why — confirmed, and the progress bar
followed over the websocket to the end (no polling while live); then a few ticked rows,
"select all on this page" and the refusal of a foreign flow; and the same without
JavaScript, as plain forms."""

from __future__ import annotations

import pytest
from django.utils import timezone

from engine import api
from engine.models import BulkAction, Flow
from tests.browser.conftest import sign_in, watch_console
from tests.engine.flows.test_bulk import make_flows

pytestmark = [pytest.mark.browser, pytest.mark.consumer]
WAIT = 60_000  # ms: a generous bound for the engine to act, not a speed check


def test_select_preview_confirm_and_follow_the_progress(
    browser, studio, user, shots, csp_violations
):
    from playwright.sync_api import expect

    routine = api.create_routine("Nightly import", ["t_echo"], owner=user)
    failed = make_flows(routine, user, "failed", 1000)
    complete = make_flows(routine, user, "complete", 30)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watch_console(page, csp_violations)
    polls: list[str] = []
    context.on("request", lambda r: polls.append(r.url) if "/bulk/" in r.url else None)
    sign_in(page, studio.origin, user.username)
    page.goto(f"{studio.origin}/?state=failed")
    expect(page.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)
    expect(page.locator("#bulk-count")).to_have_text("None selected")
    expect(page.locator("#bulk-preview-button")).to_be_disabled()

    page.check("#bulk-all")
    expect(page.locator("#bulk-count")).to_have_text("All 1,000 matching selected")
    page.select_option("#bulk-action", "kill")
    page.fill("#bulk-reason", "the upstream feed was wrong")
    shots(page, "1-selected")
    page.click("#bulk-preview-button")
    preview = page.locator("#bulk-preview")
    expect(preview).to_contain_text("Kill: 1000 selected flows")
    expect(preview).to_contain_text("1000 will be killed")
    expect(preview).to_contain_text("0 refused")
    expect(page.locator("#bulk-confirm-reason")).to_have_value("the upstream feed was wrong")
    shots(page, "2-preview")

    page.click("#bulk-confirm")
    progress = page.locator("[data-live-bulk]")
    expect(progress).to_be_visible(timeout=WAIT)
    shots(page, "3-progress")
    expect(progress).to_contain_text("1000 of 1000", timeout=WAIT)
    expect(progress).to_contain_text("Done", timeout=WAIT)
    expect(progress).to_contain_text("1000 killed")
    shots(page, "4-done")
    bulk = BulkAction.objects.get()
    assert (bulk.state, bulk.succeeded) == ("done", 1000)
    assert set(Flow.objects.filter(pk__in=failed).values_list("state", flat=True)) == {"killed"}
    # the progress came over the websocket: the page asked for nothing but the two posts
    assert [url.split(studio.origin)[1] for url in polls] == ["/bulk/preview/", "/bulk/start/"]

    # A few rows ticked by hand (one of them complete), then every row of the page.
    expect(page.locator("#bulk-count")).to_have_text("None selected")  # (cleared once started)
    Flow.objects.filter(pk=complete[0]).update(updated=timezone.now())  # (on the first page)
    page.goto(f"{studio.origin}/")
    expect(page.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)
    for pk in [*failed[-2:], complete[0]]:
        page.check(f"#flow-{pk}-row input[name=ids]")
    expect(page.locator("#bulk-count")).to_have_text("3 selected")
    page.select_option("#bulk-action", "retry")
    page.fill("#bulk-reason", "feed fixed")
    page.click("#bulk-preview-button")
    expect(preview).to_contain_text("2 will be retried")
    expect(preview).to_contain_text("1 flow — complete flows cannot be retried")
    shots(page, "5-preview-refusals")
    page.click("#bulk-confirm")
    expect(progress).to_contain_text("Done", timeout=WAIT)
    expect(progress).to_contain_text("2 retried")
    expect(progress).to_contain_text("1 refused")
    expect(page.locator(f"[data-live-bulk] a[href='/flows/{complete[0]}/']")).to_be_visible()
    shots(page, "6-done-with-refusals")
    for pk in failed[-2:]:
        expect(page.locator(f"#flow-{pk}-row")).to_contain_text("Complete", timeout=WAIT)

    page.check("#bulk-select-page")
    expect(page.locator("#bulk-count")).to_have_text("50 selected")
    assert page.locator("input[name=ids]:checked").count() == 50
    page.uncheck("#bulk-select-page")
    expect(page.locator("#bulk-count")).to_have_text("None selected")
    assert csp_violations == []
    context.close()


def test_bulk_actions_work_without_javascript(browser, live_server, user, other_user, shots):
    from playwright.sync_api import expect

    routine = api.create_routine("Reports", ["t_echo"], owner=user)
    failed = make_flows(routine, user, "failed", 3)
    killed = make_flows(routine, user, "killed", 1)
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    sign_in(page, live_server.url, user.username)
    expect(page.locator("#bulk-select-page")).to_be_hidden()  # (it needs JavaScript)
    for pk in [*failed, *killed]:
        page.check(f"#flow-{pk}-row input[name=ids]")
    page.select_option("#bulk-action", "skip")
    page.click("#bulk-preview-button")
    page.wait_for_url(f"{live_server.url}/bulk/preview/")
    expect(page.locator("#bulk-preview")).to_contain_text("4 will be skipped")
    page.fill("#bulk-confirm-reason", "")
    page.click("#bulk-confirm")  # no reason: refused, the preview again
    expect(page.locator("#bulk-error")).to_contain_text("needs a reason")
    assert not BulkAction.objects.exists()
    page.fill("#bulk-confirm-reason", "not needed this month")
    shots(page, "preview")
    page.click("#bulk-confirm")
    bulk = BulkAction.objects.get()
    page.wait_for_url(f"{live_server.url}/bulk/{bulk.pk}/")
    expect(page.locator("[data-live-bulk]")).to_contain_text("Done")
    expect(page.locator("[data-live-bulk]")).to_contain_text("4 skipped")
    shots(page, "done")
    assert set(Flow.objects.filter(pk__in=failed + killed).values_list("state", flat=True)) == {
        "complete"
    }
    context.close()
