"""Schedules: flows of a routine started on a cron expression, in a time zone, with data, for an
owner; who may see and change one, its next due times and their meaning in words, and the
housekeeping duty that fires the due ones.

Due times are computed in the schedule's own time zone (a daily "0 9 * * *" in Europe/Berlin is
09:00 in Berlin all year) and stored in UTC. Around a change of the clocks:

- a wall time the clocks skip (02:30 on a spring-forward night) comes due at the first instant
  after the gap (03:00, once);
- a wall time that happens twice (02:30 on a fall-back night) comes due once, the first time,
  for an expression of fixed hours and minutes; one whose minute or hour field starts with `*`
  ("*/20 * * * *", "15 * * * *") is a rhythm in real time and comes due in both.

Catch-up: a consumer that finds a schedule's `next_run` passed records ONE `ScheduleRun` for
the latest due time passed (with how many earlier ones it skipped, `missed`) and starts one
flow, however long everything was down; the schedule's next due time is then the first after
now. Exactly once: that write is a compare-and-set on the schedule's `version` and
`next_run`, and a due time's run is unique, so with several consumers one of them fires it.

A paused schedule does not fire; resuming it computes its next run from then: due times
missed while it was paused never start. Every change by a user writes an `AuditEntry`
("schedule.created", "schedule.updated", "schedule.paused", "schedule.resumed",
"schedule.deleted"), kept when the schedule is deleted.
"""

from __future__ import annotations

import functools
import logging
import re
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from cron_descriptor import Options, get_description
from croniter import CroniterBadDateError, CroniterError, croniter
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils.timezone import now as current_time

from engine import access
from engine.core.errors import StaleFlowError
from engine.flows.models import AuditEntry, Routine, Schedule, ScheduleRun
from engine.flows.routines import visible_routines
from engine.flows.service import start_flow
from engine.jsonsafe import check_text, ensure_json, storable_text

__all__ = [
    "MISSED_COUNTED",
    "StaleScheduleError",
    "create_schedule",
    "delete_schedule",
    "describe",
    "due_times",
    "fire_schedule",
    "fire_schedules",
    "pause_schedule",
    "resume_schedule",
    "time_zones",
    "upcoming",
    "update_schedule",
    "validate_cron",
    "validate_time_zone",
    "visible_schedules",
]

logger = logging.getLogger(__name__)

# How many due times a catch-up counts one by one; after a longer outage `missed` is this
# many ("at least"), and the due time fired is still the latest one passed.
MISSED_COUNTED = 1000
# Due schedules one housekeeping pass fires; the rest are fired by the next pass.
FIRE_LIMIT = 50
_ATTEMPTS = 5  # re-reads when a consumer fired the schedule between read and write
_NAME_LENGTH = Schedule._meta.get_field("name").max_length or 200
_CRON_LENGTH = Schedule._meta.get_field("cron").max_length or 200

CRON_HELP = (
    "a cron expression has five fields: minute (0-59), hour (0-23), day of month (1-31), "
    "month (1-12 or jan-dec) and day of week (0-7 or sun-sat; 0 and 7 are Sunday), "
    'e.g. "0 9 * * 1-5" for 09:00 on weekdays; or one of '
)
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
CRON_HELP += ", ".join(ALIASES)


class StaleScheduleError(StaleFlowError):
    """The schedule changed since the caller loaded it; reload and try again."""


# --- checks ----------------------------------------------------------------------------------


def _fields(cron: str) -> str:
    """The five fields of a valid expression (an alias expanded)."""
    return ALIASES.get(cron, cron)


def validate_cron(cron: Any) -> str:
    """`cron` with its spaces normalised (an alias in lower case), or ValueError saying what
    is wrong: not five fields (seconds and years are not supported), a field that does not
    parse or is out of range, croniter's random and hashed values (`R`, `H`), a day that
    never occurs in the months given ("0 0 30 2 *")."""
    if not isinstance(cron, str) or not cron.strip():
        raise ValueError(f"a schedule needs a cron expression: {CRON_HELP}")
    check_text(cron, "cron")
    if len(cron) > _CRON_LENGTH:
        raise ValueError(f"a cron expression has at most {_CRON_LENGTH} characters")
    parts = cron.split()
    text = " ".join(parts)
    if len(parts) == 1 and parts[0].startswith("@"):
        if parts[0].lower() not in ALIASES:
            raise ValueError(f"unknown cron alias {text!r}: {CRON_HELP}")
        return parts[0].lower()
    if len(parts) in (6, 7):
        raise ValueError(
            f"{text!r} has {len(parts)} fields: seconds and years are not supported; {CRON_HELP}"
        )
    if len(parts) != 5:
        raise ValueError(f"{text!r} is not a cron expression: {CRON_HELP}")
    for part in (piece for field in parts for piece in field.split(",")):
        if part[:1].lower() in ("h", "r"):
            raise ValueError(
                f"{text!r} uses a random or hashed value ({part}), which schedules do not "
                "support: give the minutes and hours themselves"
            )
    try:
        croniter.expand(text, strict=True)
    except CroniterError as exc:
        detail = re.sub(r"^\[.*?\]\s*", "", str(exc)).strip()
        if "can never occur" in detail:
            detail = detail.replace("is not acceptable. ", "")
            detail = detail[:1].lower() + detail[1:]
            raise ValueError(f"{text!r} never comes due: {detail}") from None
        raise ValueError(f"{text!r} is not a valid cron expression: {_bad_field(parts)}") from None
    return text


FIELDS = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31, or L for the last day"),
    ("month", "1-12 or jan-dec"),
    ("day of week", "0-7 or sun-sat, where 0 and 7 are Sunday"),
]


def _bad_field(parts: list[str]) -> str:
    """Which of the five fields croniter refuses, and what it takes."""
    for index, (field, takes) in enumerate(FIELDS):
        alone = ["*"] * 5
        alone[index] = parts[index]
        try:
            croniter.expand(" ".join(alone))
        except CroniterError as exc:
            problem = "is out of range" if "out of range" in str(exc) else "does not parse"
            return (
                f"the {field} field {parts[index]!r} {problem} ({field}: {takes}; lists "
                "like 1,15, ranges like 1-5 and steps like */10 combine them)"
            )
    return "its fields do not go together; " + CRON_HELP


@functools.cache
def time_zones() -> tuple[str, ...]:
    """Every IANA time zone name a schedule may use, sorted."""
    return tuple(sorted(zoneinfo.available_timezones()))


def validate_time_zone(name: Any) -> zoneinfo.ZoneInfo:
    """The time zone named `name` (an IANA name such as "Europe/Berlin" or "UTC"), or
    ValueError."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError('a schedule needs a time zone, e.g. "UTC" or "Europe/Berlin"')
    check_text(name, "timezone")
    name = name.strip()
    if name not in set(time_zones()):
        shown = name if len(name) <= 64 else name[:63] + "…"
        raise ValueError(
            f'unknown time zone {shown!r}: use an IANA name such as "Europe/Berlin", '
            '"America/New_York" or "UTC"'
        )
    return zoneinfo.ZoneInfo(name)


def _data(data: Any) -> dict[str, Any]:
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError('a schedule\'s data must be a JSON object, like {"key": "value"}')
    ensure_json(data, "data")
    return data


def _name(name: Any) -> str:
    if not isinstance(name, str):
        raise ValueError("a schedule's name must be text")
    name = name.strip()
    check_text(name, "name")
    if len(name) > _NAME_LENGTH:
        raise ValueError(f"a schedule's name has at most {_NAME_LENGTH} characters")
    return name


# --- due times -------------------------------------------------------------------------------


def _wildcard(cron: str) -> bool:
    """Whether the expression's minute or hour field starts with `*`: a rhythm in real time,
    which comes due in both passes of an hour the clocks repeat."""
    minute, hour = _fields(cron).split()[:2]
    return minute.startswith("*") or hour.startswith("*")


def _repeated(local: datetime) -> bool:
    """Whether `local` is the second pass of a wall time the clocks repeat (fall back)."""
    return bool(local.fold) and local.replace(fold=0).utcoffset() != local.utcoffset()


def _due_times(
    cron: str, zone: zoneinfo.ZoneInfo, moment: datetime, *, backwards: bool = False
) -> Iterator[datetime]:
    """The due times strictly after `moment` (strictly before it, `backwards`), in UTC, in
    order. Raises ValueError when the expression never comes due (croniter looks 50 years
    ahead)."""
    fixed = not _wildcard(cron)
    fields = _fields(cron)
    times = croniter(fields, moment.astimezone(zone), ret_type=datetime)
    last = moment
    skipped = 0
    while True:
        try:
            local = times.get_prev(datetime) if backwards else times.get_next(datetime)
        except CroniterBadDateError:
            raise ValueError(f"{cron!r} never comes due") from None
        due = local.astimezone(UTC)
        # The second pass of a repeated wall time, for fixed times; and never a time twice
        # (two wall times the clocks skip both come due at the end of the gap).
        if (fixed and _repeated(local)) or (due >= last if backwards else due <= last):
            skipped += 1
            if skipped > 1000:  # croniter going round in circles: no sane expression does
                raise ValueError(f"{cron!r} does not move on in time zone {zone.key}")
            continue
        skipped = 0
        last = due
        yield due


def next_due(cron: str, zone: zoneinfo.ZoneInfo, after: datetime) -> datetime:
    """The first due time strictly after `after`, in UTC."""
    return next(_due_times(cron, zone, after))


def upcoming(schedule: Schedule, n: int = 5, now: datetime | None = None) -> list[datetime]:
    """The next `n` due times of `schedule` in UTC: from its `next_run` (which may have passed,
    while no consumer runs), or for a paused one those after now (if it were resumed now)."""
    n = max(0, min(int(n), 100))
    if n == 0:
        return []
    try:
        zone = zoneinfo.ZoneInfo(schedule.timezone)
        if schedule.paused or schedule.next_run is None:
            times = _due_times(schedule.cron, zone, now or current_time())
            return [next(times) for _ in range(n)]
        first = schedule.next_run
        times = _due_times(schedule.cron, zone, first)
        return [first, *(next(times) for _ in range(n - 1))]
    except (ValueError, KeyError, CroniterError):  # one written around the checks
        return []


def due_times(cron: str, timezone: str, n: int = 3, now: datetime | None = None) -> list[datetime]:
    """The next `n` due times after now of `cron` in `timezone`, in UTC (what a schedule of
    them would do): ValueError, as `create_schedule` says it, when either does not fit."""
    cron = validate_cron(cron)
    zone = validate_time_zone(timezone)
    times = _due_times(cron, zone, now or current_time())
    return [next(times) for _ in range(max(0, min(int(n), 100)))]


def _catch_up(
    cron: str, zone: zoneinfo.ZoneInfo, first: datetime, now: datetime
) -> tuple[datetime, int]:
    """The latest due time at or before `now`, counting from `first` (a due time at or
    before `now`), and how many due times that is (at most `MISSED_COUNTED` + 1)."""
    latest, count = first, 1
    for due in _due_times(cron, zone, first):
        if due > now:
            return latest, count
        if count > MISSED_COUNTED:
            break
        latest, count = due, count + 1
    latest = next(_due_times(cron, zone, now + timedelta(microseconds=1), backwards=True))
    return max(latest, first), count


_DESCRIBE = Options()
_DESCRIBE.use_24hour_time_format = True


def describe(cron: str) -> str:
    """The cron expression in words ("At 09:00, Monday through Friday")."""
    try:
        return str(get_description(_fields(cron), _DESCRIBE))
    except Exception:  # a description is a courtesy: never fail a page for one
        logger.warning("no description of cron expression %r", cron, exc_info=True)
        return f"cron {cron}"


# --- who may see and change ------------------------------------------------------------------


def visible_schedules(user: Any) -> QuerySet[Schedule]:
    """The schedules `user` may see and change: their own; every one for operators."""
    return access.visible(user, Schedule.objects.select_related("routine", "owner"))


def _audit(kind: str, schedule: Schedule, actor: Any, message: str, **data: Any) -> None:
    AuditEntry.objects.create(
        kind=kind,
        object_type="schedule",
        object_id=schedule.pk,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        message=message,
        data=data,
    )


def _who(user: Any) -> str:
    return user.get_username() if user is not None else "nobody"


def _summary(schedule: Schedule) -> dict[str, Any]:
    return {
        "routine": schedule.routine_id,
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "data": schedule.data,
        "owner": schedule.owner_id,
        "paused": schedule.paused,
    }


def create_schedule(
    routine: Routine | int,
    user: Any,
    cron: str,
    timezone: str = "UTC",
    data: dict[str, Any] | None = None,
    owner: Any = None,
    name: str = "",
    now: datetime | None = None,
) -> Schedule:
    """A schedule starting flows of `routine` for `owner` (the acting `user` by default) on
    `cron` in `timezone`, each with `data`. The routine must be one `user` may see (else
    `Routine.DoesNotExist`, as for a missing one) and one the owner may see; a schedule for
    someone else takes an operator (`PermissionDenied`). Bad input raises ValueError and
    writes nothing."""
    if user is None or not user.is_authenticated:
        raise PermissionDenied("sign in to schedule flows")
    routine_id = routine.pk if isinstance(routine, Routine) else routine
    found = visible_routines(user).filter(pk=routine_id).first()
    if found is None:
        raise Routine.DoesNotExist(f"routine {routine_id} does not exist")
    owner = user if owner is None else owner
    if owner.pk != user.pk and not access.is_operator(user):
        raise PermissionDenied("only operators may schedule flows for someone else")
    if not owner.is_active:
        raise ValueError(f"{_who(owner)}'s account is not active: flows cannot start for it")
    if not visible_routines(owner).filter(pk=found.pk).exists():
        raise ValueError(
            f"{_who(owner)} may not see routine {found.name!r}: pick one of theirs or a shared one"
        )
    cron = validate_cron(cron)
    zone = validate_time_zone(timezone)
    data = _data(data)
    name = _name(name)
    next_run = next_due(cron, zone, now or current_time())
    with transaction.atomic():
        schedule = Schedule.objects.create(
            routine=found,
            name=name,
            cron=cron,
            timezone=zone.key,
            data=data,
            owner=owner,
            next_run=next_run,
        )
        _audit(
            "schedule.created",
            schedule,
            user,
            f"{_who(user)} scheduled routine {found.name!r} for {_who(owner)}: {cron} ({zone.key})",
            **_summary(schedule),
        )
    return Schedule.objects.select_related("routine", "owner").get(pk=schedule.pk)


def _load(schedule: Schedule | int, user: Any) -> Schedule:
    schedule_id = schedule.pk if isinstance(schedule, Schedule) else int(schedule)
    found = Schedule.objects.select_related("routine", "owner").filter(pk=schedule_id).first()
    if found is None:
        raise Schedule.DoesNotExist(f"schedule {schedule_id} does not exist")
    access.require(user, found.owner_id, "schedule")
    return found


def update_schedule(
    schedule: Schedule | int,
    user: Any,
    *,
    name: str | None = None,
    cron: str | None = None,
    timezone: str | None = None,
    data: dict[str, Any] | None = None,
    paused: bool | None = None,
    now: datetime | None = None,
) -> Schedule:
    """Change what is given of the schedule's name, cron expression, time zone, data and
    paused state, in one write (None leaves a field as it is). A new cron expression or time
    zone, or resuming, computes the next run from now; pausing clears it. Bad input raises
    ValueError and changes nothing; the owner and operators may change a schedule
    (`PermissionDenied` for others)."""
    checked: dict[str, Any] = {}
    if name is not None:
        checked["name"] = _name(name)
    if cron is not None:
        checked["cron"] = validate_cron(cron)
    if timezone is not None:
        checked["timezone"] = validate_time_zone(timezone).key
    if data is not None:
        checked["data"] = _data(data)
    if paused is not None:
        if not isinstance(paused, bool):
            raise ValueError("paused must be true or false")
        checked["paused"] = paused
    for _ in range(_ATTEMPTS):
        current = _load(schedule, user)
        changes = {key: value for key, value in checked.items() if getattr(current, key) != value}
        if not changes:
            return current
        if "paused" in changes:
            changes["next_run"] = None
        if not changes.get("paused", current.paused) and (
            {"cron", "timezone", "paused"} & changes.keys()
        ):
            cron_now = changes.get("cron", current.cron)
            zone = zoneinfo.ZoneInfo(changes.get("timezone", current.timezone))
            changes["next_run"] = next_due(cron_now, zone, now or current_time())
        with transaction.atomic():
            written = Schedule.objects.filter(pk=current.pk, version=current.version).update(
                **changes, version=F("version") + 1, updated=current_time()
            )
            if written:
                _record(current, user, changes)
                break
    else:
        raise StaleScheduleError(f"schedule {current.pk} keeps changing; try again")
    return Schedule.objects.select_related("routine", "owner").get(pk=current.pk)


def _record(before: Schedule, user: Any, changes: dict[str, Any]) -> None:
    """The audit entries of a change: one for a pause or resume, one for the rest."""
    who = _who(user)
    edited = {key: value for key, value in changes.items() if key not in ("paused", "next_run")}
    if edited:
        was = {key: getattr(before, key) for key in edited}
        fields = ", ".join(sorted(edited))
        _audit(
            "schedule.updated",
            before,
            user,
            f"{who} changed the {fields} of schedule {before.pk}",
            before=was,
            after=edited,
        )
    if "paused" in changes:
        kind = "schedule.paused" if changes["paused"] else "schedule.resumed"
        word = "paused" if changes["paused"] else "resumed"
        next_run = changes.get("next_run")
        _audit(
            kind,
            before,
            user,
            f"{who} {word} schedule {before.pk}",
            next_run=next_run.isoformat() if next_run else None,
        )


def pause_schedule(schedule: Schedule | int, user: Any) -> Schedule:
    """Stop the schedule firing until it is resumed (a paused one stays paused)."""
    return update_schedule(schedule, user, paused=True)


def resume_schedule(schedule: Schedule | int, user: Any, now: datetime | None = None) -> Schedule:
    """Let a paused schedule fire again, from its next due time after now: due times passed
    while it was paused do not start."""
    return update_schedule(schedule, user, paused=False, now=now)


def delete_schedule(schedule: Schedule | int, user: Any) -> None:
    """Delete the schedule and its runs' records (the flows it started stay); the audit
    keeps what it was."""
    current = _load(schedule, user)
    with transaction.atomic():
        _audit(
            "schedule.deleted",
            current,
            user,
            f"{_who(user)} deleted schedule {current.pk} of routine {current.routine.name!r}",
            **_summary(current),
        )
        Schedule.objects.filter(pk=current.pk).delete()


# --- firing ----------------------------------------------------------------------------------


def fire_schedules(now: datetime | None = None, limit: int = FIRE_LIMIT) -> int:
    """Fire every active schedule whose next run has come (a housekeeping duty of every
    consumer); returns how many due times this call recorded. One that fails is logged and
    left for the next pass; housekeeping goes on."""
    now = now or current_time()
    due = (
        Schedule.objects.filter(paused=False, next_run__lte=now)
        .order_by("next_run", "pk")
        .values_list("pk", flat=True)
    )
    fired = 0
    for schedule_id in list(due[:limit]):
        try:
            if fire_schedule(schedule_id, now):
                fired += 1
        except Exception:
            logger.exception("could not fire schedule %s; trying again next pass", schedule_id)
    return fired


def fire_schedule(schedule: Schedule | int, now: datetime | None = None) -> ScheduleRun | None:
    """Fire one schedule whose next run has come: in ONE transaction, move its next run to
    the first due time after now (a compare-and-set on the version read), record the run of
    the latest due time passed (with how many it skipped) and start its flow. None when it
    was not due or another consumer fired it first (a `Schedule` given is taken as read, so
    a copy read before another consumer fired it does nothing). A flow that cannot start
    (the routine has no steps, the owner's account is inactive, ...) is recorded in the
    run's `error`; the schedule moves on all the same."""
    now = now or current_time()
    if isinstance(schedule, Schedule):
        read: Schedule | None = schedule
    else:
        read = Schedule.objects.select_related("routine", "owner").filter(pk=schedule).first()
    if read is None or read.paused or read.next_run is None:
        return None
    return _fire(read, read.next_run, now)


def _fire(schedule: Schedule, due: datetime, now: datetime) -> ScheduleRun | None:
    if due > now:
        return None
    try:
        zone = zoneinfo.ZoneInfo(schedule.timezone)
        latest, count = _catch_up(schedule.cron, zone, due, now)
        following = next_due(schedule.cron, zone, now)
    except (ValueError, KeyError, CroniterError) as exc:
        _stop(schedule, exc)  # its cron or time zone stopped working: never spin on it
        return None
    with transaction.atomic():
        moved = Schedule.objects.filter(
            pk=schedule.pk, version=schedule.version, paused=False, next_run=due
        ).update(next_run=following, last_run=latest, version=F("version") + 1)
        if not moved:
            return None  # another consumer fired it, or it was paused or edited meanwhile
        try:
            with transaction.atomic():
                run = ScheduleRun.objects.create(
                    schedule_id=schedule.pk, due=latest, missed=count - 1
                )
        except IntegrityError:
            return None  # this due time started its flow already
        try:
            with transaction.atomic():
                run.flow = _start(schedule)
        except Exception as exc:
            run.error = storable_text(_failure(exc), 2000)
            logger.warning("schedule %s could not start its flow: %s", schedule.pk, run.error)
        run.save(update_fields=["flow", "error"])
    return run


def _stop(schedule: Schedule, exc: Exception) -> None:
    """Pause a schedule whose cron expression or time zone no longer works (written around
    the service functions, or a time zone gone from the system's database), and say why in
    the audit: it would otherwise come due again on every pass."""
    why = storable_text(str(exc) or type(exc).__name__, 500)
    with transaction.atomic():
        stopped = Schedule.objects.filter(pk=schedule.pk, version=schedule.version).update(
            paused=True, next_run=None, version=F("version") + 1, updated=current_time()
        )
        if stopped:
            _audit(
                "schedule.paused",
                schedule,
                None,
                f"schedule {schedule.pk} was paused: its cron expression {schedule.cron!r} or "
                f"time zone {schedule.timezone!r} does not work ({why}); fix it and resume it",
                next_run=None,
            )
    logger.warning("schedule %s paused: it cannot be computed: %s", schedule.pk, why)


def _start(schedule: Schedule) -> Any:
    owner = schedule.owner
    if not owner.is_active:
        raise PermissionDenied(f"{_who(owner)}'s account is not active")
    if not visible_routines(owner).filter(pk=schedule.routine_id).exists():
        raise PermissionDenied(f"{_who(owner)} may no longer see routine {schedule.routine.name!r}")
    return start_flow(schedule.routine, owner, dict(schedule.data))


def _failure(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"the flow could not start: {text}"
