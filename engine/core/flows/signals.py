"""What a Task's `perform()` may return besides a raw value.

`result(...)` is a value for the flow; `wait`, `kill` and `done` are flags for the runner.
They are small frozen values so that scripts can build, compare and return them freely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

_NOTHING: Any = object()


@dataclass(frozen=True)
class Result:
    """A step's result, stored in the flow; the flow moves on to the next step."""

    value: Any = None


@dataclass(frozen=True)
class Wait:
    """The flow waits for input (or for the script's `check()`) before this step completes.

    `timeout`: seconds until the step's deadline (None: no deadline); `assign_to`: who may
    answer (users, groups or group names; empty: the flow's owner)."""

    reason: str = ""
    timeout: float | None = None
    assign_to: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Kill:
    """The script ran fine, but the flow must end here: it becomes KILLED."""

    reason: str = ""


@dataclass(frozen=True)
class Done:
    """The flow completes early with this step's value; later steps never run."""

    value: Any = None


def _value_of(args: tuple[Any, ...], fields: dict[str, Any], what: str) -> Any:
    if args and fields:
        raise TypeError(f"{what}() takes one value or keyword fields, not both")
    if len(args) > 1:
        raise TypeError(f"{what}() takes at most one positional value, got {len(args)}")
    if fields:
        return dict(fields)
    return args[0] if args else None


def result(*args: Any, **fields: Any) -> Result:
    """`result(value)` stores `value`; `result(a=1, b=2)` stores `{"a": 1, "b": 2}`;
    `result()` stores `None`."""
    return Result(_value_of(args, fields, "result"))


def done(*args: Any, **fields: Any) -> Done:
    """Complete the flow early; the value is stored as this step's result."""
    return Done(_value_of(args, fields, "done"))


def wait(
    reason: str = "", *, timeout: float | timedelta | None = None, assign_to: Any = None
) -> Wait:
    """Make the flow wait, with a reason shown to the user (e.g. ``"login_required"``).

    `timeout` (seconds or a timedelta) sets a deadline: when it passes with no input, the
    step's `on_timeout()` is performed (without one the flow fails as timed out).
    `assign_to` is a user, a group, a group's name, or a list of those: then only they (and
    operators) may answer, not the owner unless assigned."""
    return Wait(str(reason), _seconds(timeout), _assignees(assign_to))


def _seconds(timeout: float | timedelta | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"wait(timeout=...) takes seconds or a timedelta, got {timeout!r}")
    else:
        seconds = float(timeout)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"wait(timeout=...) must be a positive duration, got {timeout!r}")
    return seconds


def _assignees(assign_to: Any) -> tuple[Any, ...]:
    if assign_to is None:
        return ()
    if isinstance(assign_to, str) or not isinstance(assign_to, list | tuple | set | frozenset):
        return (assign_to,)
    return tuple(assign_to)


def kill(reason: str = "") -> Kill:
    """End the flow as KILLED; the reason is kept in ``flow.error``."""
    return Kill(str(reason))
