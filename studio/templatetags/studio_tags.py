"""Template helpers of the studio: JSON shown pretty (and escaped by the template), state
icons and labels, and a flow's progress."""

from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()

# An icon beside every state's name: the state never relies on colour alone.
STATE_ICONS = {
    "pending": "◷",
    "running": "▶",
    "waiting": "◐",
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


@register.filter
def step_number(flow: Any) -> int:
    """The 1-based step a flow is at (its last step once complete)."""
    return min(flow.position + 1, max(flow.length, 1))


@register.filter
def progress_value(flow: Any) -> int:
    """Steps done, for the progress bar."""
    return flow.length if str(flow.state) == "complete" else min(flow.position, flow.length)
