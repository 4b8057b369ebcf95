"""Schedules (engine.flows.schedules through engine.api), with Huey in immediate mode and the
clock held by time-machine: due times in a time zone and across changes of the clocks, one
flow for a catch-up however long the outage, one flow per due time however often it is
fired, paused schedules, bad input that changes nothing, the audit, and who may do what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.exceptions import PermissionDenied

from engine import api
from engine.models import AuditEntry, Flow, Routine, RoutineStep, Schedule, ScheduleRun

# The tests whose outcome the database decides (races, constraints, writing nothing on
# bad input) also run in the scale-out pass; the others are the same logic on any database.
pytestmark = pytest.mark.django_db(transaction=True)


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def clock(moment: datetime):
    return time_machine.travel(moment, tick=False)


@pytest.fixture
def echo(routine):
    return routine("t_echo", name="nightly")


def audit_kinds(schedule_id: int) -> list[str]:
    rows = AuditEntry.objects.filter(object_type="schedule", object_id=schedule_id)
    return list(rows.order_by("created", "id").values_list("kind", flat=True))


# --- due times ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "zone", "expected"),
    [
        (at(2025, 1, 15, 12), "Europe/Berlin", at(2025, 1, 16, 8)),  # CET, UTC+1
        (at(2025, 7, 15, 12), "Europe/Berlin", at(2025, 7, 16, 7)),  # CEST, UTC+2
        (at(2025, 1, 15, 12), "America/New_York", at(2025, 1, 15, 14)),  # EST, UTC-5
        (at(2025, 1, 15, 12), "UTC", at(2025, 1, 16, 9)),
        (at(2025, 1, 15, 12), "Asia/Kolkata", at(2025, 1, 16, 3, 30)),  # UTC+5:30
    ],
)
def test_the_next_run_is_computed_in_the_schedules_time_zone(echo, user, now, zone, expected):
    with clock(now):
        schedule = api.create_schedule(echo, user, "0 9 * * *", timezone=zone)
    assert schedule.next_run == expected
    assert schedule.timezone == zone
    assert api.upcoming_runs(schedule, 2) == [expected, expected + timedelta(days=1)]


def test_a_wall_time_the_clocks_skip_comes_due_once_at_the_end_of_the_gap(echo, user):
    # 2025-03-30 in Berlin: 02:00 CET becomes 03:00 CEST; 02:30 does not happen that night.
    with clock(at(2025, 3, 29, 12)):
        schedule = api.create_schedule(echo, user, "30 2 * * *", timezone="Europe/Berlin")
    assert api.upcoming_runs(schedule, 3) == [
        at(2025, 3, 30, 1),  # 03:00 CEST, the first instant after the gap
        at(2025, 3, 31, 0, 30),  # 02:30 CEST
        at(2025, 4, 1, 0, 30),
    ]


def test_a_repeated_wall_time_comes_due_once_for_a_fixed_time(echo, user):
    # 2025-10-26 in Berlin: 03:00 CEST becomes 02:00 CET; 02:30 happens twice that night.
    with clock(at(2025, 10, 25, 12)):
        daily = api.create_schedule(echo, user, "30 2 * * *", timezone="Europe/Berlin")
    assert api.upcoming_runs(daily, 3) == [
        at(2025, 10, 26, 0, 30),  # 02:30 CEST, the first pass
        at(2025, 10, 27, 1, 30),  # the next day, 02:30 CET
        at(2025, 10, 28, 1, 30),
    ]


def test_a_rhythm_in_real_time_goes_on_through_a_repeated_hour(echo, user):
    with clock(at(2025, 10, 25, 23, 50)):  # 01:50 CEST
        every = api.create_schedule(echo, user, "*/30 * * * *", timezone="Europe/Berlin")
    assert api.upcoming_runs(every, 5) == [
        at(2025, 10, 26, 0, 0),  # 02:00 CEST
        at(2025, 10, 26, 0, 30),  # 02:30 CEST
        at(2025, 10, 26, 1, 0),  # 02:00 CET
        at(2025, 10, 26, 1, 30),  # 02:30 CET
        at(2025, 10, 26, 2, 0),  # 03:00 CET
    ]


def test_a_cron_expression_in_words():
    assert api.describe_cron("0 9 * * 1-5") == "At 09:00, Monday through Friday"
    assert api.describe_cron("*/15 * * * *") == "Every 15 minutes"
    assert api.describe_cron("@daily") == "At 00:00"


def test_aliases_and_spacing_are_normalised(echo, user):
    schedule = api.create_schedule(echo, user, "  @Daily ")
    assert schedule.cron == "@daily"
    schedule = api.create_schedule(echo, user, " 0   9 * *  mon-fri ")
    assert schedule.cron == "0 9 * * mon-fri"


# --- firing -------------------------------------------------------------------------------


@pytest.mark.bothmodes
def test_a_due_schedule_starts_one_flow_of_its_routine_for_its_owner_with_its_data(echo, user):
    with clock(at(2025, 5, 1, 8, 59, 30)):
        schedule = api.create_schedule(echo, user, "0 9 * * *", data={"to": "ops"})
        assert api.fire_schedules() == 0  # not yet
    with clock(at(2025, 5, 1, 9, 0, 5)):
        assert api.fire_schedules() == 1
    run = ScheduleRun.objects.get(schedule=schedule)
    assert (run.due, run.missed, run.error) == (at(2025, 5, 1, 9), 0, "")
    flow = Flow.objects.get(pk=run.flow_id)
    assert (flow.routine_id, flow.owner_id, flow.data) == (echo.pk, user.pk, {"to": "ops"})
    assert flow.state == "complete"
    schedule.refresh_from_db()
    assert schedule.next_run == at(2025, 5, 2, 9)
    assert schedule.last_run == at(2025, 5, 1, 9)


@pytest.mark.bothmodes
def test_catch_up_after_a_long_outage_starts_one_flow_and_counts_the_missed(echo, user):
    with clock(at(2025, 5, 1, 10, 30)):
        schedule = api.create_schedule(echo, user, "0 * * * *")  # hourly; next 11:00
    # Everything was down for three days: 72 hourly due times passed (11:00 ... 10:00).
    with clock(at(2025, 5, 4, 10, 40)):
        assert api.fire_schedules() == 1
        assert api.fire_schedules() == 0  # caught up: nothing is due any more
    run = ScheduleRun.objects.get(schedule=schedule)
    assert run.due == at(2025, 5, 4, 10)  # the latest due time passed
    assert run.missed == 71
    assert Flow.objects.filter(routine=echo).count() == 1
    assert Flow.objects.get(pk=run.flow_id).state == "complete"
    schedule.refresh_from_db()
    assert schedule.next_run == at(2025, 5, 4, 11)  # the first after now, not one per tick


def test_a_catch_up_longer_than_what_is_counted_still_fires_the_latest_due_time(echo, user):
    with clock(at(2025, 5, 1, 0, 0, 30)):
        schedule = api.create_schedule(echo, user, "* * * * *")
    with clock(at(2025, 6, 1, 0, 0, 30)):  # a month of minutes
        assert api.fire_schedules() == 1
    run = ScheduleRun.objects.get(schedule=schedule)
    assert run.due == at(2025, 6, 1, 0, 0)
    assert run.missed == api.MISSED_COUNTED  # "at least" that many
    schedule.refresh_from_db()
    assert schedule.next_run == at(2025, 6, 1, 0, 1)


@pytest.mark.bothmodes
def test_firing_twice_at_the_same_time_starts_one_flow(echo, user):
    with clock(at(2025, 5, 1, 8)):
        schedule = api.create_schedule(echo, user, "0 9 * * *")
    with clock(at(2025, 5, 1, 9, 0, 1)):
        assert api.fire_schedules() + api.fire_schedules() == 1
        assert api.run_housekeeping()["schedules"] == 0
    assert ScheduleRun.objects.filter(schedule=schedule).count() == 1
    assert Flow.objects.filter(routine=echo).count() == 1


@pytest.mark.bothmodes
def test_a_consumer_that_read_the_schedule_before_another_fired_it_does_nothing(echo, user):
    """Two consumers read the same due schedule; the compare-and-set lets one of them fire."""
    from engine.flows.schedules import fire_schedule

    with clock(at(2025, 5, 1, 8)):
        schedule = api.create_schedule(echo, user, "0 9 * * *")
    first = Schedule.objects.get(pk=schedule.pk)
    second = Schedule.objects.get(pk=schedule.pk)  # the same row, read by another consumer
    with clock(at(2025, 5, 1, 9, 0, 1)):
        assert fire_schedule(first) is not None
        assert fire_schedule(second) is None
    assert ScheduleRun.objects.filter(schedule=schedule).count() == 1
    assert Flow.objects.filter(routine=echo).count() == 1


@pytest.mark.bothmodes
def test_a_due_time_already_recorded_starts_no_second_flow(echo, user):
    with clock(at(2025, 5, 1, 8)):
        schedule = api.create_schedule(echo, user, "0 9 * * *")
    ScheduleRun.objects.create(schedule=schedule, due=at(2025, 5, 1, 9))
    with clock(at(2025, 5, 1, 9, 0, 1)):
        assert api.fire_schedules() == 0
    assert ScheduleRun.objects.filter(schedule=schedule).count() == 1
    assert not Flow.objects.exists()
    schedule.refresh_from_db()
    assert schedule.next_run == at(2025, 5, 2, 9)  # it moves on all the same


@pytest.mark.bothmodes
def test_a_flow_that_cannot_start_is_recorded_and_the_schedule_moves_on(echo, user):
    with clock(at(2025, 5, 1, 8)):
        schedule = api.create_schedule(echo, user, "0 9 * * *")
    RoutineStep.objects.filter(routine=echo).delete()
    with clock(at(2025, 5, 1, 9, 0, 1)):
        assert api.fire_schedules() == 1
    run = ScheduleRun.objects.get(schedule=schedule)
    assert run.flow is None
    assert "has no steps" in run.error
    schedule.refresh_from_db()
    assert schedule.next_run == at(2025, 5, 2, 9)


def test_an_inactive_owner_gets_no_flow_and_the_reason_is_recorded(echo, user):
    with clock(at(2025, 5, 1, 8)):
        schedule = api.create_schedule(echo, user, "0 9 * * *")
    user.is_active = False
    user.save()
    with clock(at(2025, 5, 1, 9, 0, 1)):
        assert api.fire_schedules() == 1
    run = ScheduleRun.objects.get(schedule=schedule)
    assert run.flow is None and "not active" in run.error
    assert not Flow.objects.exists()


@pytest.mark.parametrize(
    "broken", [{"cron": "61 * * * *"}, {"cron": "@reboot"}, {"timezone": "Nowhere/Town"}]
)
def test_a_schedule_that_cannot_be_computed_is_paused_and_says_why(echo, user, broken):
    with clock(at(2025, 5, 1, 8)):
        schedule = api.create_schedule(echo, user, "0 9 * * *")
    Schedule.objects.filter(pk=schedule.pk).update(**broken)  # written around the service
    with clock(at(2025, 5, 1, 9, 0, 1)):
        assert api.fire_schedules() == 0
        assert api.fire_schedules() == 0
    schedule.refresh_from_db()
    assert schedule.paused and schedule.next_run is None
    assert not ScheduleRun.objects.exists()
    entry = AuditEntry.objects.get(kind="schedule.paused", object_id=schedule.pk)
    assert entry.actor is None and "fix it and resume it" in entry.message
    assert api.upcoming_runs(schedule, 3) == []  # nothing to show, and no error


def test_a_paused_schedule_does_not_fire_and_missed_runs_do_not_start_on_resume(echo, user):
    with clock(at(2025, 5, 1, 8)):
        schedule = api.create_schedule(echo, user, "0 9 * * *")
        schedule = api.pause_schedule(schedule, user)
    assert schedule.paused and schedule.next_run is None
    with clock(at(2025, 5, 3, 12)):
        assert api.fire_schedules() == 0
        schedule = api.resume_schedule(schedule, user)
        assert api.fire_schedules() == 0
    assert not ScheduleRun.objects.exists()
    assert schedule.next_run == at(2025, 5, 4, 9)  # from the resume on
    assert not schedule.paused
    # pausing twice, or resuming an active one, changes nothing and audits nothing
    api.resume_schedule(schedule, user)
    assert audit_kinds(schedule.pk) == ["schedule.created", "schedule.paused", "schedule.resumed"]


def test_a_new_cron_or_time_zone_computes_the_next_run_from_now(echo, user):
    with clock(at(2025, 5, 1, 8)):
        schedule = api.create_schedule(echo, user, "0 9 * * *")
        schedule = api.update_schedule(schedule, user, cron="30 10 * * *", timezone="Asia/Tokyo")
    assert (schedule.cron, schedule.timezone) == ("30 10 * * *", "Asia/Tokyo")
    assert schedule.next_run == at(2025, 5, 2, 1, 30)  # 10:30 in Tokyo (UTC+9)
    with clock(at(2025, 5, 1, 8)):
        renamed = api.update_schedule(schedule, user, name="tokyo", data={"a": 1})
    assert renamed.next_run == schedule.next_run
    assert (renamed.name, renamed.data) == ("tokyo", {"a": 1})


@pytest.mark.bothmodes
def test_deleting_a_schedule_keeps_its_flows_and_its_audit(echo, user):
    with clock(at(2025, 5, 1, 8)):
        schedule = api.create_schedule(echo, user, "0 9 * * *")
    with clock(at(2025, 5, 1, 9, 0, 1)):
        api.fire_schedules()
    api.delete_schedule(schedule, user)
    assert not Schedule.objects.exists() and not ScheduleRun.objects.exists()
    assert Flow.objects.filter(routine=echo).count() == 1
    deleted = AuditEntry.objects.get(kind="schedule.deleted", object_id=schedule.pk)
    assert deleted.actor == user
    assert deleted.data["cron"] == "0 9 * * *"


# --- bad input -------------------------------------------------------------------------------

BAD = [
    ({"cron": "* * * *"}, "five fields"),
    ({"cron": "not a cron"}, "not a cron expression"),
    ({"cron": "61 * * * *"}, "out of range"),
    ({"cron": "0 25 * * *"}, "out of range"),
    ({"cron": "0 0 30 2 *"}, "never comes due"),
    ({"cron": "* * * * * *"}, "seconds and years are not supported"),
    ({"cron": "0 0 * * * 2030"}, "seconds and years are not supported"),
    ({"cron": "H * * * *"}, "random or hashed"),
    ({"cron": "R 9 * * *"}, "random or hashed"),
    ({"cron": "@reboot"}, "unknown cron alias"),
    ({"cron": ""}, "needs a cron expression"),
    ({"cron": "0 9 * * *\x00"}, "NUL"),
    ({"cron": "*/5 " * 60}, "at most 200 characters"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"timezone": "../../etc/passwd"}, "unknown time zone"),
    ({"timezone": ""}, "needs a time zone"),
    ({"data": [1, 2]}, "must be a JSON object"),
    ({"data": "text"}, "must be a JSON object"),
    ({"data": {"x": float("nan")}}, "finite"),
    ({"data": {"x": "\x00"}}, "NUL"),
    ({"name": "x" * 201}, "at most 200 characters"),
]


@pytest.mark.bothmodes
@pytest.mark.django_db  # writes nothing: a rolled-back test is enough
@pytest.mark.parametrize(("bad", "message"), BAD)
def test_bad_input_raises_and_writes_nothing(echo, user, bad, message):
    given = {"cron": "0 9 * * *", "timezone": "UTC", "data": {}, "name": ""} | bad
    with pytest.raises(ValueError, match=message):
        api.create_schedule(echo, user, **given)
    assert not Schedule.objects.exists()
    assert not AuditEntry.objects.exists()


@pytest.mark.bothmodes
@pytest.mark.django_db  # writes nothing: a rolled-back test is enough
@pytest.mark.parametrize(("bad", "message"), BAD)
def test_a_bad_change_raises_and_changes_nothing(echo, user, bad, message):
    schedule = api.create_schedule(echo, user, "0 9 * * *", data={"keep": True}, name="kept")
    with pytest.raises(ValueError, match=message):
        api.update_schedule(schedule, user, paused=True, **bad)
    after = Schedule.objects.get(pk=schedule.pk)
    assert (after.cron, after.timezone, after.data, after.name, after.paused, after.version) == (
        "0 9 * * *",
        "UTC",
        {"keep": True},
        "kept",
        False,
        schedule.version,
    )
    assert audit_kinds(schedule.pk) == ["schedule.created"]


# --- the audit and who may do what ----------------------------------------------------------


def test_every_change_is_audited_with_who_did_it(echo, user, make_user):
    operator = make_user("olga", is_staff=True)
    schedule = api.create_schedule(echo, user, "0 9 * * *")
    api.update_schedule(schedule, operator, cron="0 10 * * *")
    api.pause_schedule(schedule, operator)
    api.resume_schedule(schedule, user)
    api.delete_schedule(schedule, operator)
    entries = AuditEntry.objects.filter(object_type="schedule", object_id=schedule.pk)
    rows = list(entries.order_by("created", "id").values_list("kind", "actor__username"))
    assert rows == [
        ("schedule.created", "alice"),
        ("schedule.updated", "olga"),
        ("schedule.paused", "olga"),
        ("schedule.resumed", "alice"),
        ("schedule.deleted", "olga"),
    ]
    updated = entries.get(kind="schedule.updated")
    assert updated.data == {"before": {"cron": "0 9 * * *"}, "after": {"cron": "0 10 * * *"}}
    assert "olga" in updated.message


def test_others_may_neither_see_nor_change_a_schedule(echo, user, other_user):
    schedule = api.create_schedule(echo, user, "0 9 * * *")
    assert list(api.visible_schedules(other_user)) == []
    assert list(api.visible_schedules(user)) == [schedule]
    for act in (
        lambda: api.update_schedule(schedule, other_user, cron="0 10 * * *"),
        lambda: api.pause_schedule(schedule, other_user),
        lambda: api.resume_schedule(schedule, other_user),
        lambda: api.delete_schedule(schedule, other_user),
    ):
        with pytest.raises(PermissionDenied):
            act()
    after = Schedule.objects.get(pk=schedule.pk)
    assert (after.cron, after.paused, after.version) == ("0 9 * * *", False, schedule.version)
    assert audit_kinds(schedule.pk) == ["schedule.created"]


def test_only_operators_schedule_flows_for_someone_else(echo, user, other_user, make_user):
    shared = api.create_routine("shared", ["t_echo"], owner=None)
    with pytest.raises(PermissionDenied, match="only operators"):
        api.create_schedule(shared, user, "0 9 * * *", owner=other_user)
    operator = make_user("olga", is_staff=True)
    schedule = api.create_schedule(shared, operator, "0 9 * * *", owner=other_user)
    assert schedule.owner == other_user
    assert list(api.visible_schedules(other_user)) == [schedule]
    assert schedule in api.visible_schedules(operator)
    api.pause_schedule(schedule, operator)


def test_the_routine_must_be_one_the_user_and_the_owner_may_see(echo, user, other_user, make_user):
    with pytest.raises(Routine.DoesNotExist):
        api.create_schedule(echo, other_user, "0 9 * * *")  # alice's routine
    operator = make_user("olga", is_staff=True)
    with pytest.raises(ValueError, match="bob may not see routine 'nightly'"):
        api.create_schedule(echo, operator, "0 9 * * *", owner=other_user)
    other_user.is_active = False
    other_user.save()
    shared = api.create_routine("shared", ["t_echo"], owner=None)
    with pytest.raises(ValueError, match="not active"):
        api.create_schedule(shared, operator, "0 9 * * *", owner=other_user)
    assert not Schedule.objects.exists() and not AuditEntry.objects.exists()


def test_anonymous_users_may_not_schedule(echo):
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(PermissionDenied):
        api.create_schedule(echo, AnonymousUser(), "0 9 * * *")
    assert list(api.visible_schedules(AnonymousUser())) == []
