"""The runtime port: who stores an LTM run and executes its queued states.

`Runtime` is the port the Django/Huey layer implements. `InMemoryRuntime` is its in-process
reference implementation: it executes everything synchronously with a FIFO queue; each
execution loads a fresh tree from the stored ("committed") records, executes, plans against
the records stored by then, and commits the plan — the same steps a worker takes, minus the
I/O. `get_default_runtime()` is what `LTM.start()` uses when the root was given none.

This module never imports the node: it calls the engine side of the instances and classes
it is handed (`from_records`, `records`, `apply_records`, `execute`).
"""

from __future__ import annotations

import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .planner import plan, plan_start, plan_transition
from .records import InstanceRecord, Plan, TransitionCall, copy_data

if TYPE_CHECKING:
    from .node import LTM


class Runtime(ABC):
    """Stores runs and executes their queued states; `LTM.start` and
    `LTM.atomic_state_append` delegate to it."""

    @abstractmethod
    def start(self, root: LTM, payload: dict[str, Any]) -> str:
        """Store a new run of the unstarted tree `root` and queue the root's execution with
        `payload` (`plan_start(type(root), root.records(), payload)` says what to write);
        return the run id."""

    @abstractmethod
    def atomic_state_append(
        self, instance: LTM, key: str, value: Any, call_index: int
    ) -> list[Any]:
        """Append `value` to the stored list `state[key]` of `instance` at once, atomically,
        and return the whole list. The list must exist. `call_index` is the order of this
        call within the current execution: a retried execution repeating the same call
        must not append twice."""


_default_runtime: Runtime | None = None


def set_default_runtime(runtime: Runtime | None) -> None:
    """The runtime `LTM.start()` uses when the root was created without one (the Django
    layer sets its own at start-up)."""
    global _default_runtime
    _default_runtime = runtime


def get_default_runtime() -> Runtime:
    """The runtime set by `set_default_runtime`, else a new `InMemoryRuntime`."""
    return _default_runtime if _default_runtime is not None else InMemoryRuntime()


@dataclass
class StoredRun:
    """What `InMemoryRuntime` keeps of one run: its committed records and its history."""

    root_cls: type[LTM]
    records: dict[str, InstanceRecord] = field(default_factory=dict)
    queue: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)  # + entry
    events: list[dict[str, Any]] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    skipped: list[TransitionCall] = field(default_factory=list)
    appends: set[tuple[int, int]] = field(default_factory=set)
    executions: int = 0
    draining: bool = False


class InMemoryRuntime(Runtime):
    """Runs LTMs synchronously in this process; `start()` returns when nothing is queued.

    `shuffle_seed` picks queued executions in a seeded random order instead of FIFO, to
    imitate concurrent workers; `max_executions` stops runaway loops."""

    def __init__(self, *, max_executions: int = 10_000, shuffle_seed: int | None = None) -> None:
        self.runs: dict[str, StoredRun] = {}
        self.max_executions = max_executions
        self._random = random.Random(shuffle_seed) if shuffle_seed is not None else None
        self._ids = itertools.count(1)
        self._executing: list[tuple[str, int]] = []  # (run id, execution number), innermost last

    def start(self, root: LTM, payload: dict[str, Any]) -> str:
        run_id = f"run-{next(self._ids)}"
        run = self.runs[run_id] = StoredRun(type(root))
        self._commit(run, plan_start(run.root_cls, root.records(), payload))
        self._drain(run_id)
        root.apply_records(run.records.values())
        return run_id

    def atomic_state_append(
        self, instance: LTM, key: str, value: Any, call_index: int
    ) -> list[Any]:
        run_id = instance.id
        if run_id is None or run_id not in self.runs:
            raise RuntimeError(f"{instance.fqn} is not part of a run of this runtime")
        run = self.runs[run_id]
        record = run.records.get(instance.fqn)
        current = record.state.get(key) if record is not None else None
        if record is None or key not in record.state:
            raise KeyError(f"{instance.fqn}: state {key!r} must be set to a list first")
        if not isinstance(current, list):
            raise TypeError(f"{instance.fqn}: state {key!r} is {current!r}, not a list")
        execution = next((n for r, n in reversed(self._executing) if r == run_id), -1)
        if (execution, call_index) not in run.appends:
            run.appends.add((execution, call_index))
            current = [*current, copy_data(value)]
            run.records[instance.fqn] = replace(record, state={**record.state, key: current})
        return copy_data(current)

    # -- operator and test helpers ---------------------------------------------------------

    def load(self, run_id: str) -> LTM:
        """A fresh tree of the committed records of a run."""
        run = self.runs[run_id]
        return run.root_cls.from_records(run.records.values(), run_id=run_id, runtime=self)

    def records(self, run_id: str) -> dict[str, InstanceRecord]:
        """The committed records of a run, by fqn."""
        return dict(self.runs[run_id].records)

    def fire(
        self,
        run_id: str,
        label: str,
        payload: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
        namespace: str | None = None,
    ) -> Plan:
        """Fire a transition as an operator, then execute what it queued."""
        run = self.runs[run_id]
        result = plan_transition(
            run.root_cls, run.records.values(), label, payload, params, namespace
        )
        self._commit(run, result)
        self._drain(run_id)
        return result

    # -- the loop ------------------------------------------------------------------------

    def _commit(self, run: StoredRun, result: Plan) -> None:
        for record in result.records_changed:
            run.records[record.fqn] = record
        run.queue.extend(
            (fqn, payload, run.records[fqn].entry) for fqn, payload in result.executions
        )
        run.events.extend(result.events)
        run.skipped.extend(result.skipped_transitions)

    def _drain(self, run_id: str) -> None:
        run = self.runs[run_id]
        if run.draining:  # called from inside one of this run's executions: the outer loop runs it
            return
        run.draining = True
        try:
            while run.queue:
                if run.executions >= self.max_executions:
                    raise RuntimeError(f"{run_id}: more than {self.max_executions} executions")
                index = self._random.randrange(len(run.queue)) if self._random else 0
                fqn, payload, entry = run.queue.pop(index)
                self._execute_one(run_id, run, fqn, payload, entry)
        finally:
            run.draining = False

    def _execute_one(
        self, run_id: str, run: StoredRun, fqn: str, payload: dict[str, Any], entry: int
    ) -> None:
        instance = self.load(run_id).find(fqn)
        record = run.records[fqn]
        # Moved on, or began a new visit, before it ran. A join entered again while active
        # keeps its visit: each arrival executes.
        if record.status not in ("queued", "active") or record.entry != entry:
            run.stale.append(fqn)
            return
        run.executions += 1
        self._executing.append((run_id, run.executions))
        try:
            effects = instance.execute(payload)
        finally:
            self._executing.pop()
        run.executed.append(fqn)
        # Plan against what is stored now, as a worker does under the run's lock.
        self._commit(run, plan(run.root_cls, run.records.values(), fqn, effects))
