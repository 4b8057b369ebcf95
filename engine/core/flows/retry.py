"""Retry policies of steps, pure: a script's settings, a routine step's overrides of them,
whether a failed attempt is retried, and how long to wait before the next.

A script says (class attributes of `Task`):
  retries          how many times a failed step is tried again (0: never)
  retry_delay      seconds before the first retry (0: at once)
  retry_backoff    each further delay is the previous one times this (1: constant)
  retry_max_delay  no delay is longer than this
  retry_jitter     each delay is moved by up to this fraction of it, at random (0: exact)
  retry_on         the exception types retried (default: every Exception); a `(False,
                   value)` return is always a failure that may be retried, `kill` never
  time_limit       seconds one attempt may take (None: no limit); a longer one fails

A routine step may override every one of them but `retry_on` (exception types are code;
code never comes from the browser or the database).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any


class TimeLimitExceeded(Exception):  # noqa: N818 (the name says what happened)
    """An attempt took longer than its step's `time_limit`: its outcome is discarded and the
    attempt counts as failed with this error (retried like any Exception unless `retry_on`
    leaves it out)."""


# The settings a routine step may override, with their limits: (lowest, highest, integer).
LIMITS: dict[str, tuple[float, float, bool]] = {
    "retries": (0, 100, True),
    "retry_delay": (0, 7 * 24 * 3600, False),
    "retry_backoff": (1, 10, False),
    "retry_max_delay": (0, 30 * 24 * 3600, False),
    "retry_jitter": (0, 1, False),
    "time_limit": (0.001, 7 * 24 * 3600, False),
}
SETTINGS = tuple(LIMITS)


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 0
    retry_delay: float = 0.0
    retry_backoff: float = 2.0
    retry_max_delay: float = 3600.0
    retry_jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    time_limit: float | None = None

    @property
    def attempts(self) -> int:
        """How many attempts a step visit gets in all."""
        return self.retries + 1

    def retries_after(self, attempt: int, error_type: type[BaseException] | None) -> bool:
        """Whether a failed `attempt` (1-based) is tried again: attempts are left, and the
        failure is a `(False, value)` return (`error_type` None) or an exception of one of
        the `retry_on` types."""
        if attempt >= self.attempts:
            return False
        return error_type is None or issubclass(error_type, self.retry_on)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed `attempt` (1-based) before the next one."""
        if self.retry_delay <= 0:
            return 0.0
        base = self.retry_delay * self.retry_backoff ** max(0, attempt - 1)
        base = min(base, self.retry_max_delay)
        if self.retry_jitter:
            base *= 1 + self.retry_jitter * (2 * rand() - 1)
        return max(0.0, min(base, self.retry_max_delay))


def setting_problem(name: str, value: Any) -> str | None:
    """What is wrong with `value` for the retry setting `name` (None: nothing)."""
    if name not in LIMITS:
        return f"{name!r} is not a retry setting (one of {', '.join(SETTINGS)})"
    low, high, integer = LIMITS[name]
    if name == "time_limit" and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name} must be a number, got {value!r}"
    if not math.isfinite(value):
        return f"{name} must be a finite number, got {value!r}"
    if integer and value != int(value):
        return f"{name} must be a whole number, got {value!r}"
    if not low <= value <= high:
        return f"{name} must be between {low:g} and {high:g}, got {value!r}"
    return None


def overrides_problems(overrides: Any) -> list[tuple[str, str]]:
    """(setting, message) for everything wrong with a routine step's overrides."""
    if not isinstance(overrides, Mapping):
        return [("overrides", "the retry settings must be a JSON object")]
    problems = []
    for name, value in overrides.items():
        problem = setting_problem(str(name), value)
        if problem:
            problems.append((str(name), problem))
    return problems


def script_policy(cls: Any) -> RetryPolicy:
    """A script class's own policy (its class attributes)."""
    retry_on = getattr(cls, "retry_on", (Exception,))
    if isinstance(retry_on, type):
        retry_on = (retry_on,)
    return RetryPolicy(
        retries=int(getattr(cls, "retries", 0)),
        retry_delay=float(getattr(cls, "retry_delay", 0)),
        retry_backoff=float(getattr(cls, "retry_backoff", 2)),
        retry_max_delay=float(getattr(cls, "retry_max_delay", 3600)),
        retry_jitter=float(getattr(cls, "retry_jitter", 0)),
        retry_on=tuple(retry_on),
        time_limit=getattr(cls, "time_limit", None),
    )


def policy_for(cls: Any, overrides: Mapping[str, Any] | None = None) -> RetryPolicy:
    """The policy of a routine step: its script's, with the step's valid overrides."""
    policy = script_policy(cls)
    valid = {
        name: value
        for name, value in (overrides or {}).items()
        if name in LIMITS and setting_problem(name, value) is None
    }
    if "retries" in valid:
        valid["retries"] = int(valid["retries"])
    return replace(policy, **valid) if valid else policy


def check_script(cls: Any) -> list[str]:
    """What is wrong with a script class's retry settings (checked when it is defined)."""
    problems = []
    for name in SETTINGS:
        if name in vars(cls):
            problem = setting_problem(name, vars(cls)[name])
            if problem:
                problems.append(problem)
    retry_on = vars(cls).get("retry_on")
    if retry_on is not None:
        types = (retry_on,) if isinstance(retry_on, type) else retry_on
        if not isinstance(types, tuple | list) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in types
        ):
            problems.append(f"retry_on must be exception types, got {retry_on!r}")
    return problems
