"""Human steps: who may answer a waiting step, the typed input it takes, its deadline, and
telling people about it.

- **Assignees.** `wait(..., assign_to=...)` names users and groups; they (and operators) may
  answer, the owner only when assigned or when nobody is. An assignee who is not the owner
  sees that flow's page while it waits for them, and nothing else of the owner's.
- **Typed input.** A script's `input_form` (a Django Form) validates what is pushed; the
  step sees the cleaned data in JSON-safe form. `input_fields` stays a shorthand.
- **Deadlines.** A wait with a timeout stores its deadline with the flow; housekeeping
  performs the step's `on_timeout()` once it passes (or fails the flow as timed out).
- **Notifications.** Each committed wait tells its assignees (or the owner) once: a
  `Notification` row written with the wait, in the same transaction, and an e-mail sent by
  whichever consumer claims the row first. A reminder before the deadline, once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import connections, router, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from engine import access, config
from engine import events as engine_events
from engine.core.flows import script as scripts
from engine.flows.models import Flow, FlowAssignee, Notification
from engine.flows.status import FlowState
from engine.jsonsafe import to_text
from engine.rows import cursor_for

logger = logging.getLogger(__name__)


# --- who may answer ------------------------------------------------------------------------


def resolve_assignees(refs: Iterable[Any]) -> tuple[list[int], list[int]]:
    """`assign_to` as (user ids, group ids). A user or a Group object, or a group's name;
    a name no group has, or anything else, is a ValueError the step fails with."""
    users: list[int] = []
    groups: list[int] = []
    user_model = get_user_model()
    for ref in refs:
        if isinstance(ref, Group):
            if ref.pk is None:
                raise ValueError(f"assign_to: group {ref.name!r} is not saved")
            groups.append(ref.pk)
        elif isinstance(ref, str):
            found = Group.objects.filter(name=ref).values_list("pk", flat=True).first()
            if found is None:
                raise ValueError(f"assign_to: no group is named {ref!r}")
            groups.append(found)
        elif isinstance(ref, user_model):
            if ref.pk is None:
                raise ValueError(f"assign_to: user {ref} is not saved")
            users.append(ref.pk)
        else:
            raise ValueError(
                f"assign_to takes users, groups or group names, not {type(ref).__name__} {ref!r}"
            )
    return sorted(set(users)), sorted(set(groups))


def assignees_of(flow: Flow) -> tuple[set[int], set[int]]:
    """The (user ids, group ids) assigned to the flow's current wait: as read with the flow
    (`engine.api.read_flow`, in the same statement) while the flow is at the version read,
    else read now. (A wait's assignees change only in the writes that begin and end it,
    which change the flow's version: so the ones read with a version are that version's.)"""
    known = flow.__dict__.get(_READ_WITH_FLOW)
    if known is not None and known[0] == flow.version:
        return set(known[1]), set(known[2])
    users: set[int] = set()
    groups: set[int] = set()
    db = connections[router.db_for_read(FlowAssignee)]
    with cursor_for(db) as cursor:  # (asked on every answer and page: a statement written once)
        cursor.execute(_assignees_sql(db), [flow.pk])
        rows = cursor.fetchall()
    for user_id, group_id in rows:
        if user_id is not None:
            users.add(user_id)
        if group_id is not None:
            groups.add(group_id)
    return users, groups


_READ_WITH_FLOW = "_assignees_read"


def assignees_column(db: Any, flow_id: str) -> str:
    """A column for the statement that reads a flow (`flow_id`: its id column there): its
    assignees, as `user:group` pairs joined by commas (see `remember_assignees`)."""
    quote, meta = db.ops.quote_name, cast(Any, FlowAssignee._meta)
    user, group, flow = (quote(meta.get_field(name).column) for name in ("user", "group", "flow"))
    join = "string_agg" if db.vendor == "postgresql" else "group_concat"
    pair = f"COALESCE(CAST(a.{user} AS TEXT), '') || ':' || COALESCE(CAST(a.{group} AS TEXT), '')"
    return f"(SELECT {join}({pair}, ',') FROM {quote(meta.db_table)} a WHERE a.{flow} = {flow_id})"


def remember_assignees(flow: Flow, pairs: str | None) -> None:
    """Keep what `assignees_column` read with `flow`, for `assignees_of` at this version."""
    users: list[int] = []
    groups: list[int] = []
    for pair in (pairs or "").split(","):
        if pair:
            user, _, group = pair.partition(":")
            if user:
                users.append(int(user))
            if group:
                groups.append(int(group))
    flow.__dict__[_READ_WITH_FLOW] = (flow.version, users, groups)


_ASSIGNEES_SQL: dict[str, str] = {}


def _assignees_sql(db: Any) -> str:
    sql = _ASSIGNEES_SQL.get(db.vendor)
    if sql is None:
        quote, meta = db.ops.quote_name, cast(Any, FlowAssignee._meta)
        user, group, flow = (
            quote(meta.get_field(name).column) for name in ("user", "group", "flow")
        )
        sql = _ASSIGNEES_SQL[db.vendor] = (
            f"SELECT {user}, {group} FROM {quote(meta.db_table)} WHERE {flow} = %s"
        )
    return sql


def is_assignee(user: Any, flow: Flow) -> bool:
    """Whether `user` is assigned to the flow's current wait, directly or through a group."""
    if user is None or not user.is_authenticated or flow.state != FlowState.WAITING:
        return False
    users, groups = assignees_of(flow)
    if user.pk in users:
        return True
    return bool(groups) and user.groups.filter(pk__in=groups).exists()


def may_answer(user: Any, flow: Flow) -> bool:
    """Whether `user` may answer the flow's wait: operators always; when the wait is
    assigned, its assignees (not the owner unless assigned); else the owner."""
    if user is None or not user.is_authenticated:
        return False
    users, groups = assignees_of(flow)
    if not users and not groups and flow.owner_id == user.pk:
        return True  # (the common case first: no query of the user's permissions)
    if user.pk in users or access.is_operator(user):
        return True
    return bool(groups) and user.groups.filter(pk__in=groups).exists()


def may_see(user: Any, flow: Flow) -> bool:
    """Whether `user` may see the flow's page: whoever may act on it, and its assignees
    while it waits for them."""
    return access.may_act(user, flow.owner_id) or is_assignee(user, flow)


def sees_results(user: Any, flow: Flow) -> bool:
    """Whether the flow's page shows `user` the step results: always to the owner and
    operators; to an assignee unless the waiting step's script hides them."""
    if access.may_act(user, flow.owner_id):
        return True
    step = flow.current_step
    if step is None:
        return False
    try:
        cls = scripts.get_script(step["script"])
    except LookupError:
        return False
    return bool(cls.results_visible_to_assignees)


def waiting_for(user: Any) -> QuerySet[Flow]:
    """Every flow waiting for `user` to answer: as an assignee, directly or through a group,
    or as the owner of a wait nobody is assigned to. Soonest deadline first."""
    if user is None or not user.is_authenticated:
        return Flow.objects.none()
    groups = list(user.groups.values_list("pk", flat=True))
    mine = Q(assignees__user=user) | Q(owner=user, assignees__isnull=True)
    if groups:
        mine |= Q(assignees__group__in=groups)
    ids = Flow.objects.filter(mine, state=FlowState.WAITING).values("pk")
    return (
        Flow.objects.filter(pk__in=ids)
        .select_related("routine", "owner")
        .order_by(_deadline_first(), "-updated", "-id")
    )


def _deadline_first() -> Any:
    from django.db.models import F

    return F("deadline").asc(nulls_last=True)


# --- typed input -----------------------------------------------------------------------------


class DecisionForm(forms.Form):
    """A yes/no step: Approve or Reject, with a comment that rejecting requires. Subclass it
    to ask for more (an amount, a date); the cleaned input has `decision` ("approve" or
    "reject"), `approved` (bool) and `comment`."""

    decision = forms.ChoiceField(
        choices=[("approve", "Approve"), ("reject", "Reject")], widget=forms.HiddenInput
    )
    comment = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required when you reject: say why.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("decision") == "reject" and not (cleaned.get("comment") or "").strip():
            self.add_error("comment", "Say why you reject it.")
        cleaned["approved"] = cleaned.get("decision") == "approve"
        return cleaned


def is_decision(form_class: Any) -> bool:
    return isinstance(form_class, type) and issubclass(form_class, DecisionForm)


def input_form_of(flow: Flow) -> type[forms.Form] | None:
    """The Form class of the flow's current step, if its script declares one."""
    step = flow.current_step
    if step is None:
        return None
    try:
        cls = scripts.get_script(step["script"])
    except LookupError:
        return None
    form = cls.input_form
    return form if isinstance(form, type) and issubclass(form, forms.Form) else None


def clean_input(flow: Flow, data: Any) -> Any:
    """The input for the flow's waiting step: checked with its script's `input_form` and
    returned as its cleaned data in JSON-safe form (dates as ISO text, decimals as text);
    invalid input is a ValidationError with the field errors. Steps without a form take
    any JSON value, as before."""
    form_class = input_form_of(flow)
    if form_class is None:
        return data
    if not isinstance(data, Mapping):
        raise ValidationError(
            {"__all__": ["this step takes an object with the fields of its form"]}
        )
    form = form_class(data=_form_data(form_class, data))
    if not form.is_valid():
        raise ValidationError(
            {field: [str(e) for e in errors] for field, errors in form.errors.items()}
        )
    return json_safe(form.cleaned_data)


def _form_data(form_class: type[forms.Form], data: Mapping[str, Any]) -> dict[str, Any]:
    """JSON values as a form reads them, the way a browser would post them: a JSON false is
    an unchecked box, lists stay lists for multiple choices, null is a missing value, and
    any other value is text (numbers as written; anything else as JSON text, which the
    field then refuses with its own message rather than failing inside Django)."""
    fields = form_class.base_fields
    converted: dict[str, Any] = {}
    for name, value in data.items():
        field = fields.get(name)
        if value is None:
            continue
        if isinstance(field, forms.BooleanField):
            if value is False:
                continue  # an unchecked box is a missing key
            converted[name] = value
        elif isinstance(field, forms.MultipleChoiceField) and isinstance(value, list):
            converted[name] = [v if isinstance(v, str) else json.dumps(v) for v in value]
        else:
            converted[name] = value if isinstance(value, str) else json.dumps(value)
    return converted


def json_safe(cleaned: Mapping[str, Any]) -> dict[str, Any]:
    """Cleaned form data as JSON values: dates and times as ISO text, decimals as text."""
    return dict(json.loads(to_text(dict(cleaned))))


def json_schema(form_class: Any) -> dict[str, Any] | None:
    """The JSON Schema of a Form class's input (None without one): types, formats, enums,
    bounds, titles, help texts as descriptions, and which fields are required."""
    if not (isinstance(form_class, type) and issubclass(form_class, forms.Form)):
        return None
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in form_class.base_fields.items():
        properties[name] = _field_schema(field)
        if field.required and not isinstance(field, forms.BooleanField):
            required.append(name)
    schema: dict[str, Any] = {
        "type": "object",
        "title": form_class.__name__,
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    if is_decision(form_class):
        schema["x-decision"] = True
    return schema


def _field_schema(field: forms.Field) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(field, forms.BooleanField):
        out["type"] = "boolean"
    elif isinstance(field, forms.DecimalField):  # (before IntegerField: a subclass of it)
        out.update(type=["number", "string"], format="decimal")  # cleaned: exact, as text
    elif isinstance(field, forms.FloatField):
        out["type"] = "number"
    elif isinstance(field, forms.IntegerField):
        out["type"] = "integer"
    elif isinstance(field, forms.DateTimeField):
        out.update(type="string", format="date-time")
    elif isinstance(field, forms.DateField):
        out.update(type="string", format="date")
    elif isinstance(field, forms.EmailField):
        out.update(type="string", format="email")
    elif isinstance(field, forms.MultipleChoiceField):
        out.update(type="array", items={"enum": _choices(field)})
    elif isinstance(field, forms.ChoiceField):
        out.update(type="string", enum=_choices(field))
    else:
        out["type"] = "string"
    for attr, key in (("min_value", "minimum"), ("max_value", "maximum")):
        value = getattr(field, attr, None)
        if value is not None:
            out[key] = float(value) if isinstance(value, Decimal) else value
    for attr, key in (("min_length", "minLength"), ("max_length", "maxLength")):
        value = getattr(field, attr, None)
        if value is not None:
            out[key] = value
    if field.label:
        out["title"] = str(field.label)
    if field.help_text:
        out["description"] = str(field.help_text)
    if field.initial is not None and not callable(field.initial) and not field.required:
        out["default"] = field.initial
    return out


def _choices(field: forms.ChoiceField) -> list[str]:
    return [str(key) for key, _ in list(field.choices)]  # type: ignore[arg-type]


def script_schema(script: str | type[scripts.Task]) -> dict[str, Any] | None:
    """The JSON Schema of what a script's waiting step takes (by name or class): its
    form's, or the `input_fields` shorthand (any JSON value per field), or None."""
    cls = scripts.get_script(script) if isinstance(script, str) else script
    schema = json_schema(cls.input_form)
    if schema is not None:
        return schema
    if cls.input_fields:
        return {
            "type": "object",
            "properties": {name: {} for name in cls.input_fields},
            "required": list(cls.input_fields),
        }
    return None


# --- the wait: assignees, deadline, notifications -------------------------------------------


def wait_changes(
    flow: Flow, timeout: float | None, cls: type[scripts.Task] | None
) -> dict[str, Any]:
    """Fields of a flow that starts waiting (a new wait number, its deadline, when to remind)."""
    deadline = timezone.now() + timedelta(seconds=timeout) if timeout else None
    remind_at = None
    before = cls.remind_before if cls is not None else None
    if deadline is not None and before:
        remind_at = max(timezone.now(), deadline - timedelta(seconds=float(before)))
    return {"wait_number": flow.wait_number + 1, "deadline": deadline, "remind_at": remind_at}


def record_wait(flow: Flow, users: list[int], groups: list[int], reason: str) -> list[int]:
    """In the transaction that made the flow wait: its assignees, and one notification per
    person told (the assignees, group members included; the owner if nobody is assigned).
    Returns who was told."""
    FlowAssignee.objects.filter(flow=flow).delete()
    FlowAssignee.objects.bulk_create(
        [FlowAssignee(flow=flow, user_id=u) for u in users]
        + [FlowAssignee(flow=flow, group_id=g) for g in groups]
    )
    told = recipients(flow, users, groups)
    step = flow.current_step or {}
    deadline = f" by {flow.deadline:%Y-%m-%d %H:%M} UTC" if flow.deadline else ""
    message = f"{flow.routine.name} #{flow.pk}: {step.get('name', 'a step')} waits for you"
    if reason:
        message += f" ({reason})"
    message = (message + deadline)[:500]
    Notification.objects.bulk_create(
        [
            Notification(user_id=u, flow=flow, wait_number=flow.wait_number, message=message)
            for u in told
        ],
        ignore_conflicts=True,
    )
    _publish(told, flow)
    return told


def recipients(flow: Flow, users: Iterable[int], groups: Iterable[int]) -> list[int]:
    """Who is told of a wait: the assigned users and the active members of the assigned
    groups; the owner when nobody is assigned."""
    users, groups = list(users), list(groups)
    if not users and not groups:
        return [flow.owner_id]
    members = get_user_model().objects.filter(groups__in=groups, is_active=True)
    return sorted(set(users) | set(members.values_list("pk", flat=True)))


def clear_wait(flow_id: int) -> None:
    """The flow stopped waiting (answered, timed out, overridden): its notifications are
    cleared and its assignees go. Call inside the transaction that changed its state.

    It runs in every answer's transaction (which holds SQLite's write lock), so it is two
    statements written once: the notifications cleared, returning whom they told, and the
    assignees deleted (the ORM's three cost over a millisecond to compile)."""
    db = connections[router.db_for_write(Notification)]
    if not db.features.can_return_columns_from_insert:  # (no RETURNING: SQLite before 3.35)
        open_ones = Notification.objects.filter(flow_id=flow_id, cleared__isnull=True)
        told = set(open_ones.values_list("user_id", flat=True))
        open_ones.update(cleared=timezone.now())
        FlowAssignee.objects.filter(flow_id=flow_id).delete()
    else:
        clear, delete = _clear_statements(db)
        with cursor_for(db) as cursor:
            cursor.execute(clear, [_CLEARED.get_db_prep_save(timezone.now(), db), flow_id])
            told = {user for (user,) in cursor.fetchall()}
            cursor.execute(delete, [flow_id])
    wait_cleared(flow_id, told)


def wait_cleared(flow_id: int, told: Iterable[int]) -> None:
    """After `clear_wait` (or its statements inside a flow's write): tell the studio whose
    notifications were cleared."""
    if told:
        _publish(told, None, flow_id=flow_id)


def clear_wait_ctes(db: Any) -> tuple[list[str], list[Any]]:
    """`clear_wait` as two data-modifying CTEs for the flow that the CTE `f` of a flow's
    write updated (store's one-statement write on PostgreSQL): `n` clears its
    notifications, returning whom they told (pass them to `wait_cleared` after), and `a`
    deletes its assignees. (CTEs, their parameters.)"""
    clear, delete = _clear_statements(db, of_written=True)
    return [f"n AS ({clear})", f"a AS ({delete})"], [_CLEARED.get_db_prep_save(timezone.now(), db)]


_CLEARED = Notification._meta.get_field("cleared")
_CLEAR_STATEMENTS: dict[tuple[str, bool], tuple[str, str]] = {}


def _clear_statements(db: Any, *, of_written: bool = False) -> tuple[str, str]:
    """(clear the flow's notifications, returning whom they told; delete its assignees),
    written once per database. `of_written`: for the flow the data-modifying CTE `f` of a
    flow's write updated (store's one-statement write on PostgreSQL), in place of a
    `flow_id` parameter."""
    found = _CLEAR_STATEMENTS.get((db.vendor, of_written))
    if found is None:
        quote = db.ops.quote_name
        notes, assignees = Notification._meta, FlowAssignee._meta
        column = lambda meta, name: quote(meta.get_field(name).column)  # noqa: E731
        of_flow = "IN (SELECT f.id FROM f)" if of_written else "= %s"
        found = _CLEAR_STATEMENTS[db.vendor, of_written] = (
            f"UPDATE {quote(notes.db_table)} SET {column(notes, 'cleared')} = %s "
            f"WHERE {column(notes, 'flow')} {of_flow} AND {column(notes, 'cleared')} IS NULL "
            f"RETURNING {column(notes, 'user')}",
            f"DELETE FROM {quote(assignees.db_table)} WHERE {column(assignees, 'flow')} {of_flow}",
        )
    return found


def _publish(users: Iterable[int], flow: Flow | None, *, flow_id: int | None = None) -> None:
    """Tell the studio that these users' notifications changed (after the commit)."""
    ids = sorted(set(users))
    if ids:
        pk = flow.pk if flow is not None else flow_id
        engine_events.publish_on_commit([{"type": "notifications", "users": ids, "flow": pk}])


def unread_count(user: Any) -> int:
    if user is None or not user.is_authenticated:
        return 0
    return Notification.objects.filter(user=user, cleared__isnull=True).count()


def unread_counts(user_ids: list[int]) -> dict[int, int]:
    """`unread_count` of many users in one query (users without any are left out)."""
    rows = Notification.objects.filter(user_id__in=user_ids, cleared__isnull=True)
    counts = rows.values("user_id").annotate(n=Count("pk")).values_list("user_id", "n")
    return dict(counts)


def notifications_of(user: Any) -> QuerySet[Notification]:
    return Notification.objects.filter(user=user).select_related("flow", "flow__routine")


# --- housekeeping duties ----------------------------------------------------------------------


def send_reminders(now: Any = None, limit: int = 200) -> int:
    """Remind the people a wait told, once, when its reminder time has come (the one
    process whose update clears `remind_at` sends it). Returns how many flows."""
    now = now or timezone.now()
    due = Flow.objects.filter(state=FlowState.WAITING, remind_at__lte=now).order_by("remind_at")
    sent = 0
    for flow in due.select_related("routine")[:limit]:
        with transaction.atomic():
            won = Flow.objects.filter(
                pk=flow.pk, remind_at=flow.remind_at, state=FlowState.WAITING
            ).update(remind_at=None)
            if not won:
                continue
            told = Notification.objects.filter(
                flow=flow, wait_number=flow.wait_number, kind=Notification.WAITING
            ).values_list("user_id", flat=True)
            left = _time_left(flow.deadline, now)
            message = f"{flow.routine.name} #{flow.pk}: the deadline is in {left}"[:500]
            Notification.objects.bulk_create(
                [
                    Notification(
                        user_id=u,
                        flow=flow,
                        wait_number=flow.wait_number,
                        kind=Notification.REMINDER,
                        message=message,
                    )
                    for u in set(told)
                ],
                ignore_conflicts=True,
            )
            _publish(told, flow)
            sent += 1
    return sent


def _time_left(deadline: Any, now: Any) -> str:
    if deadline is None:
        return "no time"
    seconds = max(0, int((deadline - now).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def send_emails(limit: int = 100) -> int:
    """E-mail each notification once (the process whose update marks it sends it); those
    cleared before their turn, or of users without an address, are marked and skipped."""
    sent = 0
    pending = Notification.objects.filter(emailed__isnull=True).order_by("pk")
    for note in pending.select_related("user", "flow", "flow__routine")[:limit]:
        now = timezone.now()
        if not Notification.objects.filter(pk=note.pk, emailed__isnull=True).update(emailed=now):
            continue  # another process took it
        problem = ""
        if note.cleared is not None:
            problem = "the wait was over before the e-mail went out"
        elif not note.user.email:
            problem = "the user has no e-mail address"
        else:
            try:
                send_mail(
                    _subject(note),
                    _body(note),
                    None,
                    [note.user.email],
                    fail_silently=False,
                )
                sent += 1
            except Exception as exc:  # the SMTP server's answer, kept for the operator
                logger.warning("could not e-mail notification %s: %s", note.pk, exc)
                problem = f"{type(exc).__name__}: {exc}"
        if problem:
            Notification.objects.filter(pk=note.pk).update(email_error=problem[:1000])
    return sent


def flow_url(flow_id: int) -> str:
    """The flow page's address, for links in e-mails (FLOWSTUDIO_BASE_URL)."""
    base = str(config.value("BASE_URL", "http://127.0.0.1:8000")).rstrip("/")
    return f"{base}/flows/{flow_id}/"


def _subject(note: Notification) -> str:
    prefix = "Deadline soon" if note.kind == Notification.REMINDER else "Waiting for you"
    return f"[Flow Studio] {prefix}: {note.flow.routine.name} #{note.flow_id}"[:200]


def _body(note: Notification) -> str:
    lines = [note.message, "", f"Open it: {flow_url(note.flow_id)}"]
    if note.flow.deadline:
        lines.append(f"Deadline: {note.flow.deadline:%Y-%m-%d %H:%M:%S} UTC")
    lines += ["", f"— {getattr(settings, 'FLOWSTUDIO_SITE_NAME', 'Flow Studio')}"]
    return "\n".join(lines)
