"""What the schedules page shows, from the signed-in user and plain arguments (never a
request), as `studio.web.pages` does for the other pages: the schedules the user may see with
their cron expression in words, next run (in the schedule's time zone and in UTC) and last
runs; the form that creates one; the confirmation of a pause, resume or delete; and the hint
the form shows while a cron expression is typed. Everything here reaches the engine through
`engine.api`."""

from __future__ import annotations

import functools
import zoneinfo
from datetime import datetime
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.http import Http404, QueryDict
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from engine import api
from engine.models import Schedule, ScheduleRun
from studio.web.forms import JSONTextField, TextField

PAGE_SIZE = 50
RUNS_SHOWN = 5  # the latest runs of each schedule on the page
UPCOMING = 3  # due times the hint and a resume's preview show

ACTIONS = {
    "pause": "Pause the schedule",
    "resume": "Resume the schedule",
    "delete": "Delete the schedule",
}

CRON_HELP = (
    'Five fields: minute hour day-of-month month day-of-week, e.g. "0 9 * * 1-5" for 09:00 '
    'on weekdays or "*/15 * * * *" every 15 minutes; or @hourly, @daily, @weekly, @monthly.'
)


# --- the form ----------------------------------------------------------------------------


class ScheduleForm(forms.Form):
    """A new schedule: a routine the user may see, when (cron and time zone), the data each
    flow starts with, and (operators only) whose flows they are."""

    routine = forms.ChoiceField(
        label="Routine",
        error_messages={
            "required": "Pick a routine.",
            "invalid_choice": "Pick one of the routines you may see.",
        },
    )
    name = TextField(max_length=200, required=False, label="Name (optional)")
    cron = TextField(
        max_length=200,
        label="Cron expression",
        help_text=CRON_HELP,
        error_messages={"required": 'Give a cron expression, e.g. "0 9 * * 1-5".'},
    )
    timezone = TextField(
        max_length=64,
        initial="UTC",
        label="Time zone",
        help_text='An IANA name such as "Europe/Berlin"; due times follow its clocks.',
        error_messages={"required": 'Give a time zone, e.g. "UTC" or "Europe/Berlin".'},
    )
    owner = TextField(
        max_length=150,
        required=False,
        label="Owner (optional username)",
        help_text="Whose flows they are; empty for yours.",
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        # Added here: as a class attribute the field would shadow the form's own `data`.
        self.fields["data"] = JSONTextField(
            object_only=True,
            empty={},
            required=False,
            label="Data (optional JSON object)",
            help_text='Each flow starts with it, e.g. {"report": "daily"}.',
        )
        routines = api.visible_routines(user).order_by("name", "id").only("name", "owner")
        self.routines = {str(routine.pk): routine for routine in routines}
        field = self.fields["routine"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [("", "Pick a routine…")] + [
            (pk, routine.name if routine.owner_id else f"{routine.name} (shared)")
            for pk, routine in self.routines.items()
        ]
        if not api.can_see_all(user):
            del self.fields["owner"]

    def clean_routine(self) -> Any:
        return self.routines[self.cleaned_data["routine"]]

    def clean_cron(self) -> str:
        try:
            return api.validate_cron(self.cleaned_data["cron"])
        except ValueError as exc:
            raise forms.ValidationError(_sentence(str(exc))) from None

    def clean_timezone(self) -> str:
        try:
            return api.validate_time_zone(self.cleaned_data["timezone"]).key
        except ValueError as exc:
            raise forms.ValidationError(_sentence(str(exc))) from None

    def clean_owner(self) -> Any:
        name = (self.cleaned_data.get("owner") or "").strip()
        if not name:
            return None
        owner = get_user_model().objects.filter(username=name, is_active=True).first()
        if owner is None:
            raise forms.ValidationError(f"There is no active user named {name!r}.")
        return owner


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


# --- the page ------------------------------------------------------------------------------


def when(moment: datetime | None, zone: str) -> dict[str, str] | None:
    """A moment as the page shows it: in the schedule's time zone and in UTC."""
    if moment is None:
        return None
    try:
        local = moment.astimezone(zoneinfo.ZoneInfo(zone))
    except (ValueError, KeyError):  # a zone gone from the system's database: UTC
        local = moment.astimezone(zoneinfo.ZoneInfo("UTC"))
    utc = moment.astimezone(zoneinfo.ZoneInfo("UTC"))
    return {
        "iso": utc.isoformat(),
        "local": f"{local:%Y-%m-%d %H:%M} {local.tzname()}",
        "utc": f"{utc:%Y-%m-%d %H:%M} UTC",
    }


def _runs(schedule_ids: list[int]) -> dict[int, list[ScheduleRun]]:
    """The latest `RUNS_SHOWN` runs of each schedule, in one query."""
    latest = Window(RowNumber(), partition_by=[F("schedule_id")], order_by=F("due").desc())
    rows = (
        ScheduleRun.objects.filter(schedule_id__in=schedule_ids)
        .select_related("flow")
        .annotate(rank=latest)
        .filter(rank__lte=RUNS_SHOWN)
        .order_by("schedule_id", "-due")
    )
    found: dict[int, list[ScheduleRun]] = {}
    for run in rows:
        found.setdefault(run.schedule_id, []).append(run)
    return found


def run_row(run: ScheduleRun, zone: str) -> dict[str, Any]:
    return {
        "run": run,
        "due": when(run.due, zone),
        "flow": run.flow,
        "missed": run.missed,
        "missed_more": run.missed >= api.MISSED_COUNTED,
    }


def schedule_row(schedule: Schedule, runs: list[ScheduleRun], now: datetime) -> dict[str, Any]:
    return {
        "schedule": schedule,
        "title": schedule.name or f"Schedule #{schedule.pk}",
        "words": api.describe_cron(schedule.cron),
        "next": when(schedule.next_run, schedule.timezone),
        "overdue": bool(
            not schedule.paused and schedule.next_run is not None and schedule.next_run <= now
        ),
        "runs": [run_row(run, schedule.timezone) for run in runs],
    }


def schedules(
    user: Any, params: QueryDict, form: ScheduleForm | None = None, **extra: Any
) -> dict[str, Any]:
    """The schedules page: the user's schedules (every one for operators), active ones by
    next run first, then the paused ones; and the form that creates one."""
    listed = api.visible_schedules(user).order_by(
        "paused", F("next_run").asc(nulls_last=True), "id"
    )
    page = Paginator(listed, PAGE_SIZE).get_page(params.get("page"))
    shown = list(page.object_list)
    runs = _runs([schedule.pk for schedule in shown])
    now = timezone.now()
    return {
        "rows": [schedule_row(schedule, runs.get(schedule.pk, []), now) for schedule in shown],
        "page": page,
        "form": form if form is not None else ScheduleForm(user=user),
        "time_zone_options": time_zone_options(),
        "operator": api.can_see_all(user),
        **extra,
    }


@functools.cache
def time_zone_options() -> SafeString:
    """The `<option>`s of the form's list of time zones, made once per process: about 600,
    which the template took 5 ms to render on every page of schedules."""
    return format_html_join("", '<option value="{}">', ((zone,) for zone in api.time_zones()))


def get_schedule(user: Any, pk: int) -> Schedule:
    """A schedule `user` may see; 404 otherwise (a foreign one is not revealed)."""
    schedule = api.visible_schedules(user).filter(pk=pk).first()
    if schedule is None:
        raise Http404("no such schedule")
    return schedule


def action(name: str) -> str:
    """`name` if it names an action on a schedule; 404 otherwise."""
    if name not in ACTIONS:
        raise Http404("no such action")
    return name


def preview(schedule: Schedule, name: str) -> str:
    """What the action will do, in words."""
    what = f"“{schedule.name or f'Schedule #{schedule.pk}'}” of routine “{schedule.routine.name}”"
    if name == "pause":
        upcoming = when(schedule.next_run, schedule.timezone)
        then = f" Its next run, {upcoming['local']}, will not start." if upcoming else ""
        return f"{what} stops starting flows until you resume it.{then}"
    if name == "resume":
        times = api.upcoming_runs(schedule, 1) if schedule.paused else []
        upcoming = when(times[0], schedule.timezone) if times else None
        then = f" Its next run is {upcoming['local']} ({upcoming['utc']})." if upcoming else ""
        return (
            f"{what} starts flows again from its next due time after now; due times passed "
            f"while it was paused do not start.{then}"
        )
    return (
        f"{what} is deleted with the record of its runs. The flows it started stay; the "
        "audit keeps who deleted it and what it was."
    )


def confirm(schedule: Schedule, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "schedule": schedule,
        "action": name,
        "title": ACTIONS[name],
        "preview": preview(schedule, name),
        "destructive": name == "delete",
        **extra,
    }


def cron_hint(cron: str, zone: str) -> dict[str, Any]:
    """What the form says of a cron expression being typed: its meaning in words and its
    next due times in the time zone, or what is wrong with either."""
    cron = cron.strip()
    if not cron:
        return {"empty": True}
    try:
        cron = api.validate_cron(cron)
    except ValueError as exc:
        return {"error": _sentence(str(exc))}
    hint: dict[str, Any] = {"words": api.describe_cron(cron)}
    try:
        times = api.due_times(cron, zone or "UTC", UPCOMING)
    except ValueError as exc:
        hint["zone_error"] = _sentence(str(exc))
    else:
        hint["next"] = [when(moment, zone or "UTC") for moment in times]
    return hint
