"""The Task script base class and the registry of scripts.

A script is a subclass of `Task` with a unique `name`. It is registered when its class is
defined; the Django layer imports each installed app's `scripts.py` at start-up so that every
script is known before a flow runs. Only registered scripts ever run: routines refer to them
by name, never by code or dotted path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from .results import ResultsView
from .retry import check_script

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


class ScriptDefinitionError(TypeError):
    """A Task script class is defined wrongly (bad or duplicate name)."""


_registry: dict[str, type[Task]] = {}


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Task:
    """Base class of Task scripts.

    Class attributes:
      name         unique script name, ``^[a-z][a-z0-9_]*$``
      label        friendly name shown in the studio (defaults to the name)
      blocking     True (default): the flow runner performs it in its own loop;
                   False: it is offloaded to its own Huey task and resumes the flow when done
      rerunnable   True (default): if its worker dies mid-step, the step is performed again;
                   False: an interrupted step stops the flow FAILED as "interrupted"
      lease_seconds  how long one perform() may take before the flow counts as abandoned
      input_fields   optional names of the fields this step expects when it waits for input
                   (a shorthand: each value is read as JSON when it parses)
      input_form   a Django Form class: the input a waiting step takes, validated with it;
                   `self.input` is its cleaned data in JSON-safe form
      results_visible_to_assignees  False: assignees who are not the owner see no results
      remind_before  seconds before a deadline to remind the assignees once (None: never)
      retries, retry_delay, retry_backoff, retry_max_delay, retry_jitter, retry_on
                   automatic retries of a failed step (see engine.core.flows.retry)
      time_limit   seconds one attempt may take (None: no limit); a longer one fails with
                   "took longer than N s" (retries apply) and its late outcome is discarded
      abstract     True on a base class that must not be registered

    `on_timeout()` (optional) is performed when a `wait(..., timeout=...)` passes its
    deadline with no input; it returns what `perform()` may return.

    Inside `perform()` (and `check()`) the task sees the public contract:
      self.flow, self.user, self.position, self.input, self.results, self.data, self.params,
      self.attempt (1 on the first attempt of this visit of the step) and
      self.idempotency_key (the same for every attempt and re-perform of this visit, new
      when the flow comes to the step again: hand it to external APIs)
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    blocking: ClassVar[bool] = True
    rerunnable: ClassVar[bool] = True
    lease_seconds: ClassVar[float | None] = None
    input_fields: ClassVar[tuple[str, ...]] = ()
    input_form: ClassVar[Any] = None
    results_visible_to_assignees: ClassVar[bool] = True
    remind_before: ClassVar[float | None] = None
    retries: ClassVar[int] = 0
    retry_delay: ClassVar[float] = 0
    retry_backoff: ClassVar[float] = 2
    retry_max_delay: ClassVar[float] = 3600
    retry_jitter: ClassVar[float] = 0
    retry_on: ClassVar[tuple[type[BaseException], ...]] = (Exception,)
    time_limit: ClassVar[float | None] = None
    abstract: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("abstract", False):
            return
        name = cls.__dict__.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ScriptDefinitionError(
                f"Task script {_qualified(cls)} needs a `name` matching ^[a-z][a-z0-9_]*$, "
                f"got {name!r}"
            )
        problems = check_script(cls)
        if problems:
            raise ScriptDefinitionError(f"Task script {_qualified(cls)}: {'; '.join(problems)}")
        if not cls.__dict__.get("label"):
            cls.label = name.replace("_", " ").capitalize()
        taken = _registry.get(name)
        # A module imported again (autoreload, a test importing it twice) defines the same
        # class again: that replaces the entry instead of clashing with itself.
        if taken is not None and _qualified(taken) != _qualified(cls):
            raise ScriptDefinitionError(
                f"Task script name {name!r} of {_qualified(cls)} is already taken by "
                f"{_qualified(taken)}"
            )
        _registry[name] = cls

    def __init__(
        self,
        *,
        flow: Any = None,
        user: Any = None,
        position: int = 0,
        input: Any = None,
        results: Sequence[Any] | None = None,
        data: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        attempt: int = 1,
        idempotency_key: str = "",
    ) -> None:
        self.flow = flow
        self.user = user
        self.position = position
        self.input = input
        # A view decoded on read (see engine.core.flows.results), or a list of its own.
        self.results = results if isinstance(results, ResultsView) else list(results or [])
        self.data = data if data is not None else {}
        self.params = params if params is not None else {}
        self.attempt = attempt
        self.idempotency_key = idempotency_key

    def perform(self) -> Any:
        """Do the step's work. Return a raw value, `result(...)`, `wait(...)`, `kill(...)`,
        `done(...)`, or a `(success, value)` tuple."""
        raise NotImplementedError(f"{type(self).__name__}.perform() is not written")

    @classmethod
    def checks_while_waiting(cls) -> bool:
        """Whether the periodic re-check can resume this step (it defines check/pickup)."""
        return cls.check is not Task.check or cls.pickup is not Task.pickup

    def check(self) -> Any:
        """Re-check a waiting step. Returns the same kinds of value as `perform()`;
        `wait(...)` keeps the flow waiting. Override this (or its alias `pickup`)."""
        return self.pickup()

    def pickup(self) -> Any:
        """Alias of `check()` (the seed's name)."""
        raise NotImplementedError

    @classmethod
    def handles_timeout(cls) -> bool:
        """Whether the script says what happens at a deadline (it defines `on_timeout`)."""
        return cls.on_timeout is not Task.on_timeout

    def on_timeout(self) -> Any:
        """Performed when the step's wait passed its deadline with no input; returns what
        `perform()` may return (a result moves on, `kill` ends the flow, `wait` again sets a
        new deadline). Without it the flow fails as timed out."""
        raise NotImplementedError


def registry() -> dict[str, type[Task]]:
    """All registered scripts by name (a copy)."""
    return dict(_registry)


def get_script(name: str) -> type[Task]:
    """The script registered as `name`; `LookupError` with a clear message otherwise."""
    try:
        return _registry[name]
    except KeyError:
        raise LookupError(f"no Task script is registered as {name!r}") from None


def describe(cls: type[Task]) -> dict[str, Any]:
    """What the studio's palette shows of a script."""
    return {
        "name": cls.name,
        "label": cls.label,
        "doc": (cls.__doc__ or "").strip(),
        "blocking": cls.blocking,
        "rerunnable": cls.rerunnable,
        "checks_while_waiting": cls.checks_while_waiting(),
        "input_fields": list(cls.input_fields),
        "has_input_form": cls.input_form is not None,
        "handles_timeout": cls.handles_timeout(),
        "retries": cls.retries,
        "retry_delay": cls.retry_delay,
        "retry_backoff": cls.retry_backoff,
        "retry_max_delay": cls.retry_max_delay,
        "retry_jitter": cls.retry_jitter,
        "retry_on": [t.__name__ for t in cls.retry_on],
        "time_limit": cls.time_limit,
    }
