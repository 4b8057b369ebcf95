"""The schedules page through the Django test client: the list (cron in words, next run in the
schedule's zone and UTC, last runs), the create form with and without htmx, pause, resume and
delete behind a confirmation, bad input (400 with the form's errors, nothing saved), who sees
and acts on what, CSRF and escaping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from engine import api
from engine.models import AuditEntry, Schedule, ScheduleRun

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HTTP_HX_REQUEST": "true"}
LIST = reverse("studio:schedules")


@pytest.fixture
def alice(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def echo(routine):
    return routine("t_echo", name="nightly report")


def confirm_url(schedule, action):
    return reverse("studio:schedule_confirm", args=[schedule.pk, action])


def act_url(schedule, action):
    return reverse("studio:schedule_act", args=[schedule.pk, action])


def form(of, **extra):
    return {"routine": str(of.pk), "cron": "0 9 * * 1-5", "timezone": "UTC"} | extra


# --- the list --------------------------------------------------------------------------------


def test_the_page_is_in_the_nav_and_needs_sign_in(client, alice):
    assert Client().get(LIST).status_code == 302
    page = alice.get(reverse("studio:dashboard")).content.decode()
    assert f'href="{LIST}"' in page
    html = alice.get(LIST).content.decode()
    assert 'aria-current="page">Schedules' in html
    assert "No schedules yet" in html


def test_the_form_offers_every_time_zone_and_the_routines_the_user_sees(alice, echo, routine):
    routine("t_echo", name="a <b>bold</b> name")
    for _ in range(2):  # (the options are made once per process: the second page reuses them)
        html = alice.get(LIST).content.decode()
        listed = html.split('<datalist id="time-zones">', 1)[1].split("</datalist>", 1)[0]
        assert listed == "".join(f'<option value="{zone}">' for zone in api.time_zones())
        assert '<option value="Europe/Berlin">' in listed and len(api.time_zones()) > 400
        assert f'<option value="{echo.pk}">nightly report</option>' in html
        assert "a &lt;b&gt;bold&lt;/b&gt; name" in html and "<b>bold" not in html


def test_the_list_shows_cron_in_words_next_run_in_its_zone_and_utc_and_last_runs(alice, echo, user):
    with time_machine.travel(datetime(2025, 1, 15, 12, tzinfo=UTC), tick=False):
        schedule = api.create_schedule(echo, user, "0 9 * * 1-5", timezone="Europe/Berlin")
    with time_machine.travel(datetime(2025, 1, 20, 12, tzinfo=UTC), tick=False):
        api.fire_schedules()  # caught up: Thu 16th, Fri 17th, Mon 20th
        html = alice.get(LIST).content.decode()
    assert "<code>0 9 * * 1-5</code>" in html
    assert "At 09:00, Monday through Friday" in html
    assert "Europe/Berlin" in html
    assert "2025-01-21 09:00 CET" in html and "2025-01-21 08:00 UTC" in html
    run = ScheduleRun.objects.get(schedule=schedule)
    assert "2025-01-20 09:00 CET" in html
    assert f'href="{reverse("studio:flow_detail", args=[run.flow_id])}"' in html
    assert "caught up 2 missed" in html
    assert "Active" in html and f'id="pause-{schedule.pk}"' in html


def test_a_run_that_could_not_start_shows_why(alice, echo, user):
    with time_machine.travel(datetime(2025, 1, 15, 8, tzinfo=UTC), tick=False):
        api.create_schedule(echo, user, "0 9 * * *")
    echo.steps.all().delete()
    with time_machine.travel(datetime(2025, 1, 15, 9, 0, 1, tzinfo=UTC), tick=False):
        api.fire_schedules()
    html = alice.get(LIST).content.decode()
    assert "has no steps" in html and 'class="run-error"' in html


def test_a_schedule_written_around_the_checks_still_shows(alice, echo, user):
    schedule = api.create_schedule(echo, user, "0 9 * * *", name="odd")
    Schedule.objects.filter(pk=schedule.pk).update(cron="@reboot", timezone="Nowhere/Town")
    html = alice.get(LIST).content.decode()
    assert "odd" in html and "cron @reboot" in html
    assert alice.get(confirm_url(schedule, "pause")).status_code == 200


def test_the_cron_hint_says_what_it_means_and_when_it_runs(alice):
    hint = reverse("studio:schedule_hint")
    response = alice.get(hint, {"cron": "30 2 * * *", "timezone": "Europe/Berlin"}, **HTMX)
    assert response.status_code == 200
    text = response.content.decode()
    assert "At 02:30" in text and "Next:" in text and ("CET" in text or "CEST" in text)
    bad = alice.get(hint, {"cron": "61 * * * *", "timezone": "UTC"}).content.decode()
    assert "minute field" in bad and "out of range" in bad
    zone = alice.get(hint, {"cron": "@daily", "timezone": "Nowhere/Town"}).content.decode()
    assert "Unknown time zone" in zone
    assert alice.get(hint, {"cron": ""}).content.decode().strip() == ""


# --- creating --------------------------------------------------------------------------------


def test_creating_without_htmx_redirects_to_the_list(alice, echo, user):
    response = alice.post(LIST, form(echo, data='{"to": "ops"}', name="weekday report"))
    schedule = Schedule.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{LIST}#schedule-{schedule.pk}"
    assert (schedule.routine, schedule.owner, schedule.data) == (echo, user, {"to": "ops"})
    assert schedule.name == "weekday report"
    html = alice.get(LIST).content.decode()
    assert f"Schedule #{schedule.pk} created." in html and "weekday report" in html
    assert AuditEntry.objects.filter(kind="schedule.created", actor=user).count() == 1


def test_creating_with_htmx_reloads_the_list(alice, echo):
    response = alice.post(LIST, form(echo, cron="@hourly", timezone="Asia/Tokyo"), **HTMX)
    schedule = Schedule.objects.get()
    assert response.status_code == 200
    assert response["HX-Redirect"] == LIST  # a full load: an anchor alone would only scroll
    assert (schedule.cron, schedule.timezone) == ("@hourly", "Asia/Tokyo")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "61 * * * *"}, "the minute field &#x27;61&#x27; is out of range"),
        ({"cron": "* * * *"}, "is not a cron expression"),
        ({"cron": "0 9 * * * *"}, "seconds and years are not supported"),
        ({"cron": "0 0 30 2 *"}, "never comes due"),
        ({"cron": ""}, "Give a cron expression"),
        ({"timezone": "Mars/Olympus"}, "Unknown time zone"),
        ({"timezone": ""}, "Give a time zone"),
        ({"data": "[1, 2]"}, "must be a JSON object"),
        ({"data": "{nope"}, "not valid JSON"),
        ({"routine": "999999"}, "Pick one of the routines you may see"),
        ({"routine": "99999999999999999999999999"}, "Pick one of the routines you may see"),
        ({"routine": ""}, "Pick a routine"),
        ({"name": "x" * 201}, "at most 200 characters"),
        ({"owner": "bob"}, None),  # not a field for non-operators: ignored
    ],
)
@pytest.mark.parametrize("htmx", [False, True])
def test_bad_input_is_a_400_with_the_forms_errors_and_saves_nothing(
    alice, echo, fields, message, htmx
):
    response = alice.post(LIST, form(echo, **fields), **(HTMX if htmx else {}))
    if message is None:
        assert response.status_code in (200, 302)
        assert Schedule.objects.get().owner.username == "alice"
        return
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert "nothing was saved" in html or 'role="alert"' in html
    assert ("<html" in html) is not htmx  # htmx gets the form's card only
    assert not Schedule.objects.exists() and not AuditEntry.objects.exists()


def test_another_users_routine_is_not_offered_nor_accepted(client, echo, other_user):
    client.force_login(other_user)
    html = client.get(LIST).content.decode()
    assert "nightly report" not in html
    response = client.post(LIST, form(echo))
    assert response.status_code == 400 and not Schedule.objects.exists()


def test_operators_schedule_for_someone_else(client, echo, make_user, user, other_user):
    client.force_login(make_user("olga", is_staff=True))
    assert 'id="id_owner"' in client.get(LIST).content.decode()
    shared = api.create_routine("shared", ["t_echo"], owner=None)
    response = client.post(LIST, form(shared, owner="bob"))
    assert response.status_code == 302
    assert Schedule.objects.get().owner == other_user
    refused = client.post(LIST, form(shared, owner="nobody-here"))
    assert refused.status_code == 400 and "no active user named" in refused.content.decode()
    # alice's own routine may not run as bob: the engine refuses, nothing is saved
    response = client.post(LIST, form(echo, owner="bob"))
    assert response.status_code == 400
    assert "bob may not see routine" in response.content.decode()
    assert Schedule.objects.count() == 1


# --- pause, resume, delete -------------------------------------------------------------------


def test_pause_resume_and_delete_behind_a_confirmation(alice, echo, user):
    schedule = api.create_schedule(echo, user, "0 9 * * *", name="daily")
    page = alice.get(confirm_url(schedule, "pause"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Pause the schedule?" in html and "stops starting flows" in html
    assert 'name="csrfmiddlewaretoken"' in html
    partial = alice.get(confirm_url(schedule, "pause"), **HTMX).content.decode()
    assert "<html" not in partial and act_url(schedule, "pause") in partial

    response = alice.post(act_url(schedule, "pause"))
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert schedule.paused and schedule.next_run is None
    html = alice.get(LIST).content.decode()
    assert "Paused" in html and f'id="resume-{schedule.pk}"' in html

    resume = alice.get(confirm_url(schedule, "resume")).content.decode()
    assert "do not start" in resume and "Its next run is" in resume
    response = alice.post(act_url(schedule, "resume"), **HTMX)
    assert response["HX-Redirect"] == LIST
    schedule.refresh_from_db()
    assert not schedule.paused and schedule.next_run is not None

    delete = alice.get(confirm_url(schedule, "delete")).content.decode()
    assert "Delete the schedule?" in delete and "flows it started stay" in delete
    response = alice.post(act_url(schedule, "delete"))
    assert response.status_code == 302 and not Schedule.objects.exists()
    kinds = set(AuditEntry.objects.values_list("kind", flat=True))
    assert kinds == {
        "schedule.created",
        "schedule.paused",
        "schedule.resumed",
        "schedule.deleted",
    }


def test_actions_need_post_and_a_known_action(alice, echo, user):
    schedule = api.create_schedule(echo, user, "0 9 * * *")
    assert alice.get(act_url(schedule, "pause")).status_code == 405
    assert alice.get(confirm_url(schedule, "explode")).status_code == 404
    assert alice.post(act_url(schedule, "explode")).status_code == 404
    schedule.refresh_from_db()
    assert not schedule.paused


def test_others_get_404_for_a_schedule_and_do_not_see_it(client, echo, user, other_user):
    schedule = api.create_schedule(echo, user, "0 9 * * *", name="alices secret")
    client.force_login(other_user)
    assert "alices secret" not in client.get(LIST).content.decode()
    for action in ("pause", "resume", "delete"):
        assert client.get(confirm_url(schedule, action)).status_code == 404
        assert client.post(act_url(schedule, action)).status_code == 404
        assert client.post(act_url(schedule, action), **HTMX).status_code == 404
    schedule.refresh_from_db()
    assert not schedule.paused
    assert list(AuditEntry.objects.values_list("kind", flat=True)) == ["schedule.created"]


def test_staff_see_and_act_on_everyones_schedules(client, echo, user, make_user):
    schedule = api.create_schedule(echo, user, "0 9 * * *", name="alices")
    client.force_login(make_user("olga", is_staff=True))
    html = client.get(LIST).content.decode()
    assert "alices" in html and "Owner: alice" in html
    assert client.post(act_url(schedule, "pause")).status_code == 302
    entry = AuditEntry.objects.get(kind="schedule.paused")
    assert entry.actor.username == "olga"


def test_forms_need_the_csrf_token(echo, user):
    schedule = api.create_schedule(echo, user, "0 9 * * *")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(LIST, form(echo)).status_code == 403
    assert client.post(act_url(schedule, "delete")).status_code == 403
    assert Schedule.objects.count() == 1


def test_what_users_typed_is_escaped(alice, echo, user):
    nasty = "<script>alert(1)</script>"
    echo.name = nasty
    echo.save()
    api.create_schedule(echo, user, "0 9 * * *", name=nasty, data={"x": nasty})
    html = alice.get(LIST).content.decode()
    assert nasty not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    response = alice.post(LIST, form(echo, cron=nasty, name=nasty))
    assert response.status_code == 400
    assert nasty not in response.content.decode()
    hint = alice.get(reverse("studio:schedule_hint"), {"cron": nasty}).content.decode()
    assert nasty not in hint
