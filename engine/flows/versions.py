"""Routine versions: list them, compare any two side by side, and move a flow onto another
version of its routine.

Every save of a routine writes a `RoutineVersion` (`engine.flows.routines`), whose steps keep
their identity (`key`) across versions. Two versions are compared step by step, the steps
aligned by key where both have one and by position otherwise. A flow moved onto another version
goes on at the step with the key of the step it is at (or at the step the user chooses), keeps
the results of the steps that exist in both versions (re-indexed) and drops the others, which
its event records. The move is an operator action like the others of `engine.flows.service`:
access, the state's row of `ACTIONS`, a compare-and-set write and an event naming the user.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from django.db.models import QuerySet

from engine.core.errors import FlowStateError
from engine.core.flows import script as script_registry
from engine.flows import codec
from engine.flows.models import Flow, Routine, RoutineVersion
from engine.flows.service import _act, _restart_changes, _where
from engine.flows.status import ACTIONS
from engine.flows.store import EventSpec
from engine.jsonsafe import check_text

__all__ = [
    "CHANGES",
    "DiffRow",
    "DiffStep",
    "NoSuchVersion",
    "VersionDiff",
    "VersionMove",
    "change_version",
    "flow_version_diff",
    "get_version",
    "map_position",
    "plan_version_move",
    "routine_versions",
    "version_diff",
    "version_steps",
]

# What a row of a diff may say changed, in the order it is told.
CHANGES = ("added", "removed", "moved", "label", "script", "params", "overrides")


class NoSuchVersion(ValueError):
    """The routine has no version of that number; the message names those it has."""


# --- versions ----------------------------------------------------------------------------------


def _routine_id(routine: Routine | int) -> int:
    return routine.pk if isinstance(routine, Routine) else int(routine)


def routine_versions(routine: Routine | int) -> QuerySet[RoutineVersion]:
    """The versions of `routine`, newest first, with their authors."""
    return (
        RoutineVersion.objects.filter(routine_id=_routine_id(routine))
        .select_related("author")
        .order_by("-number")
    )


def _numbers_text(numbers: list[int]) -> str:
    """The numbers as words: "1 to 4", "1, 3 and 4", "2", "none"."""
    if not numbers:
        return "none"
    if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]} to {numbers[-1]}"
    if len(numbers) == 1:
        return str(numbers[0])
    return ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"


def _check_number(number: Any, what: str = "version") -> int:
    if isinstance(number, bool) or not isinstance(number, int):
        raise ValueError(f"{what} must be a version number (a whole number), not {number!r}")
    return number


def get_version(routine: Routine | int, number: Any) -> RoutineVersion:
    """Version `number` of `routine`; `NoSuchVersion` naming the versions it has otherwise."""
    number = _check_number(number)
    routine_id = _routine_id(routine)
    found = RoutineVersion.objects.filter(routine_id=routine_id, number=number).first()
    if found is None:
        numbers = sorted(
            RoutineVersion.objects.filter(routine_id=routine_id).values_list("number", flat=True)
        )
        raise NoSuchVersion(
            f"routine {routine_id} has no version {number}; its versions are "
            f"{_numbers_text(numbers)}"
        )
    return found


# --- comparing two versions ----------------------------------------------------------------------


@dataclass(frozen=True)
class DiffStep:
    """One step of one side of a diff (`position` 0-based; `name` is its label or, without
    one, its script's label)."""

    position: int
    key: str
    label: str
    name: str
    script: str
    params: dict[str, Any]
    overrides: dict[str, Any]


@dataclass(frozen=True)
class DiffRow:
    """One row of a side-by-side diff: the step of the left version and the step of the
    right one (None where the step is only on the other side), what changed (`CHANGES`) and
    the names of the params that differ."""

    left: DiffStep | None
    right: DiffStep | None
    changes: tuple[str, ...] = ()
    params_changed: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """What the row is: "added", "removed", "changed" (something of the step, or its
        place) or "same"."""
        if self.left is None:
            return "added"
        if self.right is None:
            return "removed"
        return "changed" if self.changes else "same"

    @property
    def name(self) -> str:
        step = self.right or self.left
        assert step is not None
        return step.name


@dataclass(frozen=True)
class VersionDiff:
    """Two versions of a routine side by side: the name and description of each (`name` and
    `description` are (left, right) when they differ, else None) and the rows."""

    routine_id: int
    a: int
    b: int
    rows: tuple[DiffRow, ...]
    name: tuple[str, str] | None = None
    description: tuple[str, str] | None = None
    left_name: str = ""
    right_name: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.name or self.description or any(row.changes for row in self.rows))

    def summary(self) -> dict[str, list[str]]:
        """The names of the steps added, removed, moved and otherwise changed."""
        summary: dict[str, list[str]] = {"added": [], "removed": [], "moved": [], "changed": []}
        for row in self.rows:
            if "added" in row.changes:
                summary["added"].append(row.name)
            elif "removed" in row.changes:
                summary["removed"].append(row.name)
            else:
                if "moved" in row.changes:
                    summary["moved"].append(row.name)
                if set(row.changes) - {"moved"}:
                    summary["changed"].append(row.name)
        return summary

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON: what the REST API answers."""
        return {
            "routine": self.routine_id,
            "a": self.a,
            "b": self.b,
            "name": list(self.name) if self.name else None,
            "description": list(self.description) if self.description else None,
            "changed": self.changed,
            "summary": self.summary(),
            "rows": [
                {
                    "left": asdict(row.left) if row.left else None,
                    "right": asdict(row.right) if row.right else None,
                    "kind": row.kind,
                    "changes": list(row.changes),
                    "params_changed": list(row.params_changed),
                }
                for row in self.rows
            ],
        }


def _script_label(script: str) -> str:
    cls = script_registry.registry().get(script)
    return cls.label if cls is not None else script


def version_steps(version: RoutineVersion) -> list[DiffStep]:
    """The steps of a version as a diff shows them."""
    steps = version.steps if isinstance(version.steps, list) else []
    return [
        DiffStep(
            position=index,
            key=str(step.get("key") or ""),
            label=str(step.get("label") or ""),
            name=str(step.get("label") or "") or _script_label(str(step.get("script") or "")),
            script=str(step.get("script") or ""),
            params=dict(step.get("params") or {}),
            overrides=dict(step.get("overrides") or {}),
        )
        for index, step in enumerate(steps)
    ]


def _flow_steps(flow: Flow) -> list[DiffStep]:
    keys = flow_keys(flow)
    return [
        DiffStep(
            position=index,
            key=keys[index],
            label=str(step.get("name") or ""),
            name=str(step.get("name") or "") or _script_label(str(step.get("script") or "")),
            script=str(step.get("script") or ""),
            params=dict(step.get("params") or {}),
            overrides=dict(step.get("overrides") or {}),
        )
        for index, step in enumerate(flow.steps)
    ]


def flow_keys(flow: Flow) -> list[str]:
    """The identity of each step the flow pinned. A flow started before steps had keys has
    none: it takes those of its version's record when that has the same scripts in the same
    order (the version it pinned, as the versions were recorded then)."""
    keys = [str(step.get("key") or "") for step in flow.steps]
    if all(keys):
        return keys
    row = RoutineVersion.objects.filter(
        routine_id=flow.routine_id, number=flow.routine_version
    ).first()
    recorded = row.steps if row is not None and isinstance(row.steps, list) else []
    if len(recorded) == len(flow.steps) and all(
        str(mine.get("script")) == str(theirs.get("script"))
        for mine, theirs in zip(flow.steps, recorded, strict=True)
    ):
        return [
            key or str(theirs.get("key") or "") for key, theirs in zip(keys, recorded, strict=True)
        ]
    return keys


def _pairs(left: list[DiffStep], right: list[DiffStep]) -> dict[int, int]:
    """Which left step is which right step: by key where both have one; a step without a key
    (one recorded before steps had keys), or whose key the other side lacks, pairs with the
    step at its position on the other side when that one is not paired by key and lacks a
    key of its own (or has one the left side does not know)."""
    right_by_key = {step.key: step.position for step in right if step.key}
    left_keys = {step.key for step in left if step.key}
    pairs = {
        step.position: right_by_key[step.key]
        for step in left
        if step.key and step.key in right_by_key
    }
    taken = set(pairs.values())
    for step in left:
        if step.position in pairs or step.position >= len(right) or step.position in taken:
            continue
        other = right[step.position]
        if other.key and other.key in left_keys:
            continue
        if step.key and other.key:
            continue  # two different steps, each with its own identity
        pairs[step.position] = other.position
        taken.add(other.position)
    return pairs


def _moved(pairs: dict[int, int]) -> set[int]:
    """The left positions of paired steps whose order relative to the others changed: those
    outside a longest run kept in the same order on both sides."""
    ordered = sorted(pairs.items(), key=lambda pair: pair[1])
    lefts = [left for left, _ in ordered]
    # Longest increasing subsequence of the left positions, by patience sorting.
    tails: list[int] = []
    tail_index: list[int] = []
    previous: list[int] = [-1] * len(lefts)
    for index, value in enumerate(lefts):
        low, high = 0, len(tails)
        while low < high:
            middle = (low + high) // 2
            if tails[middle] < value:
                low = middle + 1
            else:
                high = middle
        if low == len(tails):
            tails.append(value)
            tail_index.append(index)
        else:
            tails[low] = value
            tail_index[low] = index
        previous[index] = tail_index[low - 1] if low else -1
    kept: set[int] = set()
    at = tail_index[-1] if tail_index else -1
    while at != -1:
        kept.add(lefts[at])
        at = previous[at]
    return set(lefts) - kept


def _row(left: DiffStep | None, right: DiffStep | None, moved: bool) -> DiffRow:
    if left is None or right is None:
        return DiffRow(left, right, ("added",) if left is None else ("removed",))
    changes = []
    if moved:
        changes.append("moved")
    if left.name != right.name:
        changes.append("label")
    if left.script != right.script:
        changes.append("script")
    params_changed = tuple(
        sorted(
            name
            for name in set(left.params) | set(right.params)
            if left.params.get(name, _MISSING) != right.params.get(name, _MISSING)
        )
    )
    if params_changed:
        changes.append("params")
    if left.overrides != right.overrides:
        changes.append("overrides")
    return DiffRow(left, right, tuple(changes), params_changed)


_MISSING = object()


def diff_steps(left: list[DiffStep], right: list[DiffStep]) -> tuple[DiffRow, ...]:
    """The rows of a side-by-side diff, in the right side's order. A step only on the left
    comes where it was: after the steps kept in order before it, before the steps added
    there (as a diff shows what went before what came)."""
    pairs = _pairs(left, right)
    moved = _moved(pairs)
    by_right = {j: i for i, j in pairs.items()}
    removed = sorted(set(range(len(left))) - set(pairs))
    # For each right step, the left position of the next step kept in order from there on:
    # the steps removed before it come before this row.
    upto = [len(left)] * (len(right) + 1)
    for step in reversed(right):
        i = by_right.get(step.position)
        kept = i is not None and i not in moved
        upto[step.position] = i if kept and i is not None else upto[step.position + 1]
    rows: list[DiffRow] = []
    next_removed = 0
    for step in right:
        i = by_right.get(step.position)
        while next_removed < len(removed) and removed[next_removed] < upto[step.position]:
            rows.append(_row(left[removed[next_removed]], None, False))
            next_removed += 1
        rows.append(_row(left[i] if i is not None else None, step, i in moved))
    rows.extend(_row(left[index], None, False) for index in removed[next_removed:])
    return tuple(rows)


def _texts(left: str, right: str) -> tuple[str, str] | None:
    return None if left == right else (left, right)


def version_diff(routine: Routine | int, a: Any, b: Any) -> VersionDiff:
    """Versions `a` and `b` (numbers) of `routine` side by side: steps aligned by key where
    keys exist, else by position; each row says what changed (added, removed, moved, label,
    script, params, retry overrides); the name and description when they changed. Raises
    `NoSuchVersion` naming the versions the routine has."""
    left, right = get_version(routine, a), get_version(routine, b)
    return VersionDiff(
        routine_id=_routine_id(routine),
        a=left.number,
        b=right.number,
        rows=diff_steps(version_steps(left), version_steps(right)),
        name=_texts(left.name, right.name),
        description=_texts(left.description, right.description),
        left_name=left.name,
        right_name=right.name,
    )


def flow_version_diff(flow: Flow, target: RoutineVersion) -> VersionDiff:
    """The steps `flow` pinned (its version) beside `target`'s."""
    return VersionDiff(
        routine_id=flow.routine_id,
        a=flow.routine_version,
        b=target.number,
        rows=diff_steps(_flow_steps(flow), version_steps(target)),
        left_name=flow.routine.name,
        right_name=target.name,
    )


# --- moving a flow onto another version ----------------------------------------------------------


def target_snapshot(version: RoutineVersion) -> list[dict[str, Any]]:
    """A version's steps as a flow pins them (the shape of `RoutineStep.snapshot`)."""
    steps = []
    for step in version_steps(version):
        pinned: dict[str, Any] = {"name": step.name, "script": step.script, "params": step.params}
        if step.key:
            pinned["key"] = step.key
        if step.overrides:
            pinned["overrides"] = step.overrides
        steps.append(pinned)
    return steps


def _resolve(flow: Flow, target: RoutineVersion | int) -> RoutineVersion:
    if isinstance(target, RoutineVersion):
        if target.routine_id != flow.routine_id:
            raise NoSuchVersion(f"that version is not one of routine {flow.routine_id}'s")
        return target
    return get_version(flow.routine_id, target)


def map_position(flow: Flow, target: RoutineVersion | int) -> int | None:
    """The step of `target` (a version of the flow's routine, or its number) with the key of
    the step `flow` is at; None when there is none (the caller then chooses)."""
    version = _resolve(flow, target)
    keys = flow_keys(flow)
    key = keys[flow.position] if 0 <= flow.position < len(keys) else ""
    if not key:
        return None
    for step in version_steps(version):
        if step.key == key:
            return step.position
    return None


@dataclass
class VersionMove:
    """What moving `flow` onto `target` does: its new steps, the step it goes on at
    (`position`: the one asked, else `mapped`; None when neither), the results kept
    (old position -> new) and dropped, and the diff of the two versions."""

    flow: Flow
    target: RoutineVersion
    steps: list[dict[str, Any]]
    diff: VersionDiff
    mapped: int | None
    position: int | None
    kept: list[tuple[int, int]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    missing_scripts: list[str] = field(default_factory=list)

    @property
    def problem(self) -> str:
        """Why the move cannot be made as asked ("" when it can)."""
        flow, number = self.flow, self.target.number
        if number == flow.routine_version:
            if self.position is None or self.position == flow.position:
                return f"flow {flow.pk} is already on version {number}"
            return (
                f"flow {flow.pk} is already on version {number}; to go on at another step of "
                "it, move the flow to that step instead"
            )
        if not self.steps:
            return f"version {number} has no steps"
        if self.missing_scripts:
            return f"version {number} uses unregistered scripts: {self.missing_scripts}"
        last = len(self.steps) - 1
        if self.position is None:
            here = flow.steps[flow.position] if flow.position < flow.length else {}
            name = here.get("name") or here.get("script") or f"step {flow.position + 1}"
            return (
                f"step {flow.position + 1} ({name}) of the flow is not in version {number}: "
                f"choose the step to go on at (0 to {last})"
            )
        if not 0 <= self.position <= last:
            return (
                f"position {self.position} is out of range: version {number} has steps 0 to {last}"
            )
        return ""


def plan_version_move(
    flow: Flow, target: RoutineVersion | int, position: int | None = None
) -> VersionMove:
    """What `change_version(flow, target, position=position)` would do, without doing it
    (its `problem` says why it would be refused). Raises `NoSuchVersion` and a `ValueError`
    for a position that is not a whole number."""
    if position is not None:
        _check_number(position, "position")
    version = _resolve(flow, target)
    steps = target_snapshot(version)
    known = script_registry.registry()
    keys = flow_keys(flow)
    target_at = {step["key"]: index for index, step in enumerate(steps) if step.get("key")}
    mapped = map_position(flow, version)
    move = VersionMove(
        flow=flow,
        target=version,
        steps=steps,
        diff=flow_version_diff(flow, version),
        mapped=mapped,
        position=mapped if position is None else position,
        missing_scripts=sorted({s["script"] for s in steps if s["script"] not in known}),
    )
    results: list[Any] = [None] * len(steps)
    for index, stored in enumerate(flow.stored_results):
        key = keys[index] if index < len(keys) else ""
        new = target_at.get(key) if key else None
        if new is not None:
            results[new] = stored
            move.kept.append((index, new))
        elif stored is not None:
            step = flow.steps[index] if index < flow.length else {}
            move.dropped.append(
                {
                    "step": index,
                    "key": key,
                    "name": step.get("name") or step.get("script") or f"step {index + 1}",
                    "result": codec.display(stored),
                }
            )
    done = max((new for _, new in move.kept), default=-1) + 1
    move.results = results[:done]
    return move


def change_version(
    flow: Flow | int,
    version_number: Any,
    user: Any,
    *,
    position: int | None = None,
    reason: str = "",
    version: int | None = None,
) -> Flow:
    """Move a pending, waiting, failed or killed flow onto version `version_number` of its
    routine and run it at once from `position` (0-based, a step of that version), or, without
    one, from the step with the key of the step it is at.

    Its steps become that version's, the results of the steps the version keeps (by key) are
    re-indexed and the others dropped, and one event ("manual.change_version") records the
    user, the reason, both versions and positions, the results kept and dropped, and what
    changed. Refused (nothing written): a version the routine does not have (`NoSuchVersion`,
    naming those it has), the version it is on, a version whose scripts are not registered,
    no step to go on at, a position out of range, a state not in `ACTIONS["change_version"]`
    (`FlowStateError`); a user who is neither its owner nor an operator (`PermissionDenied`).
    `version` is the flow version the caller saw (`StaleFlowError` if it changed since)."""
    check_text(reason, "reason")
    _check_number(version_number)
    if position is not None:
        _check_number(position, "position")

    def build(flow: Flow) -> tuple[dict[str, Any], list[EventSpec], bool]:
        move = plan_version_move(flow, version_number, position)
        if move.problem:
            raise FlowStateError(move.problem)
        assert move.position is not None  # (no problem: a position was given or mapped)
        data = {
            "from_version": flow.routine_version,
            "to_version": move.target.number,
            "from": flow.position,
            "to": move.position,
            "mapped": position is None,
            "reason": reason,
            "kept": [list(pair) for pair in move.kept],
            "dropped": move.dropped,
            "diff": move.diff.summary(),
        }
        changes = {
            **_restart_changes(move.position, new_visit=True),
            "steps": move.steps,
            "routine_version": move.target.number,
            "stored_results": move.results,
        }
        event = ("manual.change_version", {"actor": user, "data": data, "message": reason})
        return changes, [event], True

    return _act(
        flow,
        user,
        ACTIONS["change_version"],
        lambda f: (
            f"{_where(f)}; only a pending, waiting, failed or killed flow can be moved onto "
            "another version"
        ),
        build,
        version,
    )
