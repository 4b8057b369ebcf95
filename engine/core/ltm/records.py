"""The plain data of LTM runs: what is stored of an instance, what an execution asked for,
what a transition call and its moves are, and what the planner decides.

Frozen dataclasses and lists of them; no behaviour beyond small derived properties. The
planner reads records and returns records; runtimes store them.
"""

from __future__ import annotations

import copy
import marshal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .definition import TransitionDef

# An instance's status (the LTM slice's `LtmStatus` uses the same strings).
INIT, QUEUED, ACTIVE, COMPLETED, FAILED = "init", "queued", "active", "completed", "failed"
STATUSES = (INIT, QUEUED, ACTIVE, COMPLETED, FAILED)


@dataclass(frozen=True)
class InstanceRecord:
    """Snapshot of one instance, as the persistence layer stores it.

    `declared_name` is the child state's name as declared in its parent (the name template
    for parameterised states); `name` is the instance name (`processing_1`). `entry` counts
    the visits of the state: a transition into a state that is not queued or active starts
    a new visit (fresh state, children re-initialised); executions belong to one visit, and
    those of an earlier visit never run."""

    fqn: str
    name: str
    declared_name: str
    status: str
    state: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    entry: int = 0

    @property
    def parent_fqn(self) -> str | None:
        return self.fqn.rpartition(".")[0] or None


@dataclass(frozen=True)
class TransitionCall:
    """A `transition()` call; `caller_fqn` is None when an operator fires it."""

    caller_fqn: str | None
    label: str
    payload: dict[str, Any]
    params: list[dict[str, Any]] | None
    namespace: str


@dataclass(frozen=True)
class Move:
    """One machine (by fqn) whose `transition` applies to its active children `sources`."""

    machine: str
    transition: TransitionDef
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Effects:
    """What one execution of `run()` asked for. With `error` (traceback text) the run()
    raised, and its updates and transitions were discarded."""

    updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    transitions: list[TransitionCall] = field(default_factory=list)
    error: str | None = None


@dataclass
class Plan:
    """What applying effects (or a start, or an operator's transition) does to a run.

    `records_changed`: full new snapshots of the instances that changed or appeared;
    `executions`: `(fqn, payload)` to queue, in order, each run on its own (the visit it
    belongs to is the record's `entry`); `events`: `{kind, fqn, data}` with
    kinds `status`, `state.updated`, `transition`, `transition.skipped`, `error`;
    `skipped_transitions`: calls that moved nothing by the time they were planned."""

    records_changed: list[InstanceRecord] = field(default_factory=list)
    executions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    skipped_transitions: list[TransitionCall] = field(default_factory=list)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def copy_data(value: Any) -> Any:
    """A deep copy of `value`: JSON-shaped data (dicts, lists, text, numbers, booleans,
    None), which is what states, params and payloads hold, copied directly; anything else
    by `copy.deepcopy`. (A run's states and params are copied several times per execution,
    and `deepcopy`'s general machinery was about a tenth of an execution's time.)

    A dict or list of plain values, however nested, is copied by `marshal` (a round trip at
    C speed, about three times faster than item by item for a join's list of 200 arrivals).
    It takes exact built-in types only, so a value holding anything else (a subclass, an
    enum, a date) is copied item by item as below, keeping its types."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict or kind is list:
        try:
            return marshal.loads(marshal.dumps(value))
        except ValueError:  # an item marshal does not take (or nested too deep for it)
            pass
    if kind is dict:
        return {key: copy_data(item) for key, item in value.items()}
    if kind is list:
        return [copy_data(item) for item in value]
    return copy.deepcopy(value)
