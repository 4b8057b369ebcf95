"""Loading and saving LTM runs: snapshots of a run's tree, and the one way to write it.

Every change of a run (start, claim, the commit of an execution, an operator's action, a
sweep's hand-over) is a `Write` applied by `commit`: in one transaction it re-reads the run,
asks `build` what to write, and applies it with a compare-and-set on `LtmRun.version`
(`UPDATE ... WHERE id = ? AND version = ?`). If another writer slipped in, nothing is written
and `build` runs again on what is stored now. New executions go to the outbox
(`LtmExecution`) in the same transaction and are dispatched to Huey after the commit.

On PostgreSQL an execution's commit (and a claim, an append) is ONE statement: the
compare-and-set and every other write in data-modifying CTEs, each part writing only if the
compare-and-set won, the write's checks made by the statement itself (`apply`'s
`at_once`). One statement is atomic and commits by itself, so a first try outside any
transaction opens none: its reads see what is committed, as each statement of a transaction
does under READ COMMITTED, and a write that does not fit one statement opens a transaction
of its own.
"""

from __future__ import annotations

import marshal
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from copy import copy
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, cast

from django.db import DataError, connections, router, transaction
from django.db.models import Field
from django.utils import timezone

from engine import config
from engine import dispatch as queue
from engine import events as engine_events
from engine.core.errors import StaleFlowError
from engine.core.ltm import history
from engine.core.ltm.node import LTM
from engine.core.ltm.records import InstanceRecord
from engine.core.ltm.registry import ltm_registry
from engine.core.ltm.tree import RecordTree
from engine.jsonsafe import MAX_DEPTH, ensure_json
from engine.ltm.models import (
    LtmAppend,
    LtmCheckpoint,
    LtmEvent,
    LtmExecution,
    LtmInstance,
    LtmRun,
)
from engine.ltm.status import FINISHED, OPEN, ExecutionStatus, LtmRunState
from engine.rows import Table, cursor_for, db_value

_ATTEMPTS = 50  # compare-and-set retries before giving up (each one re-plans, never re-runs)
# What a run writes wraps what it was given: an event holds a payload, a state an update of
# it. Inputs are held to MAX_DEPTH; what is stored may be nested somewhat deeper.
STORED_DEPTH = 2 * MAX_DEPTH
# A write that changes at least this many records (and half the run) is checkpointed too.
_WIDE_CHANGE = 20


def root_class(name: str) -> type[LTM]:
    """The registered root LTM class called `name`."""
    known = ltm_registry()
    if name not in known:
        raise LookupError(
            f"LTM {name!r} is not registered in this process; define it in an app's ltms.py "
            f"or a FLOWSTUDIO['SCRIPT_MODULES'] module (known: {sorted(known)})"
        )
    return known[name]


# The statements of the hot path (an execution's claim and commit), written once (events:
# `_insert_events`).
RUNS, INSTANCES, EXECUTIONS, APPENDS = (
    Table(LtmRun),
    Table(LtmInstance),
    Table(LtmExecution),
    Table(LtmAppend),
)


def db_for(model: Any) -> Any:
    """The connection that writes `model`'s table."""
    return connections[router.db_for_write(model)]


_ROW_FIELDS = ("id", "fqn", "name", "declared_name", "status", "state", "params", "error", "entry")


class InstanceRow:
    """An instance's stored row as a snapshot reads it: `LtmInstance`'s columns, without
    building the model (a run of 205 instances is read twice an execution, and the models'
    `__init__` was most of a read's Python)."""

    __slots__ = _ROW_FIELDS
    id: int
    fqn: str
    name: str
    declared_name: str
    status: str
    state: dict[str, Any]
    params: dict[str, Any]
    error: str
    entry: int

    def __init__(self, values: tuple[Any, ...]) -> None:
        for name, value in zip(_ROW_FIELDS, values, strict=True):
            setattr(self, name, value)


def with_state(row: Any, state: dict[str, Any]) -> InstanceRow:
    """A new InstanceRow of `row` with `state` (rows held are shared: never changed)."""
    return InstanceRow(
        tuple(state if name == "state" else getattr(row, name) for name in _ROW_FIELDS)
    )


def _rows(queryset: Any) -> dict[str, Any]:
    """fqn -> InstanceRow of the instance rows `queryset` selects."""
    return {row.fqn: row for row in map(InstanceRow, queryset.values_list(*_ROW_FIELDS))}


def as_row(row: Any) -> InstanceRow:
    """An InstanceRow of `row` (an LtmInstance, or an InstanceRow: returned as it is)."""
    if isinstance(row, InstanceRow):
        return row
    return InstanceRow(tuple(getattr(row, name) for name in _ROW_FIELDS))


class CommittedRuns:
    """The instance rows of the runs this process wrote last, each at the version its write
    committed, with their tree once built: a snapshot of a run still at that version takes
    them instead of reading and decoding every row again, and the next write's tree is this
    one with its records stored over it (`RecordTree.with_records`) instead of a tree built
    from every record (an execution of a run of 200 instances did both, several times).

    Safe because every write of a run's instances bumps its version, and an entry is kept
    only once its write has committed (a rolled-back write's rows never serve: another write
    may commit the same version number). A run written by another process is at a version
    this one does not hold, and is read from the database. The rows and the trees are shared
    between snapshots and never changed in place (a write replaces a row object, see
    `_rows_to_write`; whoever changes a tree changes a copy). Least recently used runs go
    first past `max_rows` rows in all.

    A write is also kept as written (`written`) from before its commit, under the run's row
    as that write left it: its version and its `updated`, a time no other write of this
    process gives a run (`write_time`). A reader that finds the run's row so in the database
    finds it committed, and takes its rows (`get_as_read`), where the committed entry may not
    be there yet: a writer waiting for the run's row lock wakes as the other's commit ends on
    the server, before that writer has run its on-commit hook. Rolled back, a write's rows
    never match a row in the database, and drop out of the bounded `written`."""

    _WRITTEN = 64  # writes kept as written: those in flight, and some rolled back

    def __init__(self, max_rows: int = 50_000) -> None:
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, Held] = OrderedDict()
        self._held = 0
        self._written: OrderedDict[tuple[str, int, Any], Held] = OrderedDict()

    def get(self, run_id: Any, version: int) -> Held | None:
        """The run at `version`, if this process committed that version."""
        with self._lock:
            held = self._runs.get(str(run_id))
            if held is None or held.version != version:
                return None
            self._runs.move_to_end(str(run_id))
            return held

    def latest(self, run_id: Any) -> Held | None:
        """The run at the last version this process committed, whatever it is."""
        with self._lock:
            return self._runs.get(str(run_id))

    def get_as_read(self, run: LtmRun) -> Held | None:
        """The run as `run`, its row as just read from the database, says it is: the entry
        committed at its version, or else the write of this process that left the row so (its
        version and `updated`). That write is either committed (its hook may not have run
        yet) or the reader's own transaction's: its rows are the ones the reader sees, either
        way. (Not kept as committed here: only the writer's hook knows its commit.)"""
        held = self.get(run.pk, run.version)
        if held is not None:
            return held
        with self._lock:
            return self._written.get((str(run.pk), run.version, run.updated))

    def put(self, run_id: Any, held: Held) -> None:
        """Keep `held` (an older version than the one kept: ignored, a write committed after
        it got there first)."""
        key = str(run_id)
        with self._lock:
            kept = self._runs.get(key)
            if kept is not None:
                if kept.version >= held.version:
                    return
                self._held -= len(kept.rows)
                del self._runs[key]
            if len(held.rows) > self.max_rows:
                return
            self._runs[key] = held
            self._held += len(held.rows)
            while self._held > self.max_rows:
                _, dropped = self._runs.popitem(last=False)
                self._held -= len(dropped.rows)

    def after_commit(
        self, run: LtmRun, rows: dict[str, Any], tree: RecordTree | None = None
    ) -> None:
        """Keep `rows` (InstanceRows, never changed in place: the dict is copied now) and
        their `tree` as `run` at its version (and `updated`, as written by the transaction
        under way): as written at once, as committed once the transaction commits."""
        held = Held(run.version, dict(rows), tree, copy(run))
        key = (str(run.pk), run.version, run.updated)
        if len(held.rows) <= self.max_rows:
            with self._lock:
                self._written[key] = held
                while len(self._written) > self._WRITTEN:
                    self._written.popitem(last=False)

        def committed() -> None:
            self.put(run.pk, held)
            with self._lock:
                self._written.pop(key, None)

        transaction.on_commit(committed)

    def clear(self) -> None:
        with self._lock:
            self._runs.clear()
            self._held = 0
            self._written.clear()


class RunLocks:
    """A lock per run for the threads of this process: a write of a run (`commit`, an
    atomic append) outside any transaction waits for another thread's write of it to have
    committed, instead of racing it to the run's compare-and-set. On PostgreSQL the loser
    of that race waited for the row's lock anyway, then found its snapshot outdated and
    planned again: 540 times in two 200-branch fan-outs (806 executions) on two worker
    threads, each a transaction wasted. Now the second writer takes the run as the first left
    it, held by this process (`commit`), and wins at its first try. Writers in other
    processes still meet at the compare-and-set. Only outside a transaction (a thread
    waiting here holds no lock of the database, so no wait can go round in a circle), and
    given up after `wait` seconds all the same. Reentrant: in immediate mode a commit's
    hooks run the executions it queued in the same thread, inside its hold.

    Not on SQLite, whose write transaction holds the whole database from its start: its
    writers rarely lose the compare-and-set to each other, and this lock, held until the
    writer's hooks have run (its enqueue into the SQLite-backed queue among them), made the
    200-branch fan-out on two worker threads slower (67-75 % of bare Huey against 82-91 %
    without it, alternating runs)."""

    def __init__(self, wait: float = 5.0) -> None:
        self.wait = wait
        self._lock = threading.Lock()
        self._runs: dict[str, list[Any]] = {}  # run id -> [its lock, threads holding or waiting]

    @contextmanager
    def hold(self, run_id: Any) -> Iterator[None]:
        db = db_for(LtmRun)
        if db.in_atomic_block or db.vendor == "sqlite":
            yield
            return
        key = str(run_id)
        with self._lock:
            entry = self._runs.setdefault(key, [threading.RLock(), 0])
            entry[1] += 1
        got = entry[0].acquire(timeout=self.wait)
        try:
            yield
        finally:
            if got:
                entry[0].release()
            with self._lock:
                entry[1] -= 1
                if not entry[1]:
                    del self._runs[key]


run_locks = RunLocks()


_last_write_time = [timezone.now()]
_write_time_lock = threading.Lock()


def write_time() -> Any:
    """Now, for a run's `updated`: later than any this process gave before, so two writes
    of this process never leave a run's row alike (`CommittedRuns.get_as_read`)."""
    now = timezone.now()
    with _write_time_lock:
        if now <= _last_write_time[0]:
            now = _last_write_time[0] + timedelta(microseconds=1)
        _last_write_time[0] = now
    return now


@dataclass(frozen=True)
class Held:
    """A run as committed at `version`: its instance rows, their tree if built, and the
    run's row as written (a copy: `CommittedRuns.latest`)."""

    version: int
    rows: dict[str, InstanceRow]
    tree: RecordTree | None = None
    run: LtmRun | None = None


committed = CommittedRuns()


@dataclass
class Snapshot:
    """A run and its instance rows, as read together: all of them, or (`partial`) only
    those a write needs (`read(run_id, only=...)`: a claim reads one instance of a run that
    may have hundreds)."""

    run: LtmRun
    rows: dict[str, Any]  # fqn -> InstanceRow (or LtmInstance: the same columns)
    partial: bool = False
    _tree: RecordTree | None = field(default=None, repr=False, compare=False)

    def complete(self) -> dict[str, Any]:
        """Every instance row (those not read yet are read now, in this transaction)."""
        if self.partial:
            missing = LtmInstance.objects.filter(run=self.run).exclude(fqn__in=list(self.rows))
            self.rows.update(_rows(missing))
            self.partial = False
        return self.rows

    def records(self) -> list[InstanceRecord]:
        """The rows as core records; the root's state is the run's global state."""
        return [row_record(self.run, row) for row in self.rows.values()]

    def built_tree(self) -> RecordTree | None:
        """The tree of the rows, if built already."""
        return self._tree

    def forget_tree(self) -> None:
        """Drop the tree (the rows have been written since)."""
        self._tree = None

    def record_tree(self) -> RecordTree:
        """The records as their tree, built once per snapshot (the live tree for run(), its
        transitions' checks and the commit's plan all start from it; each one that changes
        a tree changes a copy). Every instance's row is read first. A tree of another class
        than the one registered now under the run's name (it was registered again since, a
        code fix in a test) is built again."""
        machine = root_class(self.run.name)
        if self._tree is None or self._tree.machine is not machine:
            self.complete()
            self._tree = RecordTree(machine, self.records())
        return self._tree

    def tree(self, runtime: Any = None) -> LTM:
        """A live tree of the stored records."""
        return root_class(self.run.name).from_records(
            self.record_tree(),
            self.run.global_state,
            run_id=str(self.run.pk),
            runtime=runtime,
        )


def row_record(run: LtmRun, row: Any) -> InstanceRecord:
    """One instance row as a core record (the root's state is the run's global state)."""
    return InstanceRecord(
        fqn=row.fqn,
        name=row.name,
        declared_name=row.declared_name,
        status=row.status,
        state=run.global_state if "." not in row.fqn else row.state,
        params=row.params,
        error=row.error or None,
        entry=row.entry,
    )


def read(run_id: Any, only: Iterable[str] | None = None, *, lock: bool = False) -> Snapshot:
    """The run (first: its version guards what is read after it) and its instances: all of
    them, or the instances named by `only` (a partial snapshot). A run this process
    committed last is held whole at its version (`committed`): its rows are not read.
    `lock`: the run's row stays locked until the transaction ends (`rows.Table.first`)."""
    run = RUNS.first(db_for(LtmRun), related="owner", lock=lock, pk=run_id)
    if run is None:
        raise LtmRun.DoesNotExist(f"no LTM run {run_id}")
    held = committed.get_as_read(run)
    if held is not None:  # this process wrote that version: its rows are these
        return Snapshot(run, dict(held.rows), _tree=held.tree)
    rows = LtmInstance.objects.filter(run=run)
    if only is not None:
        return Snapshot(run, _rows(rows.filter(fqn__in=list(only))), True)
    return Snapshot(run, _rows(rows))


@dataclass
class Write:
    """What to store of one change of a run. Events are `{kind, fqn, data, actor?}`."""

    records: list[InstanceRecord] = field(default_factory=list)
    executions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    execution_changes: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    redispatch: list[int] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # fqns of instances to delete
    # Index in `executions` -> (an earlier execution, a seq): the new execution takes over
    # that one's atomic appends made up to that event (the time machine re-queues it).
    inherit: dict[int, tuple[int, int]] = field(default_factory=dict)
    run_state: str | None = None  # None: worked out from what is open and what failed
    run_error: str | None = None
    outcome: Any = None  # for the caller of `commit`
    new_execution_ids: list[int] = field(default_factory=list)
    left: Snapshot | None = None  # the snapshot it was applied to, as it left it (`after`)
    # What every execution it changes must still be (`{"status": ..., "attempts": ...}`),
    # checked by the update itself: if one is not, the whole write is dropped (`Dropped`).
    expect: dict[str, Any] = field(default_factory=dict)
    # The write may leave the run's row alone if it changes nothing but executions (see
    # `apply`). Only a claim asks: the end of an execution that changed nothing (a join's
    # arrival that did not complete it) still writes the run, as measured best (without
    # that bump two SQLite worker threads sometimes kept the write lock from each other
    # for hundreds of milliseconds).
    executions_only: bool = False
    # `keep`: the first execution this write creates is not sent to the queue but created
    # with `keep_claim`'s values (claimed by the caller); `kept` is it, for the caller to run
    # next. `keep_record` and `keep_event`, if given, are its state's claim (queued ->
    # active): written with this write, yet kept in the history as a change of its own
    # after it, as if made by a claim of its own (the time machine can stop between them).
    # `keep_queued`: instead, an execution of the run queued before (as read: it must still
    # be), claimed alike; `keep_record` and `keep_event` are its state's claim if queued.
    keep: bool = False
    keep_claim: dict[str, Any] = field(default_factory=dict)
    keep_record: InstanceRecord | None = None
    keep_event: dict[str, Any] | None = None
    keep_queued: LtmExecution | None = None
    kept: LtmExecution | None = None


class Dropped(Exception):
    """A write's execution was not as it expected (`Write.expect`): nothing was written."""


class _Again(Exception):
    """The write found the run changed after its compare-and-set: it is rolled back and
    built again on what is stored."""


def commit(
    run_id: Any,
    build: Callable[[Snapshot], Write | None],
    *,
    retry: bool = True,
    only: Iterable[str] | None = None,
    known: Snapshot | None = None,
) -> Write | None:
    """Apply `build(snapshot)` to the run with a compare-and-set; `build` is called again
    on a fresh snapshot when another writer got in first (with `retry=False` that is a
    StaleFlowError instead). None from `build`: write nothing; None too when the write's
    `expect` did not hold (it is rolled back). With `only`, the snapshot
    holds just those instances: `build` must look at no other, nor write another. `known`:
    a whole snapshot read earlier, taken as it is without reading the run again: the
    compare-and-set tells whether the run was still at its version (else `build` runs again
    on what is stored); `build` and the write must not have changed it."""
    with run_locks.hold(run_id):
        return _commit(run_id, build, retry, None if only is None else list(only), known)


def _commit(
    run_id: Any,
    build: Callable[[Snapshot], Write | None],
    retry: bool,
    names: list[str] | None,
    known: Snapshot | None,
) -> Write | None:
    if retry and known is not None and not known.partial:
        # A write of this process committed since `known` was read (another thread's, which
        # `run_locks` let go first): the run as it left it, instead of a compare-and-set
        # bound to fail.
        newer = committed.latest(run_id)
        if newer is not None and newer.run is not None and newer.version > known.run.version:
            known = Snapshot(copy(newer.run), dict(newer.rows), _tree=newer.tree)
    for attempt in range(_ATTEMPTS if retry else 1):
        # A first try on PostgreSQL, outside any transaction, opens none of its own: its reads
        # see what is committed, as each statement of a transaction does (READ COMMITTED),
        # and `apply` writes in one statement that commits by itself, or in a transaction.
        at_once = attempt == 0 and at_once_here()
        try:
            with nullcontext() if at_once else transaction.atomic():
                if known is not None and not known.partial:
                    snap = Snapshot(known.run, dict(known.rows), _tree=known._tree)
                else:
                    # An attempt after a lost compare-and-set takes the run's row lock as it
                    # reads (PostgreSQL; SQLite's write transaction holds it from its start):
                    # a writer that keeps getting in first cannot starve it.
                    snap = read(run_id, names, lock=attempt > 0)
                known = None  # (a retry reads afresh)
                write = build(snap)
                if write is None:
                    return None
                if apply(snap, write, at_once=at_once):
                    write.left = snap
                    return write
        except Dropped:
            return None  # (rolled back, or never written)
        except _Again:
            continue  # (rolled back, or never written)
    if not retry:
        raise StaleFlowError(f"LTM run {run_id} changed meanwhile; look again and retry")
    raise StaleFlowError(f"LTM run {run_id} keeps changing; try again")


def at_once_here() -> bool:
    """Whether a write may go without a transaction of its own (`apply`'s `at_once`): on
    PostgreSQL, where one statement is atomic and commits by itself, outside any
    transaction (in autocommit: not under a caller's manual transaction management)."""
    db = db_for(LtmRun)
    return db.vendor == "postgresql" and not db.in_atomic_block and db.get_autocommit()


def after(write: Write) -> Snapshot | None:
    """The run as the committed `write` left it, whole, from what this process holds (no
    query); None if it does not hold that version (a later write got there first)."""
    return None if write.left is None else held_snapshot(write.left.run)


def held_snapshot(run: LtmRun) -> Snapshot | None:
    """`run` whole at its version, with the rows this process committed at that version
    (no query); None if it holds no such version."""
    held = committed.get(run.pk, run.version)
    return None if held is None else Snapshot(run, dict(held.rows), _tree=held.tree)


def apply(snap: Snapshot, write: Write, *, at_once: bool = False) -> bool:
    """Store `write` if the run is still at the version read in `snap` (call inside a
    transaction, or with `at_once` outside any: see below). The compare-and-set is the
    first statement: on a conflict nothing is written and False is returned.

    `at_once` (PostgreSQL, outside a transaction): a write that fits one statement
    (`_fits_one_statement`) is that statement alone, which commits by itself, its checks
    (the executions as expected, the claim of a queued one) made by the statement too: where
    one fails, the statement raises and nothing of it stays. Any other write opens a
    transaction of its own.

    Besides the rows, each write keeps its place in the run's history: the change it made
    rides on its last event (`LtmEvent.change`), the executions it queued or closed carry
    that event's seq, and every `checkpoint_every()` events a whole snapshot is kept."""
    if at_once and not _may_fit_one_statement(write):
        with transaction.atomic():
            return _apply(snap, write)
    return _apply(snap, write, at_once=at_once)


def _apply(snap: Snapshot, write: Write, *, at_once: bool = False) -> bool:
    run, now = snap.run, write_time()
    if snap.partial and any(r.fqn not in snap.rows for r in write.records):
        snap.complete()  # (a record of an instance not read: is it new, or stored?)
    state = _next_state(snap, write)
    db = db_for(LtmRun)
    if write.executions_only and state == run.state and _executions_only(write):
        # Nothing of the run changes, nor its history (the claim of a state already active:
        # a join's next arrival): its executions only, each still as expected. The run
        # keeps its version and its row is not written (on PostgreSQL, not locked).
        single = len(write.execution_changes) == 1  # (all or nothing without a transaction)
        with transaction.atomic() if at_once and not single else nullcontext():
            _change_executions(db, run, write, run.seq)
        return True
    events = list(write.events)
    if state != run.state:
        events.append({"kind": "run.state", "fqn": "", "data": {"from": run.state, "to": state}})
    root_record = next((r for r in write.records if "." not in r.fqn), None)
    global_state = root_record.state if root_record is not None else run.global_state
    error = write.run_error if write.run_error is not None else run.error
    if state == LtmRunState.COMPLETE:
        error = ""
    before = {r.fqn: row_record(run, snap.rows[r.fqn]) for r in write.records if r.fqn in snap.rows}
    # (Changes and checkpoints share the records' data, uncopied: they are encoded by their
    # insert at once, and nothing keeps them.)
    change = history.change_of(
        before, write.records, write.removed, state=state, error=error, copy=False
    )
    if not events and (change["records"] or change["removed"]):
        events.append({"kind": "state.stored", "fqn": "", "data": {}})
    records, changes_at = write.records, {len(events): change}
    claim = write.keep_record if write.keep and state != LtmRunState.KILLED else None
    if claim is not None and write.keep_event is not None:  # (its change after the write's)
        planned = {r.fqn: r for r in write.records if r.fqn == claim.fqn}
        planned = planned or {claim.fqn: row_record(run, snap.rows[claim.fqn])}
        records = [*(r for r in write.records if r.fqn != claim.fqn), claim]
        events.append(write.keep_event)
        changes_at[len(events)] = history.change_of(
            planned, [claim], state=state, error=error, copy=False
        )
    finished = (run.finished if run.state == state else now) if state in FINISHED else None
    changes = {
        "state": state,
        "global_state": global_state,
        "error": error,
        "finished": finished,
        "updated": now,
    }
    # The seq of the write's change: executions it queues or closes carry it (a claim that
    # rides on it has its own change after it).
    first_seq, end_seq = run.seq, run.seq + len(events)
    at_seq = first_seq + min(changes_at)
    new_rows, changed_rows = _rows_to_write(snap, records)
    created = [
        LtmExecution(
            run=run,
            fqn=fqn,
            payload=payload,
            entry=(changed_rows.get(fqn) or new_rows.get(fqn) or snap.rows[fqn]).entry,
            dispatched_at=now,
            queued_seq=at_seq,
        )
        for fqn, payload in write.executions
    ]
    claimed = write.keep_record is None or claim is not None  # (else it claims for itself)
    keeping = _kept(write, created, state) if claimed else None
    groups = _execution_groups(write, at_seq)
    queued = write.keep_queued if claimed and state != LtmRunState.KILLED else None
    specs: list[EventSpec] = [
        (first_seq + index, spec["kind"], spec.get("fqn", ""), spec.get("actor"))
        + (spec.get("data", {}), changes_at.get(index))
        for index, spec in enumerate(events, start=1)
    ]
    base = committed.get(run.pk, run.version)
    tree = snap.built_tree() or (base.tree if base is not None else None)
    run_changes = {"seq": end_seq, **changes}
    changed = len(change["records"]) + len(change["removed"])
    one = _fits_one_statement(db, write, new_rows, changed_rows, created, groups, specs)
    if at_once and (not one or _checkpoints(snap, first_seq, end_seq, changed)):
        with transaction.atomic():  # (a checkpoint is kept with the write it follows)
            return _apply(snap, write)
    if one:
        at = timezone.now()
        won_claim = _apply_in_one_statement(
            db,
            run,
            run_changes,
            changed_rows,
            created,
            groups,
            write.expect,
            queued,
            write.keep_claim,
            specs,
            state,
            at,
            checked=at_once,
            claim_required=write.keep_record is not None,
        )
        if won_claim is None:
            return False
        _apply_to_memory(run, changes)
        snap.rows.update(changed_rows)
        if queued is not None:
            keeping = _kept_queued(write, queued, won_claim)
        _publish_events(run, state, specs, at)
    else:
        won = RUNS.update(db, run_changes, bump=["version"], pk=run.pk, version=run.version)
        if won != 1:
            return False
        _apply_to_memory(run, changes)
        _store_rows(snap, new_rows, changed_rows)
        if write.removed:
            LtmInstance.objects.filter(run=run, fqn__in=write.removed).delete()
            for fqn in write.removed:
                snap.rows.pop(fqn, None)
        EXECUTIONS.insert(db, created)
        if write.inherit:
            _inherit_appends({created[i].pk: earlier for i, earlier in write.inherit.items()})
        _change_executions(db, run, write, at_seq, groups)
        if queued is not None:
            keeping = _claim_queued(db, write, queued)
        _insert_events(db, run, state, specs)
    write.new_execution_ids.extend(execution.pk for execution in created)
    run.seq = end_seq
    _checkpoint(snap, first_seq, end_seq, changed)
    if tree is not None:  # the tree of the rows as written, from the tree before
        root = [replace(r, state=global_state) for r in records if "." not in r.fqn]
        tree = tree.with_records([*(r for r in records if "." in r.fqn), *root], write.removed)
    if not snap.partial:
        committed.after_commit(run, snap.rows, tree)
    elif base is not None:  # the rows read are current; the others are as held
        kept = {fqn: row for fqn, row in base.rows.items() if fqn not in write.removed}
        committed.after_commit(run, {**kept, **snap.rows}, tree)
    snap.forget_tree()  # (its rows have changed)
    to_dispatch = [*write.new_execution_ids, *write.redispatch]
    if keeping is not None:
        write.kept = keeping
        if keeping.pk in to_dispatch:
            to_dispatch.remove(keeping.pk)
    if to_dispatch:
        transaction.on_commit(lambda: dispatch(to_dispatch))
    return True


def _kept(write: Write, created: list[LtmExecution], state: str) -> LtmExecution | None:
    """The execution of `created` that `write` keeps for its caller (`Write.keep`), with
    the claim's values set (`Write.keep_claim`)."""
    if not write.keep or not created or state == LtmRunState.KILLED:
        return None
    kept = created[0]
    for name, value in write.keep_claim.items():
        setattr(kept, name, value)
    return kept


def _claim_queued(db: Any, write: Write, queued: LtmExecution) -> LtmExecution | None:
    """Claim `queued` for the caller (`Write.keep_queued`), if it is still as read: else
    another worker claimed it first. That worker's claim of a queued state wrote the run,
    so this write is built again (`_Again`); an active state's (a join's next arrival) did
    not: nothing is kept."""
    claimed = EXECUTIONS.update(
        db, write.keep_claim, pk=queued.pk, status=queued.status, attempts=queued.attempts
    )
    return _kept_queued(write, queued, claimed)


def _kept_queued(write: Write, queued: LtmExecution, claimed: int) -> LtmExecution | None:
    """`_claim_queued`'s outcome, from the rows its update (`claimed`) changed."""
    if claimed != 1:
        if write.keep_record is not None:
            raise _Again(f"execution {queued.pk} was claimed meanwhile")
        return None
    for name, value in write.keep_claim.items():
        setattr(queued, name, value)
    return queued


def _apply_to_memory(run: LtmRun, changes: dict[str, Any]) -> None:
    """The run in memory as its compare-and-set left it."""
    for name, value in changes.items():
        setattr(run, name, value)
    run.version += 1


# The most of each kind of row one statement writes (`_apply_in_one_statement`); a write
# with more (a fork's split queues hundreds), or with rows to create or delete, goes
# statement by statement.
_ONE_STATEMENT_MOST = 8


def _fits_one_statement(
    db: Any,
    write: Write,
    new_rows: dict[str, Any],
    changed_rows: dict[str, Any],
    created: list[LtmExecution],
    groups: list[Any],
    specs: list[EventSpec],
) -> bool:
    """Whether `apply` stores `write` in one statement (`_apply_in_one_statement`): on
    PostgreSQL, a write that updates a few instances, queues and closes a few executions
    and adds a few events (an execution's commit, a claim) and creates or deletes no
    instance row."""
    most = _ONE_STATEMENT_MOST
    return (
        db.vendor == "postgresql"
        and not new_rows
        and not write.removed
        and not write.inherit
        and max(len(changed_rows), len(created), len(groups), len(specs)) <= most
    )


def _may_fit_one_statement(write: Write) -> bool:
    """What `_fits_one_statement` can tell of `write` before it is planned: not too many
    of anything, no instance deleted, no appends taken over."""
    most = _ONE_STATEMENT_MOST
    return (
        not write.removed
        and not write.inherit
        and len(write.events) < most  # (with a run's state change, a claim's event)
        and max(len(write.records), len(write.executions), len(write.execution_changes)) <= most
    )


_ONE_STATEMENTS: dict[Any, str] = {}
# What the statement of `_apply_in_one_statement` raises where a check of a write fails
# (`checked`): a text that is no integer, cast as one (from a row of `w`, which no planner
# evaluates ahead of time), so that PostgreSQL aborts the statement, all of it.
_FAILED_CHECKS = {
    "dropped": "flowstudio: executions changed meanwhile",
    "again": "flowstudio: queued execution claimed meanwhile",
}


def _apply_in_one_statement(
    db: Any,
    run: LtmRun,
    run_changes: dict[str, Any],
    changed_rows: dict[str, InstanceRow],
    created: list[LtmExecution],
    groups: list[tuple[dict[str, Any], list[int]]],
    expect: dict[str, Any],
    queued: LtmExecution | None,
    keep_claim: dict[str, Any],
    specs: list[EventSpec],
    state: str,
    at: Any,
    *,
    checked: bool = False,
    claim_required: bool = False,
) -> int | None:
    """`apply`'s statements on PostgreSQL in ONE (data-modifying CTEs): the run's
    compare-and-set (`w`), then, each only if it won (every part selects from `w`), the
    instances' updates, the new executions (their keys set on `created`), the executions'
    changes, the claim of `queued` and the events. Where BEGIN, COMMIT and five to seven
    statements were as many round trips in a row, this is one (with BEGIN and COMMIT inside
    a transaction; alone where it commits by itself, `checked`), and the client's work for
    it about a third of theirs.

    None if the compare-and-set lost (nothing was written); raises Dropped if an
    execution changed is not as `expect` says (the caller's transaction rolls back); else
    how many rows the claim of `queued` updated (0 or 1; 0 if there is none). The events
    are `state`'s, made `at`.

    `checked` (the statement commits by itself: no transaction to roll back): the statement
    checks the executions it changes, and the claim of `queued` if it rides on a claim of
    its state (`Write.keep_record`), and raises if one fails, which aborts all of it; that
    is raised here as Dropped, or as _Again (the write is built again)."""
    key = (
        tuple(run_changes),
        len(changed_rows),
        len(created),
        tuple((tuple(changes), len(ids)) for changes, ids in groups),
        tuple(expect),
        None if queued is None else tuple(keep_claim),
        len(specs),
        checked and bool(expect),
        checked and queued is not None and claim_required,
    )
    sql = _ONE_STATEMENTS.get(key)
    if sql is None:
        sql = _ONE_STATEMENTS[key] = _one_statement_sql(db, key)
    params: list[Any] = []
    run_meta = LtmRun._meta
    for name, value in run_changes.items():
        params.append(db_value(run_meta.get_field(name), value, db))
    params += [run.pk, run.version]
    instance_fields = [LtmInstance._meta.get_field(name) for name in _FIELDS]
    for row in changed_rows.values():
        params += [
            db_value(field, getattr(row, name), db)
            for name, field in zip(_FIELDS, instance_fields, strict=True)
        ]
        params.append(row.id)
    insert_fields = EXECUTIONS._insert_fields()
    for execution in created:
        params += [db_value(field, field.pre_save(execution, True), db) for field in insert_fields]
    execution_meta = LtmExecution._meta
    for changes, ids in groups:
        params += [db_value(execution_meta.get_field(n), v, db) for n, v in changes.items()]
        params += ids
        params += [db_value(execution_meta.get_field(n), v, db) for n, v in expect.items()]
    if queued is not None:
        params += [db_value(execution_meta.get_field(n), v, db) for n, v in keep_claim.items()]
        params += [queued.pk, queued.status, queued.attempts]
    fields = _event_fields()
    for spec in specs:
        params += _event_values(db, fields, run, state, spec, at)
    try:
        with cursor_for(db) as cursor:
            cursor.execute(sql, params)
            answer = cursor.fetchone()
    except DataError as error:
        if _FAILED_CHECKS["dropped"] in str(error):
            raise Dropped(f"executions of LTM run {run.pk} changed meanwhile") from None
        if _FAILED_CHECKS["again"] in str(error):
            raise _Again(f"execution {getattr(queued, 'pk', None)} was claimed meanwhile") from None
        raise
    if answer[0] != 1:
        return None
    counts = answer[1 : 1 + len(groups)]
    for (_, ids), count in zip(groups, counts, strict=True):
        if expect and count != len(ids):
            raise Dropped(f"executions {ids} of LTM run {run.pk} changed meanwhile")
    claimed = int(answer[1 + len(groups)])
    made = answer[2 + len(groups) : 2 + len(groups) + len(created)]
    for execution, pk in zip(created, made, strict=True):
        execution.pk = pk
        execution._state.adding = False
        execution._state.db = db.alias
    return claimed


def _one_statement_sql(db: Any, key: Any) -> str:
    """The statement of `_apply_in_one_statement` for the shape `key`."""
    run_names, rows, created, groups, expect, claim, events, check_groups, check_claim = key
    quote = db.ops.quote_name

    def column(model: Any, name: str) -> str:
        field = model._meta.pk if name == "pk" else model._meta.get_field(name)
        return str(quote(field.column))

    def sets(model: Any, names: Iterable[str]) -> str:
        return ", ".join(f"{column(model, name)} = %s" for name in names)

    def equal(model: Any, names: Iterable[str]) -> str:
        return "".join(f" AND {column(model, name)} = %s" for name in names)

    runs, instances = quote(LtmRun._meta.db_table), quote(LtmInstance._meta.db_table)
    executions, events_table = quote(LtmExecution._meta.db_table), quote(LtmEvent._meta.db_table)
    version, pk = column(LtmRun, "version"), column(LtmRun, "pk")
    won = "EXISTS (SELECT FROM w)"
    parts = [
        f"w AS (UPDATE {runs} SET {sets(LtmRun, run_names)}, {version} = {version} + 1 "
        f"WHERE {pk} = %s AND {version} = %s RETURNING 1)"
    ]
    for index in range(rows):
        parts.append(
            f"r{index} AS (UPDATE {instances} SET {sets(LtmInstance, _FIELDS)} "
            f"WHERE {column(LtmInstance, 'pk')} = %s AND {won})"
        )
    insert_fields = EXECUTIONS._insert_fields()
    insert_columns = ", ".join(quote(field.column) for field in insert_fields)
    marks = ", ".join(["%s"] * len(insert_fields))
    execution_pk = column(LtmExecution, "pk")
    for index in range(created):
        parts.append(
            f"x{index} AS (INSERT INTO {executions} ({insert_columns}) SELECT {marks} FROM w "
            f"RETURNING {execution_pk})"
        )
    for index, (names, count) in enumerate(groups):
        parts.append(
            f"g{index} AS (UPDATE {executions} SET {sets(LtmExecution, names)} "
            f"WHERE {execution_pk} IN ({', '.join(['%s'] * count)})"
            f"{equal(LtmExecution, expect)} AND {won} RETURNING 1)"
        )
    if claim is not None:
        parts.append(
            f"q AS (UPDATE {executions} SET {sets(LtmExecution, claim)} "
            f"WHERE {execution_pk} = %s{equal(LtmExecution, ('status', 'attempts'))} "
            f"AND {won} RETURNING 1)"
        )
    event_columns = ", ".join(quote(field.column) for field in _event_fields())
    event_marks = ", ".join(["%s"] * len(_EVENT_FIELDS))
    for index in range(events):
        parts.append(
            f"e{index} AS (INSERT INTO {events_table} ({event_columns}) "
            f"SELECT {event_marks} FROM w)"
        )
    answers = ["(SELECT count(*) FROM w)"]
    answers += [f"(SELECT count(*) FROM g{index})" for index in range(len(groups))]
    answers.append("(SELECT count(*) FROM q)" if claim is not None else "0")
    answers += [f"(SELECT {execution_pk} FROM x{index})" for index in range(created)]
    checks = []
    if check_groups:
        counts = [
            f"(SELECT count(*) FROM g{index}) <> {count}" for index, (_, count) in enumerate(groups)
        ]
        checks.append(("dropped", " OR ".join(counts)))
    if check_claim:
        checks.append(("again", "(SELECT count(*) FROM q) <> 1"))
    for name, failed in checks:
        answers.append(
            f"CASE WHEN {failed} THEN CAST((SELECT '{_FAILED_CHECKS[name]}'::text FROM w) "
            "AS integer) END"
        )
    return f"WITH {', '.join(parts)} SELECT {', '.join(answers)}"


def _executions_only(write: Write) -> bool:
    """Whether `write` changes executions and nothing else (no instance, event, new
    execution or error)."""
    return not (
        write.records
        or write.removed
        or write.events
        or write.executions
        or write.redispatch
        or write.inherit
        or write.run_error is not None
    )


def _execution_groups(write: Write, end_seq: int) -> list[tuple[dict[str, Any], list[int]]]:
    """`write.execution_changes` as (changes, ids): each closed one at the event `end_seq`,
    executions changed alike (a kill or a rollback closes many) together."""
    alike: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for execution_id, execution_changes in write.execution_changes:
        if execution_changes.get("status") not in (None, *OPEN):
            execution_changes = {**execution_changes, "closed_seq": end_seq}
        key = repr(sorted(execution_changes.items()))
        alike.setdefault(key, (execution_changes, []))[1].append(execution_id)
    return list(alike.values())


def _change_executions(
    db: Any,
    run: LtmRun,
    write: Write,
    end_seq: int,
    groups: list[tuple[dict[str, Any], list[int]]] | None = None,
) -> None:
    """Store `write.execution_changes` (`_execution_groups`, unless given), in one
    statement per group. If one is not as `write.expect` says, the write is dropped."""
    for execution_changes, ids in groups or _execution_groups(write, end_seq):
        changed = EXECUTIONS.update(db, execution_changes, pk=ids, **write.expect)
        if write.expect and changed != len(ids):
            raise Dropped(f"executions {ids} of LTM run {run.pk} changed meanwhile")


def _inherit_appends(heirs: dict[int, tuple[int, int]]) -> None:
    """New execution -> (an earlier one, a seq): the new one takes over the atomic appends
    the earlier one made up to that event (two statements, however many executions)."""
    by_earlier = {earlier: (new, up_to) for new, (earlier, up_to) in heirs.items()}
    done = LtmAppend.objects.filter(execution_id__in=list(by_earlier))
    LtmAppend.objects.bulk_create(
        LtmAppend(
            execution_id=by_earlier[append.execution_id][0],
            fqn=append.fqn,
            call_index=append.call_index,
            target=append.target,
            key=append.key,
            seq=append.seq,
        )
        for append in done
        if append.seq <= by_earlier[append.execution_id][1]
    )


def _checkpoints(snap: Snapshot, first_seq: int, end_seq: int, changed: int = 0) -> bool:
    """Whether `_checkpoint` keeps a snapshot after this write."""
    every = config.checkpoint_every()
    crossed = end_seq // every != first_seq // every
    return crossed or changed >= max(_WIDE_CHANGE, len(snap.rows) // 2)


def _checkpoint(snap: Snapshot, first_seq: int, end_seq: int, changed: int = 0) -> None:
    """A whole snapshot of the run when this write crossed a multiple of the interval, or
    when it changed (or removed) `changed` records, at least max(20, half the run's
    instances): a rollback rewrites the whole run, and replaying many such changes from
    the last checkpoint made `ltm_at` slow after a series of them."""
    if not _checkpoints(snap, first_seq, end_seq, changed):
        return  # (a partial snapshot's few rows: only a crossing checkpoints its write)
    point = history.PointInTime(
        {fqn: row_record(snap.run, row) for fqn, row in snap.complete().items()},
        snap.run.state,
        snap.run.error,
    )
    LtmCheckpoint.objects.create(run=snap.run, seq=end_seq, snapshot=point.snapshot(copy=False))


def _next_state(snap: Snapshot, write: Write) -> str:
    run = snap.run
    if write.run_state is not None:
        return write.run_state
    if run.state == LtmRunState.KILLED:
        return LtmRunState.KILLED
    if write.executions or write.keep_queued is not None:  # (whatever else is open or closes)
        return LtmRunState.PENDING if run.state == LtmRunState.PENDING else LtmRunState.RUNNING
    closing = [pk for pk, changes in write.execution_changes if "status" in changes]
    # More open than this write closes: one stays open, whichever it is.
    open_ids = set(
        EXECUTIONS.pks(db_for(LtmExecution), len(closing) + 1, run=run.pk, status=list(OPEN))
    )
    for execution_id, changes in write.execution_changes:
        if changes.get("status") in OPEN:
            open_ids.add(execution_id)
        elif "status" in changes:
            open_ids.discard(execution_id)
    if open_ids or write.executions:
        return LtmRunState.PENDING if run.state == LtmRunState.PENDING else LtmRunState.RUNNING
    statuses = {fqn: row.status for fqn, row in snap.complete().items()}
    statuses.update((record.fqn, record.status) for record in write.records)
    return LtmRunState.FAILED if "failed" in statuses.values() else LtmRunState.COMPLETE


_FIELDS = ("name", "declared_name", "status", "state", "params", "error", "entry")


def _rows_to_write(
    snap: Snapshot, records: Iterable[InstanceRecord]
) -> tuple[dict[str, LtmInstance], dict[str, InstanceRow]]:
    """The rows of `records` to create (new instances, unsaved) and to update (each a new
    InstanceRow with the record's values: the one read may be shared with other snapshots,
    see CommittedRuns), by fqn. A record as it is stored already is neither."""
    new: dict[str, LtmInstance] = {}
    changed: dict[str, InstanceRow] = {}
    for record in records:
        values = {
            "name": record.name,
            "declared_name": record.declared_name,
            "status": record.status,
            "state": record.state if "." in record.fqn else {},  # the root's: global state
            "params": record.params,
            "error": record.error or "",
            "entry": record.entry,
        }
        row = snap.rows.get(record.fqn)
        if row is None:
            new[record.fqn] = LtmInstance(run=snap.run, fqn=record.fqn, **values)
        elif not all(_same(getattr(row, name), value) for name, value in values.items()):
            changed[record.fqn] = InstanceRow((row.id, record.fqn, *values.values()))
    return new, changed


def _write_records(snap: Snapshot, records: Iterable[InstanceRecord]) -> None:
    """Create and update the rows of `records` that are not stored as they are."""
    _store_rows(snap, *_rows_to_write(snap, records))


def _store_rows(
    snap: Snapshot, new: dict[str, LtmInstance], changed: dict[str, InstanceRow]
) -> None:
    """Create the rows of new instances and update the changed ones (`_rows_to_write`), and
    hold them in `snap`. The updates are one `executemany` statement of plain SQL: Django's
    `bulk_update` builds a CASE expression per field in Python, which cost a 205-instance
    rollback about 300 ms on SQLite."""
    snap.rows.update(changed)
    for row in LtmInstance.objects.bulk_create(new.values()):
        snap.rows[row.fqn] = as_row(row)
    if changed:
        _update_rows(list(changed.values()))


def _update_rows(rows: list[Any]) -> None:
    """`UPDATE ... SET <every field> WHERE id = ?`, once per row, in one executemany."""
    db = connections[router.db_for_write(LtmInstance)]
    quote = db.ops.quote_name
    meta = LtmInstance._meta
    fields = [cast("Field[Any, Any]", meta.get_field(name)) for name in (*_FIELDS, "id")]
    columns = [quote(field.column) for field in fields]
    sets = ", ".join(f"{column} = %s" for column in columns[:-1])
    update = f"UPDATE {quote(meta.db_table)} SET {sets} WHERE {columns[-1]} = %s"
    params = [
        [db_value(field, getattr(row, field.attname), db) for field in fields] for row in rows
    ]
    with cursor_for(db) as cursor:
        cursor.executemany(update, params)


def _same(stored: Any, value: Any) -> bool:
    """Whether `value` would store as `stored` is: equal, with the same types and key
    order all the way down (`1 == True == 1.0`, yet each is stored as written). Compared as
    `marshal`'s bytes (format 0: no shared references, no interning, which would tell apart
    equal values), at C speed: a join's list of hundreds was walked here at every arrival.
    A value `marshal` does not take is walked."""
    try:
        return marshal.dumps(stored, 0) == marshal.dumps(value, 0)
    except ValueError:
        return _same_walk(stored, value)


def _same_walk(stored: Any, value: Any) -> bool:
    if type(stored) is not type(value):
        return False
    if isinstance(value, dict):
        return list(stored) == list(value) and all(
            _same_walk(stored[key], item) for key, item in value.items()
        )
    if isinstance(value, list):
        return len(stored) == len(value) and all(map(_same_walk, stored, value))
    return bool(stored == value)


def write_append(
    db: Any,
    run: LtmRun,
    done: LtmAppend,
    claimed: dict[str, Any],
    row: Any,
    state: dict[str, Any],
    key: str,
    value: Any,
) -> bool:
    """Store an atomic append to a run whose row this transaction has locked, its version
    and its `seq` advanced by this transaction already: the append's row `done` (unless a
    row of it is there already, or its execution is no longer as `claimed` says: then
    nothing, and False), the state of `done.target` with the list `key` grown by `value`
    (`state`, as it is now: the instance `row`'s, or the run's global state if `row` is
    None) and its `state.appended` event. On PostgreSQL in one statement (data-modifying
    CTEs, the state and the event written only if the row `done` was), where they were
    three round trips. (The caller checkpoints the run: `checkpoint_appended`.)"""
    if db.vendor != "postgresql":
        if not APPENDS.insert_new(db, done, if_exists=(EXECUTIONS, claimed)):
            return False
        if row is None:
            RUNS.update(db, {"global_state": state}, pk=run.pk)
            run.global_state = state
        else:
            INSTANCES.update(db, {"state": state}, pk=row.id)
        _insert_events(db, run, run.state, [_appended_event(run, done.target, key, value, state)])
        return True
    append_sql, params = APPENDS.insert_new_sql(db, done, (EXECUTIONS, claimed))
    quote = db.ops.quote_name
    table: Any = LtmRun._meta if row is None else LtmInstance._meta
    column = table.get_field("global_state" if row is None else "state")
    params += [db_value(column, state, db), run.pk if row is None else row.id]
    event = _appended_event(run, done.target, key, value, state)
    fields, at = _event_fields(), timezone.now()
    params += _event_values(db, fields, run, run.state, event, at)
    sql = (
        f"WITH a AS ({append_sql}), "
        f"s AS (UPDATE {quote(table.db_table)} SET {quote(column.column)} = %s "
        f"WHERE {quote(table.pk.column)} = %s AND EXISTS (SELECT FROM a)), "
        f"e AS (INSERT INTO {quote(LtmEvent._meta.db_table)} "
        f"({', '.join(quote(field.column) for field in fields)}) "
        f"SELECT {', '.join(['%s'] * len(fields))} FROM a) "
        "SELECT count(*) FROM a"
    )
    with cursor_for(db) as cursor:
        cursor.execute(sql, params)
        if cursor.fetchone()[0] != 1:
            return False
    if row is None:
        run.global_state = state
    _publish_events(run, run.state, [event], at)
    return True


_APPEND_AT_ONCE: dict[tuple[str, bool], str] = {}
_NOT_APPENDED = "flowstudio: not appended"


def append_at_once(
    execution: LtmExecution, target: str, key: str, value: Any, index: int
) -> tuple[list[Any], LtmRun] | None:
    """An atomic append (`engine.ltm.executor.append`) in ONE statement, outside any
    transaction, where this process holds the run as last committed (`committed.latest`):
    the run's compare-and-set at that version (its version and `seq` bumped, as the append's
    transaction bumps them), the append's row if its execution is still claimed, the grown
    list and the `state.appended` event. If the run changed meanwhile, or the append was
    made before (a re-run), or the execution was handed on, nothing is written (the
    statement aborts, all of it) and None is returned: the caller appends in a transaction,
    which tells which. None too where the append would fail (a killed run, no such list)
    or the event keeps a checkpoint: the caller's way raises, or keeps it, as it does.

    Returns the list as grown, and the run as the append left it."""
    db = db_for(LtmRun)
    held = committed.latest(execution.run_id)
    if held is None or held.run is None or held.run.state == LtmRunState.KILLED:
        return None
    row = held.rows.get(target)
    root = "." not in target
    if row is None:
        return None
    state = dict(held.run.global_state if root else row.state)
    if not isinstance(state.get(key), list):
        return None
    if (held.run.seq + 1) % config.checkpoint_every() == 0:
        return None
    run = copy(held.run)
    run.version, run.seq, run.updated = held.version + 1, run.seq + 1, write_time()
    state[key] = [*state[key], value]
    done = append_row(execution, target, key, index, run.seq)
    event = _appended_event(run, target, key, value, state)
    at = timezone.now()
    sql = _APPEND_AT_ONCE.get((db.vendor, root))
    if sql is None:
        sql = _APPEND_AT_ONCE[db.vendor, root] = _append_at_once_sql(db, root)
    meta = LtmRun._meta
    params = [db_value(meta.get_field("updated"), run.updated, db)]
    if root:
        params.append(db_value(meta.get_field("global_state"), state, db))
    params += [run.pk, held.version]
    params += [
        db_value(field, field.pre_save(done, True), db) for field in APPENDS._insert_fields()
    ]
    params += [execution.pk, ExecutionStatus.CLAIMED]
    if not root:
        params += [db_value(LtmInstance._meta.get_field("state"), state, db), row.id]
    params += _event_values(db, _event_fields(), run, run.state, event, at)
    try:
        with cursor_for(db) as cursor:
            cursor.execute(sql, params)
            won = cursor.fetchone()[0] == 1
    except DataError as error:
        if _NOT_APPENDED in str(error):
            return None
        raise
    if not won:
        return None
    if root:
        run.global_state = state
        new_row = row
    else:
        new_row = with_state(row, state)
    tree = None
    if held.tree is not None:
        tree = held.tree.with_records([row_record(run, new_row)])
    committed.after_commit(run, {**held.rows, target: new_row}, tree)
    _publish_events(run, run.state, [event], at)
    return list(state[key]), run


def append_row(execution: LtmExecution, target: str, key: str, index: int, seq: int) -> LtmAppend:
    """The row of `execution`'s append call `index` to the list `key` of `target`, its
    `state.appended` event at `seq` (a re-run repeating the call finds it made)."""
    return LtmAppend(
        execution=execution,
        fqn=execution.fqn,
        call_index=index,
        target=target,
        key=key,
        seq=seq,
    )


def _append_at_once_sql(db: Any, root: bool) -> str:
    """The statement of `append_at_once`: to the run's global state (`root`) or to an
    instance's."""
    quote = db.ops.quote_name
    run, version = LtmRun._meta, quote(LtmRun._meta.get_field("version").column)
    seq = quote(run.get_field("seq").column)
    sets = [f"{quote(run.get_field('updated').column)} = %s"]
    if root:
        sets.append(f"{quote(run.get_field('global_state').column)} = %s")
    fields = APPENDS._insert_fields()
    execution = LtmExecution._meta
    instance = LtmInstance._meta
    parts = [
        f"w AS (UPDATE {quote(run.db_table)} SET {', '.join(sets)}, {version} = {version} + 1, "
        f"{seq} = {seq} + 1 WHERE {quote(run.pk.column)} = %s AND {version} = %s RETURNING 1)",
        f"a AS (INSERT INTO {quote(LtmAppend._meta.db_table)} "
        f"({', '.join(quote(field.column) for field in fields)}) "
        f"SELECT {', '.join(['%s'] * len(fields))} FROM w WHERE EXISTS (SELECT 1 FROM "
        f"{quote(execution.db_table)} WHERE {quote(execution.pk.column)} = %s AND "
        f"{quote(execution.get_field('status').column)} = %s) ON CONFLICT DO NOTHING "
        f"RETURNING {quote(LtmAppend._meta.pk.column)})",
    ]
    if not root:
        parts.append(
            f"s AS (UPDATE {quote(instance.db_table)} SET "
            f"{quote(instance.get_field('state').column)} = %s "
            f"WHERE {quote(instance.pk.column)} = %s AND EXISTS (SELECT FROM a))"
        )
    event_fields = _event_fields()
    parts.append(
        f"e AS (INSERT INTO {quote(LtmEvent._meta.db_table)} "
        f"({', '.join(quote(field.column) for field in event_fields)}) "
        f"SELECT {', '.join(['%s'] * len(event_fields))} FROM a)"
    )
    return (
        f"WITH {', '.join(parts)} SELECT (SELECT count(*) FROM w), CASE WHEN EXISTS "
        f"(SELECT FROM w) AND NOT EXISTS (SELECT FROM a) THEN CAST((SELECT "
        f"'{_NOT_APPENDED}'::text FROM w) AS integer) END"
    )


def _appended_event(
    run: LtmRun, fqn: str, key: str, value: Any, state: dict[str, Any]
) -> EventSpec:
    """The `state.appended` event of an append (`write_append`): it takes `run.seq`, and says
    `value` was added to the list `key` of `fqn`'s `state` (as it is now). Its change holds
    the value alone, not the list (`history.append_change`)."""
    data = {"key": key, "value": value, "length": len(state[key])}
    change = history.append_change(fqn, key, value, state=run.state, error=run.error)
    return (run.seq, "state.appended", fqn, None, data, change)


def checkpoint_appended(run: LtmRun, rows: dict[str, Any] | None = None) -> None:
    """After an append (`write_append`), in its transaction: a whole snapshot of the run if
    the append's event is at a multiple of the interval. `rows`: the run's instance rows as
    the append left them, if this process holds them (else they are read)."""
    if run.seq % config.checkpoint_every() == 0:
        if rows is None:
            rows = _rows(LtmInstance.objects.filter(run=run))
        _checkpoint(Snapshot(run, rows), run.seq - 1, run.seq)


# An event row's columns, in the order `_event_values` gives them (the key is the database's).
_EVENT_FIELDS = ("run", "seq", "kind", "fqn", "actor", "state", "data", "change", "created")
# What `db_value` sends as it is (ids, seq, kind, fqn, state): other values go through it.
_PLAIN = frozenset({int, str, type(None)})
_EVENT_INSERTS: dict[tuple[str, int], str] = {}

# (seq, kind, fqn, actor, data, change): an event row of a write.
EventSpec = tuple[int, str, str, Any, dict[str, Any], Any]


def _event_fields() -> list[Any]:
    return [cast("Field[Any, Any]", LtmEvent._meta.get_field(name)) for name in _EVENT_FIELDS]


def _insert_events(db: Any, run: LtmRun, state: str, specs: list[EventSpec]) -> None:
    """Insert a write's event rows, in one statement, and publish them once it commits:
    `LtmEvent`'s columns without building the model (its `__init__` and the field by field
    conversions cost more than the insert)."""
    if not specs:
        return
    fields = _event_fields()
    key = (db.vendor, len(specs))
    sql = _EVENT_INSERTS.get(key)
    if sql is None:
        quote = db.ops.quote_name
        columns = ", ".join(quote(field.column) for field in fields)
        row = f"({', '.join(['%s'] * len(fields))})"
        sql = _EVENT_INSERTS[key] = (
            f"INSERT INTO {quote(LtmEvent._meta.db_table)} ({columns}) "
            f"VALUES {', '.join([row] * len(specs))}"
        )
    created = timezone.now()
    params = [
        value for spec in specs for value in _event_values(db, fields, run, state, spec, created)
    ]
    with cursor_for(db) as cursor:
        cursor.execute(sql, params)
    _publish_events(run, state, specs, created)


def _publish_events(run: LtmRun, state: str, specs: list[EventSpec], created: Any) -> None:
    """Publish a write's events once it commits (`run` as the write left it)."""
    engine_events.publish_on_commit(
        {
            "run": str(run.pk),
            "fqn": fqn,
            "seq": seq,
            "kind": kind,
            "actor": None if actor is None else actor.pk,
            "state": state,
            "data": data,
            "created": created.isoformat(),
            "type": LtmEvent.feed_type,
            "owner": run.owner_id,
            "version": run.version,
            "name": run.name,
        }
        for seq, kind, fqn, actor, data, _ in specs
    )


def _event_values(
    db: Any, fields: list[Any], run: LtmRun, state: str, spec: EventSpec, created: Any
) -> list[Any]:
    """One event row's values in the order of `_EVENT_FIELDS`, as `db_value` sends them:
    its integers, texts and nulls as they are (a text choice too: a str), the rest (the
    run's key, its data and change, its time) through `db_value`."""
    seq, kind, fqn, actor, data, change = spec
    values = [run.pk, seq, kind, fqn, None if actor is None else actor.pk, state]
    for index, value in enumerate(values):
        if type(value) not in _PLAIN and not isinstance(value, str):
            values[index] = db_value(fields[index], value, db)
    values += (db_value(fields[6], data, db), db_value(fields[7], change, db))
    values.append(db_value(fields[8], created, db))
    return values


def check_json(write: Write, snap: Snapshot | None = None) -> None:
    """Raise ValueError naming the part of `write` that no database would store alike (see
    `engine.jsonsafe.ensure_json`). With the snapshot it is written over, a record's state
    or params stored as they are already (`_same`) are not checked again (a join's list,
    checked once, was walked again at every arrival)."""
    depth = STORED_DEPTH
    for record in write.records:
        row = None if snap is None else snap.rows.get(record.fqn)
        stored = None if snap is None or row is None else row_record(snap.run, row)
        if stored is None or not _same(stored.state, record.state):
            ensure_json(record.state, f"the state of {record.fqn}", max_depth=depth)
        if stored is None or not _same(stored.params, record.params):
            ensure_json(record.params, f"the params of {record.fqn}", max_depth=depth)
    for fqn, payload in write.executions:
        ensure_json(payload, f"the payload queued for {fqn}", max_depth=depth)
    for event in write.events:
        what = f"the {event['kind']} event of {event.get('fqn')}"
        ensure_json(event.get("data", {}), what, max_depth=depth)


# -- dispatch ------------------------------------------------------------------------------

_local = threading.local()


def dispatch(execution_ids: Iterable[int]) -> None:
    """Send executions to the queue (engine.dispatch). In immediate mode they run inline,
    one after the other in FIFO order from one loop (not nested inside each other's commit:
    a long chain of states would otherwise exhaust the stack)."""
    ids = list(execution_ids)
    if not queue.immediate():
        for execution_id in ids:
            queue.execute_ltm(execution_id)
        return
    pending: deque[int] | None = getattr(_local, "pending", None)
    if pending is not None:
        pending.extend(ids)
        return
    _local.pending = pending = deque(ids)
    try:
        while pending:
            queue.execute_ltm(pending.popleft())
    finally:
        _local.pending = None
