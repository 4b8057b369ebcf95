"""Executing LTM runs on Huey: the Django runtime of the pure core.

One execution (an `LtmExecution` row of the outbox) goes: claim it (queued -> claimed with a
lease; its instance becomes 'active', an event says so) -> build a fresh tree from the
committed records -> `execute` the state's `run()` with NO transaction open -> in ONE
transaction: plan against the tree stored by then, write the changed instances, the global
state, the new executions and the events, mark this execution done -> after the commit,
dispatch the new executions, but the first: the worker goes on with that one, claimed by
the same commit (`execute_execution`). A worker that dies leaves a claimed row whose lease
runs out; `sweep_ltm` hands it on, and re-sends queued rows whose task got lost.
"""

from __future__ import annotations

import logging
import traceback
from copy import copy
from dataclasses import replace
from typing import Any

from django.db import transaction
from django.utils import timezone

from engine import config, dispatch
from engine.core.errors import FlowStateError
from engine.core.ltm.node import LTM
from engine.core.ltm.planner import plan, plan_start
from engine.core.ltm.records import Effects
from engine.core.ltm.runtime import Runtime
from engine.jsonsafe import ensure_json, storable_text
from engine.leases import Held, lease_until
from engine.liveness import worker_id
from engine.ltm import store
from engine.ltm.models import (
    ExecutionStatus,
    LtmExecution,
    LtmInstance,
    LtmRun,
    LtmRunState,
    LtmStatus,
)

logger = logging.getLogger(__name__)


class DjangoRuntime(Runtime):
    """Stores runs in the database and executes them on Huey. One bound to an execution
    (`execution`) serves the `atomic_state_append` calls of that execution's run()."""

    def __init__(self, *, owner: Any = None, execution: LtmExecution | None = None) -> None:
        self.owner = owner
        self.execution = execution
        # The run as this execution's last append left it (its version bumped): the
        # execution's commit starts from it, not from the snapshot its append outdated.
        self.appended: LtmRun | None = None

    def start(self, root: LTM, payload: dict[str, Any]) -> str:
        run_id = create_run(root, payload, owner=self.owner)
        snap = store.read(run_id)  # in immediate mode everything has run by now
        root.apply_records(snap.records())  # the root's record holds the global state
        return run_id

    def atomic_state_append(
        self, instance: LTM, key: str, value: Any, call_index: int
    ) -> list[Any]:
        if self.execution is None or instance.id is None:
            raise RuntimeError("atomic_state_append() works inside run() of an executing state")
        values, run = append(self.execution, instance.fqn, key, value, call_index, self.owner)
        if run is not None:
            self.appended = run
        return values


def create_run(root: LTM, payload: dict[str, Any], *, owner: Any = None) -> str:
    """Store a new run of the unstarted tree `root` and queue its root's execution."""
    from engine.core.ltm.registry import register

    register(type(root))  # workers find the class by name (a clash raises InvalidDefinition)
    ensure_json(payload, "payload")
    initial = dict(root.state)
    ensure_json(initial, "the initial state", max_depth=store.STORED_DEPTH)
    result = plan_start(type(root), root.records(), payload)
    created = {"kind": "run.created", "fqn": root.fqn, "actor": owner, "data": {}}
    write = store.Write(result.records_changed, result.executions, [created, *result.events])
    with transaction.atomic():
        run = LtmRun.objects.create(name=type(root).name, owner=owner, global_state=initial)
        store.apply(store.Snapshot(run, {}), write)
    return str(run.pk)


def append(
    execution: LtmExecution, target: str, key: str, value: Any, index: int, owner: Any = None
) -> tuple[list[Any], LtmRun | None]:
    """Append to the stored list `key` of `target` at once; a re-run of `execution`
    repeating call `index` finds it done and appends nothing. Bumps the run's version, so a
    planner that read the list before writes nothing over it. Returns the list, and the run
    as the append left it (None if it appended nothing), its `owner` the one given (as the
    execution read it) if it is the run's."""
    ensure_json(value, "an appended value", max_depth=store.STORED_DEPTH)
    db = store.db_for(LtmRun)
    try:
        with store.run_locks.hold(execution.run_id):
            if store.at_once_here():  # (PostgreSQL: one statement, if this process can)
                appended = store.append_at_once(execution, target, key, value, index)
                if appended is not None:
                    return appended
            return _append(db, execution, target, key, value, index, owner)
    except _DoneBefore as done:
        return done.values, None  # done before this execution was re-run (rolled back)


class _DoneBefore(Exception):
    def __init__(self, values: list[Any]) -> None:
        self.values = values


@transaction.atomic
def _append(
    db: Any, execution: LtmExecution, target: str, key: str, value: Any, index: int, owner: Any
) -> tuple[list[Any], LtmRun]:
    # Takes the run's row lock (PostgreSQL; SQLite's IMMEDIATE transaction holds its
    # write lock already), ordering this append with every other write of the run, and
    # numbers the state.appended event written below (`seq`).
    changes = {"updated": store.write_time()}
    run = store.RUNS.update_returning(db, changes, bump=["version", "seq"], pk=execution.run_id)
    if run is None:
        raise LtmRun.DoesNotExist(f"no LTM run {execution.run_id}")
    if (owner.pk if owner is not None else None) == run.owner_id:  # (else read when asked)
        LtmRun.owner.field.set_cached_value(run, owner)
    if run.state == LtmRunState.KILLED:
        raise FlowStateError(f"LTM run {run.pk} was killed")
    # (Whether this execution is still the claim is asked by the insert of the append's row
    # below, in the same statement; a statement begun after the run's row was locked above
    # sees every write of the run committed before.)
    # The rows as this process committed them at the version before the bump, if it did:
    # they are the stored ones (every write of a run's rows bumps its version), and a join's
    # list need not be read and decoded again at each arrival.
    held = store.committed.get(run.pk, run.version - 1)
    row = None
    if "." in target:
        row = held.rows.get(target) if held is not None else None
        row = row or store.INSTANCES.first(db, run=run.pk, fqn=target)
        if row is None:
            _still_claimed(db, execution)
            raise LtmInstance.DoesNotExist(f"no instance {target} in LTM run {run.pk}")
    state = dict(run.global_state if row is None else row.state)  # (a held row is shared)
    if key not in state:
        _still_claimed(db, execution)
        raise KeyError(f"{target}: state {key!r} must be set to a list first")
    if not isinstance(state[key], list):
        _still_claimed(db, execution)
        raise TypeError(f"{target}: state {key!r} is {state[key]!r}, not a list")
    done = store.append_row(execution, target, key, index, run.seq)  # (its event's seq)
    claimed = {"pk": execution.pk, "status": ExecutionStatus.CLAIMED}
    before = state[key]
    state[key] = [*before, value]
    if not store.write_append(db, run, done, claimed, row, state, key, value):
        _still_claimed(db, execution)
        raise _DoneBefore(list(before))
    if row is None:
        run.global_state = state
        row = (held.rows.get(target) if held is not None else None) or store.INSTANCES.first(
            db, run=run.pk, fqn=target
        )  # (the root's row holds no state: its list is the run's)
    else:
        row = store.with_state(row, state)
    rows = None
    if held is not None:
        record = store.row_record(run, row)
        tree = None if held.tree is None else held.tree.with_records([record])
        rows = {**held.rows, row.fqn: store.as_row(row)}
        store.committed.after_commit(run, rows, tree)
    store.checkpoint_appended(run, rows)
    return list(state[key]), run


def _still_claimed(db: Any, execution: LtmExecution) -> None:
    """Raise FlowStateError if `execution` is no longer the claim that runs it."""
    status = store.EXECUTIONS.value(db, "status", pk=execution.pk)
    if status != ExecutionStatus.CLAIMED:  # rolled back or
        raise FlowStateError(f"this execution of {execution.fqn} was discarded")  # handed on


# -- one execution ---------------------------------------------------------------------------

executions = Held()  # executions this process is running: their leases are renewed


def _lease() -> Any:
    return lease_until()


def execute_execution(execution_id: int) -> None:
    """Body of the Huey task: claim, execute, commit (see the module's docstring). Then the
    worker goes on with the first execution that commit queued, without sending it through
    the queue and back (in immediate mode: sent, run in order), up to `LTM_IN_A_ROW` in all
    (`config.ltm_in_a_row()`: then it hands the next one to the queue, so a run that loops for
    ever holds a worker no longer than that). That
    commit claims it for this worker (`_keep_first`): it needs no claim of its own. A worker
    that dies between two leaves the next one claimed: its lease runs out (or its heartbeat
    stops) and it is queued again, as any other claimed execution."""
    # (One read of the row: its status, and all the rest in the same round trip. Few tasks
    # find it no longer queued, so reading only its status first cost a statement more.)
    queued = _execution(execution_id)
    if queued is None or queued.status != ExecutionStatus.QUEUED:
        return  # claimed by another worker (or taken by a commit before it), or over
    keep = not dispatch.immediate()
    in_a_row = config.ltm_in_a_row()
    ahead: tuple[LtmExecution, store.Write | None] | None = (queued, None)
    turn = 1
    while ahead is not None:
        execution, before = ahead
        turn += 1
        ahead = _execute(execution, before, keep=keep and turn <= in_a_row)


def _execute(
    execution: LtmExecution, before: store.Write | None, *, keep: bool
) -> tuple[LtmExecution, store.Write] | None:
    """Claim `execution` (as read: the claim holds only if it still is), unless claimed
    already by the commit `before`; execute it; commit. Returns the execution that commit
    kept for this worker (`keep`), with the commit."""
    if execution.status == ExecutionStatus.QUEUED:
        # The claim looks at its own instance only (a run may have hundreds), and holds only
        # if the execution is still as read (`expect`: its update says so).
        claimed = store.commit(
            execution.run_id, lambda snap: _claim(snap, execution), only=[execution.fqn]
        )
        if claimed is None or claimed.outcome is None:
            return None
        execution, before = claimed.outcome, claimed
    with executions.hold(execution.pk):
        # The run as the claim left it (a write committed since shows at the commit).
        snap = (before is not None and store.after(before)) or store.read(execution.run_id)
        runtime = DjangoRuntime(owner=snap.run.owner, execution=execution)
        try:
            tree = snap.tree(runtime=runtime)
            effects = tree.find(execution.fqn).execute(execution.payload)
        except Exception:  # the stored tree does not fit its class any more
            effects = Effects(error=traceback.format_exc())
        if effects.error:
            effects = replace(effects, error=storable_text(effects.error))
        # The snapshot run() saw serves the commit (or, after an append, the run as the
        # append left it): its compare-and-set on the run's version tells whether nobody
        # wrote the run meanwhile (else it reads it again).
        if runtime.appended is not None:
            snap = store.held_snapshot(runtime.appended) or snap
        done = store.commit(
            execution.run_id, lambda now: _finish(now, execution, effects, keep), known=snap
        )
    if done is None or done.kept is None:
        return None
    return done.kept, done


def _execution(execution_id: int) -> LtmExecution | None:
    return store.EXECUTIONS.first(store.db_for(LtmExecution), pk=execution_id)


def _claim(snap: store.Snapshot, queued: LtmExecution) -> store.Write:
    """Claim `queued` (as read before the transaction: the write holds only if it still is),
    or mark it stale, or failed when its class is gone."""
    execution = copy(queued)  # (a retry starts from the row as read)
    write = _claim_write(snap, execution)
    write.expect = {"status": ExecutionStatus.QUEUED, "attempts": queued.attempts}
    return write


def _claim_write(snap: store.Snapshot, execution: LtmExecution) -> store.Write:
    now = timezone.now()
    stale = {"status": ExecutionStatus.STALE, "finished": now, "lease_until": None}
    row = snap.rows.get(execution.fqn)
    if (
        snap.run.state == LtmRunState.KILLED
        or row is None
        or row.entry != execution.entry  # queued for an earlier visit of its state
        or row.status not in (LtmStatus.QUEUED, LtmStatus.ACTIVE)  # active: a join, a re-run
    ):
        return store.Write(execution_changes=[(execution.pk, stale)])
    try:
        store.root_class(snap.run.name)
    except LookupError as exc:
        return _fail_without_class(snap, execution, str(exc))
    claim = {
        "status": ExecutionStatus.CLAIMED,
        "attempts": execution.attempts + 1,
        "lease_until": _lease(),
        "worker": worker_id(),
    }
    execution.status, execution.attempts = claim["status"], claim["attempts"]
    records, events = [], []
    if row.status != LtmStatus.ACTIVE:  # (an active one, a join's next arrival: unchanged)
        record = store.row_record(snap.run, row)  # only this one: a run may have many
        records.append(replace(record, status=LtmStatus.ACTIVE))
        data = {"from": row.status, "to": LtmStatus.ACTIVE}
        events.append({"kind": "status", "fqn": execution.fqn, "data": data})
    return store.Write(
        records=records,
        events=events,
        execution_changes=[(execution.pk, claim)],
        run_state=LtmRunState.RUNNING,
        outcome=execution,
        executions_only=not records,  # (a join's next arrival: its execution claimed only)
    )


def _fail_without_class(snap: store.Snapshot, execution: LtmExecution, error: str) -> store.Write:
    record = store.row_record(snap.run, snap.rows[execution.fqn])
    failed = {"status": ExecutionStatus.FAILED, "finished": timezone.now()}
    status = {"from": record.status, "to": LtmStatus.FAILED}
    return store.Write(
        records=[replace(record, status=LtmStatus.FAILED, error=error)],
        events=[
            {"kind": "status", "fqn": execution.fqn, "data": status},
            {"kind": "error", "fqn": execution.fqn, "data": {"error": error}},
        ],
        execution_changes=[(execution.pk, failed)],
        run_error=f"{execution.fqn}: {error}",
    )


def _finish(
    snap: store.Snapshot, execution: LtmExecution, effects: Effects, keep: bool = False
) -> store.Write:
    """The commit of an execution; it holds only while the execution is still this claim
    (`expect`: killed, or handed to another worker meanwhile, it is dropped). `keep`: the
    first execution it queues is kept for this worker (`store.Write.keep`)."""
    write = _finish_write(snap, execution, effects)
    write.expect = {"status": ExecutionStatus.CLAIMED, "attempts": execution.attempts}
    if keep:
        _keep_first(snap, write)
    return write


def _keep_first(snap: store.Snapshot, write: store.Write) -> None:
    """Have `write` keep the first execution it queues for this worker, claimed: the claim
    that execution's own write would make (its state queued -> active, the event; nothing
    for a state active already, a join's next arrival) rides on this one, its change kept
    apart in the history (`store.Write.keep_record`)."""
    if snap.run.state == LtmRunState.KILLED:
        return
    if not write.executions:
        if write.run_error is None:
            _keep_queued(snap, write)
        return
    fqn = write.executions[0][0]
    planned = next((record for record in write.records if record.fqn == fqn), None)
    record = planned or store.row_record(snap.run, snap.rows[fqn])
    _keep(write, record, attempts=0)


def _keep_queued(snap: store.Snapshot, write: store.Write) -> None:
    """Have `write`, which queues nothing, claim for this worker an execution of the run
    queued before, to run next: the newest (the queue hands out the oldest first, so the
    other workers rarely want the same one). Its claim rides on `write` as `_keep_first`'s
    does; a fork's branches run one after the other on a worker without a claim of their
    own each, while other workers take them from the queue."""
    if snap.partial or write.removed:
        return
    db = store.db_for(LtmExecution)
    queued = store.EXECUTIONS.first(db, last=True, run=snap.run.pk, status=ExecutionStatus.QUEUED)
    if queued is None or queued.fqn not in snap.rows:
        return
    planned = next((record for record in write.records if record.fqn == queued.fqn), None)
    record = planned or store.row_record(snap.run, snap.rows[queued.fqn])
    if record.entry != queued.entry:
        return  # (queued for an earlier visit: its own task marks it stale)
    if _keep(write, record, attempts=queued.attempts):
        write.keep_queued = queued


def _keep(write: store.Write, record: Any, *, attempts: int) -> bool:
    """Set `write` to claim the execution of `record`'s state for this worker (its
    `attempts` so far); False if that state is neither queued nor active."""
    if record.status == LtmStatus.QUEUED:
        # (Plain text, as the planner writes it: stored alike, and compared alike next time.)
        write.keep_record = replace(record, status=LtmStatus.ACTIVE.value)
        data = {"from": LtmStatus.QUEUED.value, "to": LtmStatus.ACTIVE.value}
        write.keep_event = {"kind": "status", "fqn": record.fqn, "data": data}
    elif record.status != LtmStatus.ACTIVE:
        return False
    write.keep = True
    write.keep_claim = {
        "status": ExecutionStatus.CLAIMED,
        "attempts": attempts + 1,
        "lease_until": _lease(),
        "worker": worker_id(),
    }
    return True


def _finish_write(snap: store.Snapshot, execution: LtmExecution, effects: Effects) -> store.Write:
    now = timezone.now()
    row = snap.rows.get(execution.fqn)
    if row is None or row.entry != execution.entry:
        stale = {"status": ExecutionStatus.STALE, "finished": now, "lease_until": None}
        data = {"reason": "the state began a new visit while this execution ran"}
        discarded = {"kind": "execution.discarded", "fqn": execution.fqn, "data": data}
        return store.Write(events=[discarded], execution_changes=[(execution.pk, stale)])
    machine = store.root_class(snap.run.name)
    result = plan(machine, snap.record_tree(), execution.fqn, effects)
    write = store.Write(result.records_changed, result.executions, result.events)
    try:
        store.check_json(write, snap)
    except ValueError as exc:
        effects = Effects(error=f"{type(exc).__name__}: {exc}")
        result = plan(machine, snap.record_tree(), execution.fqn, effects)
        write = store.Write(result.records_changed, result.executions, result.events)
    status = ExecutionStatus.FAILED if effects.error else ExecutionStatus.DONE
    write.execution_changes = [(execution.pk, {"status": status, "finished": now})]
    if effects.error:
        last = effects.error.strip().splitlines()[-1]
        write.run_error = f"{execution.fqn} failed: {last}"
    return write
