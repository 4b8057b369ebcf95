"""Read-only views of a stored LTM run, for pages, the REST API and tests.

A `RunView` is made from the run's records (and what the runtime stores of the run itself,
a `RunRecord`); it holds copies in frozen dataclasses and read-only mappings, so nothing a
caller does to it changes the run. Unlike a live tree it has no `run()` to override, no
runtime, and no way to start, transition or update anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from engine.core.graph.dot import to_dot
from engine.core.graph.extract import ltm_graph

from .records import InstanceRecord, copy_data
from .tree import RecordTree

if TYPE_CHECKING:
    from engine.core.graph.model import Graph

    from .node import LTM


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(copy_data(dict(value)))


@dataclass(frozen=True)
class InstanceView:
    """One instance of a stored run. `state` and `params` are read-only copies."""

    fqn: str
    name: str
    declared_name: str
    status: str
    state: Mapping[str, Any]
    params: Mapping[str, Any]
    error: str | None = None
    entry: int = 0  # which visit of the state this is

    @classmethod
    def of(cls, record: InstanceRecord) -> InstanceView:
        return cls(
            fqn=record.fqn,
            name=record.name,
            declared_name=record.declared_name,
            status=record.status,
            state=_frozen(record.state),
            params=_frozen(record.params),
            error=record.error,
            entry=record.entry,
        )

    @property
    def parent_fqn(self) -> str | None:
        return self.fqn.rpartition(".")[0] or None

    def record(self) -> InstanceRecord:
        """A copy of this instance as a plain record."""
        return InstanceRecord(
            fqn=self.fqn,
            name=self.name,
            declared_name=self.declared_name,
            status=self.status,
            state=copy_data(dict(self.state)),
            params=copy_data(dict(self.params)),
            error=self.error,
            entry=self.entry,
        )


@dataclass(frozen=True)
class RunRecord:
    """What a runtime stores of a run besides its instances (the `LtmRun` row's fields).
    `owner` is the user who started it (None for runs started from code)."""

    id: str
    name: str
    state: str
    error: str = ""
    owner: Any = None
    owner_id: Any = None
    version: int = 0
    seq: int = 0
    created: Any = None
    updated: Any = None
    finished: Any = None


@dataclass(frozen=True)
class RunView:
    """A stored run of the root class `machine`: `run` (its `RunRecord`, if the runtime
    gave one), `instances` (fqn -> `InstanceView`, parents first), and from the root:
    `status`, `state` (the global state) and `error`. `graph()` and `to_dot()` draw it."""

    machine: type[LTM]
    instances: Mapping[str, InstanceView]
    run: RunRecord | None = None

    @classmethod
    def of(
        cls,
        machine: type[LTM],
        records: Iterable[InstanceRecord],
        run: RunRecord | None = None,
    ) -> RunView:
        """The view of `records` of a run of `machine`; ValueError if they do not fit it."""
        tree = RecordTree(machine, records)
        instances = {record.fqn: InstanceView.of(record) for record in tree.records()}
        return cls(machine, MappingProxyType(instances), run)

    @property
    def id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def root(self) -> InstanceView:
        return self.instances[self.machine.name]

    @property
    def name(self) -> str:
        return self.machine.name

    @property
    def status(self) -> str:
        return self.root.status

    @property
    def state(self) -> Mapping[str, Any]:
        """The run's global state (the root's), read-only."""
        return self.root.state

    @property
    def error(self) -> str | None:
        return self.root.error

    def records(self) -> list[InstanceRecord]:
        """Copies of the instances as plain records, parents first."""
        return [instance.record() for instance in self.instances.values()]

    def graph(self, fqn: str | None = None) -> Graph:
        """Diagram data of the run (from the instance `fqn` down), coloured by status."""
        return ltm_graph(self.machine, self.records(), fqn)

    def to_dot(self, fqn: str | None = None) -> str:
        """Graphviz DOT text of `graph(fqn)`."""
        return to_dot(self.graph(fqn))
