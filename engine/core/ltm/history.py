"""A run's past as plain data: what each write changed, whole snapshots, and replaying them.

Every write of a run stores a *change*: the whole records of the instances it changed, the
fqns of those it removed, and the run's state and error after it. Every so often a
*snapshot* holds every record. The run as it was after any write is the nearest snapshot
before it with the changes after it replayed in order: `replay(snapshot, changes)`.

Both are JSON objects (the persistence layer stores them as they are):

    change   = {"records": [record, ...], "removed": [fqn, ...], "run": {"state", "error"}}
    snapshot = {"records": [every record], "run": {"state", "error"}}

Pure: no Django, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .records import InstanceRecord, copy_data


def record_to_json(record: InstanceRecord, *, copy: bool = True) -> dict[str, Any]:
    """An instance record as a JSON object; with `copy=False` it shares the record's state
    and params (for a caller that encodes it at once)."""
    return {
        "fqn": record.fqn,
        "name": record.name,
        "declared_name": record.declared_name,
        "status": record.status,
        "state": copy_data(record.state) if copy else record.state,
        "params": copy_data(record.params) if copy else record.params,
        "error": record.error,
        "entry": record.entry,
    }


def record_from_json(data: Mapping[str, Any]) -> InstanceRecord:
    """The instance record of `record_to_json`'s object."""
    return InstanceRecord(
        fqn=data["fqn"],
        name=data["name"],
        declared_name=data["declared_name"],
        status=data["status"],
        state=copy_data(dict(data.get("state") or {})),
        params=copy_data(dict(data.get("params") or {})),
        error=data.get("error") or None,
        entry=int(data.get("entry", 0)),
    )


@dataclass
class PointInTime:
    """The run as it was after some write: its records by fqn, its state and error."""

    records: dict[str, InstanceRecord] = field(default_factory=dict)
    state: str = "pending"
    error: str = ""

    def snapshot(self, *, copy: bool = True) -> dict[str, Any]:
        """This point as a snapshot object (`copy`: as `record_to_json`'s)."""
        return {
            "records": [record_to_json(r, copy=copy) for r in self.records.values()],
            "run": {"state": self.state, "error": self.error},
        }

    def apply(self, change: Mapping[str, Any]) -> None:
        """Replay one change (or a snapshot, which is a change of every record)."""
        for data in change.get("records", ()):
            record = record_from_json(data)
            self.records[record.fqn] = record
        for fqn in change.get("removed", ()):
            self.records.pop(fqn, None)
        run = change.get("run")
        if run:
            self.state = run.get("state", self.state)
            self.error = run.get("error", self.error) or ""


def replay(snapshot: Mapping[str, Any] | None, changes: Iterable[Mapping[str, Any]]) -> PointInTime:
    """The run after `changes`, replayed in order on `snapshot` (None: from nothing)."""
    point = PointInTime()
    if snapshot is not None:
        point.apply(snapshot)
    for change in changes:
        point.apply(change)
    return point


def change_of(
    before: Mapping[str, InstanceRecord],
    after: Iterable[InstanceRecord],
    removed: Iterable[str] = (),
    *,
    state: str,
    error: str,
    copy: bool = True,
) -> dict[str, Any]:
    """The change from the records `before` to the records `after` (only those that
    differ are kept), with the run's state and error after it (`copy`: as
    `record_to_json`'s)."""
    return {
        "records": [record_to_json(r, copy=copy) for r in after if before.get(r.fqn) != r],
        "removed": sorted(set(removed)),
        "run": {"state": state, "error": error},
    }
