"""The schedules page in a real browser: create a schedule through the form (the cron
expression is explained while it is typed), see a bad one refused beside its field, pause
one behind its confirmation; and the same form without JavaScript. Screenshots go to
artifacts/screenshots/."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from engine import api
from engine.models import Schedule
from tests.browser.conftest import sign_in, watch_console

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def history(user, routine):
    """Schedules with something to show: one that caught up after an outage, one whose flow
    could not start, one paused."""
    report = routine("t_echo", name="Nightly report")
    caught_up = api.create_schedule(
        report, user, "0 * * * *", timezone="Europe/Berlin", name="Hourly export"
    )
    # Down for hours: the due time of four hours ago and the four after it passed.
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    Schedule.objects.filter(pk=caught_up.pk).update(next_run=hour - timedelta(hours=4))
    broken = routine("t_echo", name="Retired routine")
    failing = api.create_schedule(broken, user, "*/30 * * * *", name="Old sync")
    Schedule.objects.filter(pk=failing.pk).update(next_run=timezone.now() - timedelta(minutes=1))
    broken.steps.all().delete()
    api.fire_schedules()
    api.pause_schedule(
        api.create_schedule(report, user, "0 6 1 * *", timezone="America/New_York"), user
    )
    return report


def test_create_and_pause_a_schedule(browser, live_server, user, history, shots, csp_violations):
    from playwright.sync_api import expect

    base = live_server.url
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch_console(page, csp_violations)
    sign_in(page, base, "alice")
    page.click("nav >> text=Schedules")
    expect(page.locator("h1")).to_have_text("Schedules")
    expect(page.locator("table.schedules tbody tr")).to_have_count(3)
    expect(page.locator("table.schedules")).to_contain_text("caught up 4 missed")
    expect(page.locator("table.schedules")).to_contain_text("has no steps")

    # A bad cron expression is refused beside its field, and nothing is saved.
    page.select_option("#id_routine", label="Nightly report")
    page.fill("#id_cron", "61 * * * *")
    expect(page.locator("#cron-hint")).to_contain_text("out of range")
    page.click("#create-schedule")
    expect(page.locator("#cron-errors")).to_contain_text("the minute field '61' is out of range")
    expect(page.locator("#id_cron")).to_have_attribute("aria-invalid", "true")
    assert Schedule.objects.count() == 3
    shots(page, "bad-cron")

    # The hint explains the expression as it is typed, in the time zone chosen.
    page.fill("#id_timezone", "Europe/Berlin")
    page.fill("#id_cron", "30 2 * * 1-5")
    expect(page.locator("#cron-hint")).to_contain_text("At 02:30, Monday through Friday")
    expect(page.locator("#cron-hint")).to_contain_text("Next:")
    page.fill("#id_data", '{"report": "weekday"}')
    page.fill("#id_name", "Weekday report")
    page.click("#create-schedule")
    expect(page.locator(".messages")).to_contain_text("created")
    created = Schedule.objects.get(name="Weekday report")
    assert (created.cron, created.timezone, created.data) == (
        "30 2 * * 1-5",
        "Europe/Berlin",
        {"report": "weekday"},
    )
    row = page.locator(f"#schedule-{created.pk}")
    expect(row).to_contain_text("At 02:30, Monday through Friday")
    expect(row).to_contain_text("Europe/Berlin")
    expect(row).to_contain_text("UTC")
    shots(page, "list")

    # Pause it behind its confirmation.
    page.click(f"#pause-{created.pk}")
    expect(page.locator("#schedule-confirm")).to_contain_text("Pause the schedule?")
    expect(page.locator("#confirm-submit")).to_be_focused()
    shots(page, "confirm-pause")
    page.click("#confirm-submit")
    expect(page.locator(f"#schedule-{created.pk}")).to_contain_text("Paused")
    expect(page.locator(f"#resume-{created.pk}")).to_be_visible()
    created.refresh_from_db()
    assert created.paused
    assert csp_violations == []


def test_the_form_works_without_javascript(browser, live_server, user, routine):
    from playwright.sync_api import expect

    routine("t_echo", name="Plain")
    base = live_server.url
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, base, "alice")
    page.goto(f"{base}/schedules/")
    page.select_option("#id_routine", label="Plain")
    page.fill("#id_cron", "@daily")
    page.click("#create-schedule")
    expect(page.locator(".messages")).to_contain_text("created")
    schedule = Schedule.objects.get()
    page.click(f"#delete-{schedule.pk}")
    expect(page.locator("h1")).to_contain_text("delete the schedule")
    page.click("#confirm-submit")
    expect(page.locator(".messages")).to_contain_text("deleted")
    assert not Schedule.objects.exists()
    context.close()
