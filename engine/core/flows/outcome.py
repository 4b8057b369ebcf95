"""The one place where what a script returned is given its meaning.

`perform_script` calls a script method and turns whatever happened (a value, a signal, a
`(success, value)` tuple, an exception) into an `Outcome`. `decide` is the pure step function:
(where the flow is, the outcome) -> what the flow becomes. The runner does the I/O around them.
"""

from __future__ import annotations

import enum
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .signals import Done, Kill, Result, Wait


class Kind(enum.Enum):
    ADVANCE = "advance"  # store the result, move to the next step
    WAIT = "wait"  # wait for input or a re-check
    KILL = "kill"  # the script ran fine, the flow must end
    DONE = "done"  # complete the flow early
    FAIL = "fail"  # the script failed outside flow management


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    value: Any = None  # the step's result (ADVANCE, DONE)
    reason: str = ""  # wait reason, kill reason or error text
    traceback: str = ""  # for FAIL by exception
    timeout: float | None = None  # WAIT: seconds to its deadline
    assign_to: tuple[Any, ...] = ()  # WAIT: who may answer
    # FAIL by exception: its type (for `retry_on`); None for a `(False, value)` return
    error_type: type[BaseException] | None = None


def interpret(returned: Any) -> Outcome:
    """Give a returned value its meaning.

    A 2-tuple whose first item is a bool is `(success, value)`; anything else is the value.
    """
    if isinstance(returned, tuple) and len(returned) == 2 and isinstance(returned[0], bool):
        success, value = returned
        if not success:
            return Outcome(Kind.FAIL, reason=_error_text(value))
        returned = value
    if isinstance(returned, Wait):
        return Outcome(
            Kind.WAIT,
            reason=returned.reason,
            timeout=returned.timeout,
            assign_to=returned.assign_to,
        )
    if isinstance(returned, Kill):
        return Outcome(Kind.KILL, reason=returned.reason)
    if isinstance(returned, Done):
        return Outcome(Kind.DONE, value=returned.value)
    if isinstance(returned, Result):
        return Outcome(Kind.ADVANCE, value=returned.value)
    return Outcome(Kind.ADVANCE, value=returned)


def _error_text(value: Any) -> str:
    if isinstance(value, Result | Done):
        value = value.value
    if isinstance(value, Kill | Wait):
        value = value.reason
    return value if isinstance(value, str) else repr(value)


def perform_script(method: Callable[[], Any]) -> Outcome:
    """Call `perform` (or `check`) and interpret it; an uncaught exception is a FAIL with
    its traceback. KeyboardInterrupt and SystemExit pass through: they stop the worker."""
    try:
        returned = method()
    except Exception as exc:
        return Outcome(
            Kind.FAIL,
            reason=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            error_type=type(exc),
        )
    return interpret(returned)


# --- the pure step function ---------------------------------------------------------------

PENDING, RUNNING, WAITING, RETRYING = "pending", "running", "waiting", "retrying"
COMPLETE, KILLED, FAILED = "complete", "killed", "failed"


@dataclass(frozen=True)
class Decision:
    """What a flow becomes after an outcome at `position` of a routine of `length` steps."""

    state: str
    position: int
    store_result: bool
    result: Any = None
    wait_reason: str = ""
    error: str = ""
    traceback: str = ""
    event: str = ""
    timeout: float | None = None
    assign_to: tuple[Any, ...] = ()


def decide(position: int, length: int, outcome: Outcome) -> Decision:
    if outcome.kind is Kind.ADVANCE:
        following = position + 1
        if following >= length:
            return Decision(COMPLETE, position, True, outcome.value, event="flow.complete")
        return Decision(RUNNING, following, True, outcome.value, event="step.completed")
    if outcome.kind is Kind.DONE:
        return Decision(COMPLETE, position, True, outcome.value, event="flow.complete")
    if outcome.kind is Kind.WAIT:
        return Decision(
            WAITING,
            position,
            False,
            wait_reason=outcome.reason,
            event="flow.waiting",
            timeout=outcome.timeout,
            assign_to=outcome.assign_to,
        )
    if outcome.kind is Kind.KILL:
        return Decision(KILLED, position, False, error=outcome.reason, event="flow.killed")
    return Decision(
        FAILED,
        position,
        False,
        error=outcome.reason,
        traceback=outcome.traceback,
        event="flow.failed",
    )
