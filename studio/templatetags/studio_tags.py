"""Template helpers of the studio: JSON shown pretty (and escaped by the template), state
icons and labels, a flow's progress, a deadline's time left, the input form's kind and the
signed-in user's open notifications."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django import template
from django.utils import dateformat, timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.utils.safestring import SafeString

from engine import api
from studio.web.forms import FieldsInputForm, JSONInputForm

register = template.Library()

# An icon beside every state's name: the state never relies on colour alone.
STATE_ICONS = {
    "pending": "◷",
    "running": "▶",
    "waiting": "◐",
    "retrying": "↻",
    "complete": "✓",
    "killed": "✕",
    "failed": "⚠",
    # LTM statuses
    "init": "○",
    "queued": "◔",
    "active": "▶",
    "completed": "✓",
}
LONG_TEXT = 240
LONG_LINES = 8


@register.filter
def pretty_json(value: Any) -> str:
    """`value` as indented JSON text. The result is NOT marked safe: templates escape it."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


@register.filter
def is_long(text: Any) -> bool:
    """Whether text is long enough to fold behind a <details>."""
    text = str(text)
    return len(text) > LONG_TEXT or text.count("\n") > LONG_LINES


@register.filter
def summary(text: Any, length: int = 80) -> str:
    """The first line of `text`, cut to `length` characters."""
    first = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return first if len(first) <= length else first[: length - 1] + "…"


@register.filter
def state_icon(state: Any) -> str:
    return STATE_ICONS.get(str(state), "•")


# A flow state's name, read once (a model's `get_state_display()` makes its choices' map at
# every call).
FLOW_STATE_LABELS = {str(value): str(label) for value, label in api.FlowState.choices}


@register.simple_tag
def state_badge(state: Any, label: Any = "") -> SafeString:
    """A state's badge: its icon and its name (`label`; when empty, a flow state's name, or
    the state itself)."""
    text = str(label or FLOW_STATE_LABELS.get(str(state), state))
    return format_html(
        '<span class="state state-{}"><span class="icon" aria-hidden="true">{}</span> {}</span>',
        state,
        state_icon(state),
        text[:1].upper() + text[1:],
    )


@register.filter
def step_number(flow: Any) -> int:
    """The 1-based step a flow is at (its last step once complete)."""
    return min(flow.position + 1, max(flow.length, 1))


@register.filter
def progress_value(flow: Any) -> int:
    """Steps done, for the progress bar."""
    return flow.length if str(flow.state) == "complete" else min(flow.position, flow.length)


def _span(seconds: int) -> str:
    """A duration in words a glance reads: "45 s", "12 min", "3 h 12 min", "2 d 5 h"."""
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


@register.filter
def time_left(deadline: Any) -> str:
    """The time left to a deadline, "due in 3 h 12 min", or "overdue" once it has passed
    ("" without a deadline)."""
    if not deadline:
        return ""
    seconds = int((deadline - timezone.now()).total_seconds())
    return "overdue" if seconds <= 0 else f"due in {_span(seconds)}"


@register.filter
def due_in(moment: Any) -> str:
    """How soon a moment comes: "in 45 s", "in 3 h 12 min"; "now" once it has come."""
    moment = as_datetime(moment)
    if moment is None:
        return ""
    seconds = int((moment - timezone.now()).total_seconds())
    return "now" if seconds <= 0 else f"in {_span(seconds)}"


@register.filter
def as_datetime(value: Any) -> Any:
    """A moment from an event's data (an ISO text) or a datetime; None for anything else."""
    if isinstance(value, str):
        try:
            return parse_datetime(value)
        except ValueError:
            return None
    return value if hasattr(value, "tzinfo") else None


# The page's moments, as the `date` filter writes them ("c", "Y-m-d H:i:s"), in the page's
# time zone: written directly, as a page of events writes many (the filter interprets its
# format for each, some 50 µs a moment).


def _local(value: Any) -> Any:
    return timezone.localtime(value) if timezone.is_aware(value) else value


@register.filter
def iso(value: Any) -> str:
    """A datetime in ISO 8601, for a <time> element's `datetime` ("" for anything else)."""
    if not isinstance(value, datetime):
        return ""
    return _local(value).isoformat()


@register.filter
def stamp(value: Any) -> str:
    """A datetime as "2026-12-07 13:05:09" ("" for anything else)."""
    if not isinstance(value, datetime):
        return ""
    local = _local(value)
    return (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d} "
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    )


@register.filter
def clock(value: Any) -> str:
    """A moment as the page shows times, in the studio's time zone: the time of day
    ("12:03:05") when it is today, with its date otherwise."""
    moment = as_datetime(value)
    if moment is None:
        return ""
    local = _local(moment)
    same_day = local.date() == timezone.localdate()
    return dateformat.format(local, "H:i:s" if same_day else "Y-m-d H:i:s")


@register.filter
def retry_of(flow: Any) -> dict[str, Any] | None:
    """A retrying flow's next attempt, ``{"attempt", "attempts", "at"}``; None for a flow
    in any other state."""
    if str(getattr(flow, "state", "")) != "retrying":
        return None
    return api.retry_status(flow)


@register.filter
def is_overdue(deadline: Any) -> bool:
    return bool(deadline) and deadline <= timezone.now()


@register.filter
def input_kind(form: Any) -> str:
    """How an input form is shown: "decision" (Approve / Reject), "form" (a script's typed
    form), "fields" (one box per `input_fields` name, read as JSON) or "json" (a textarea)."""
    if isinstance(form, FieldsInputForm):
        return "fields"
    if isinstance(form, JSONInputForm):
        return "json"
    return "decision" if isinstance(form, api.DecisionForm) else "form"


@register.simple_tag
def unread_notifications(user: Any) -> int:
    """How many of the user's notifications are open (their wait not answered yet)."""
    return api.unread_count(user)
