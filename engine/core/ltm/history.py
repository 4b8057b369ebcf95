"""A run's past as plain data: what each write changed, whole snapshots, and replaying them.

Every write of a run stores a *change*: the records of the instances it changed, the fqns
of those it removed, and the run's state and error after it. Every so often a *snapshot*
holds every record. The run as it was after any write is the nearest snapshot before it
with the changes after it replayed in order: `replay(snapshot, changes)`.

Both are JSON objects (the persistence layer stores them as they are):

    change   = {"records": [record, ...], "removed": [fqn, ...], "run": {"state", "error"},
                "appended": [{"fqn", "key", "value"}, ...]}
    snapshot = {"records": [every record], "run": {"state", "error"}}

A record of a change is whole for an instance the change creates; for one that was there
before, it is its fqn and only the fields that changed (a join's arrival that changes its
status alone does not carry the join's growing list). `appended` is an `atomic_state_append`:
the value added at the end of the list `key` of the instance's state. Changes written before
either (whole records only) replay the same.

Pure: no Django, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
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


# The fields of a record besides its fqn, in `record_to_json`'s order.
_FIELDS = ("name", "declared_name", "status", "state", "params", "error", "entry")


def record_delta(
    before: InstanceRecord, after: InstanceRecord, *, copy: bool = True
) -> dict[str, Any]:
    """`after` as a change's record over `before` (the same instance): its fqn and the fields
    that differ (`copy`: as `record_to_json`'s)."""
    delta: dict[str, Any] = {"fqn": after.fqn}
    for name in _FIELDS:
        value = getattr(after, name)
        if getattr(before, name) != value:
            delta[name] = copy_data(value) if copy and name in ("state", "params") else value
    return delta


def _merged(record: InstanceRecord, delta: Mapping[str, Any]) -> InstanceRecord:
    """`record` with the fields a change's partial record gives."""
    fields: dict[str, Any] = {}
    for name in _FIELDS:
        if name in delta:
            value = delta[name]
            if name in ("state", "params"):
                value = copy_data(dict(value or {}))
            elif name == "error":
                value = value or None
            elif name == "entry":
                value = int(value)
            fields[name] = value
    return replace(record, **fields)


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
            known = self.records.get(data["fqn"])
            if "name" in data:  # whole
                self.records[data["fqn"]] = record_from_json(data)
            elif known is not None:  # (a partial record always has one before it)
                self.records[data["fqn"]] = _merged(known, data)
        for appended in change.get("appended", ()):
            known = self.records.get(appended["fqn"])
            if known is not None:
                state = dict(known.state)
                state[appended["key"]] = [
                    *state.get(appended["key"], ()),
                    copy_data(appended["value"]),
                ]
                self.records[known.fqn] = replace(known, state=state)
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
    differ are kept: whole if new, else the fields that differ), with the run's state and
    error after it (`copy`: as `record_to_json`'s)."""
    records = []
    for record in after:
        was = before.get(record.fqn)
        if was is None:
            records.append(record_to_json(record, copy=copy))
        elif was != record:
            records.append(record_delta(was, record, copy=copy))
    return {
        "records": records,
        "removed": sorted(set(removed)),
        "run": {"state": state, "error": error},
    }


def append_change(fqn: str, key: str, value: Any, *, state: str, error: str) -> dict[str, Any]:
    """The change of an `atomic_state_append`: `value` added at the end of the list `key` of
    the state of instance `fqn` (the value as it is: the caller encodes it at once)."""
    return {
        "records": [],
        "removed": [],
        "run": {"state": state, "error": error},
        "appended": [{"fqn": fqn, "key": key, "value": value}],
    }
