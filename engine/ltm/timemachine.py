"""The time machine of LTM runs (re-exported by `engine.api`): see a run as it was after any
event, roll it back to that point, or copy it from there into a new run.

A run's history is its event rows: the last event of every write carries the change that
write made (`LtmEvent.change`), and every `checkpoint_every()` events a whole snapshot is
kept (`LtmCheckpoint`). The run after event n is the nearest snapshot at or before the write
that holds n, with the changes after it replayed (`engine.core.ltm.history.replay`): at most
`checkpoint_every()` small rows, whatever the run's length. The executions that were queued
or running then are the outbox rows whose `queued_seq`/`closed_seq` bracket that write.

Nothing is erased: a rollback is a write of its own (an event naming the user and the
reason, whose change is the whole run as it was), so it can be rolled back in turn. A copy
is a new run whose first write is that point.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from engine.core.errors import FlowStateError, StaleFlowError
from engine.core.ltm.history import PointInTime, replay
from engine.core.ltm.view import RunView
from engine.jsonsafe import check_text
from engine.ltm import service, store
from engine.ltm.models import LtmCheckpoint, LtmEvent, LtmExecution, LtmRun
from engine.ltm.status import OPEN, ExecutionStatus, LtmRunState, LtmStatus

__all__ = ["Moment", "copy_ltm", "ltm_at", "rollback_ltm"]


class HistoryRangeError(ValueError):
    """A `seq` outside the events the run has kept; the message names the range."""


@dataclass
class Moment:
    """A run as committed right after one of its writes: `seq` asked for, `at` the last
    event of the write that holds it, the records and the run's state and error then, and
    the executions open then (`(execution id, fqn, payload, entry)`)."""

    run: LtmRun
    seq: int
    at: int
    point: PointInTime
    open: list[tuple[int, str, dict[str, Any], int]] = field(default_factory=list)


def _get_run(run_id: Any, user: Any) -> LtmRun:
    # The one access rule: a run the user may not act on reads as a missing one.
    return service.get_run(run_id, user)


def _seq(value: Any, run: LtmRun) -> int:
    """`value` as an event number of `run`, or HistoryRangeError naming the range."""
    low, high = run.history_from, run.seq
    span = f"{low} to {high}" if low <= high else "none yet"
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 12:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HistoryRangeError(f"seq must be a whole number, an event of this run: {span}")
    if not low <= value <= high:
        raise HistoryRangeError(f"seq {value} is outside this run's history: {span}")
    return value


def moment(run: LtmRun, seq: int) -> Moment:
    """The run after the write that holds event `seq` (which must be in its history)."""
    end = (
        LtmEvent.objects.filter(run=run, seq__gte=seq, change__isnull=False)
        .order_by("seq")
        .values_list("seq", flat=True)
        .first()
    )
    if end is None:  # only a run started before history was kept has none: its snapshot
        end = run.seq
    checkpoint = (
        LtmCheckpoint.objects.filter(run=run, seq__lte=end)
        .order_by("-seq")
        .values_list("seq", "snapshot")
        .first()
    )
    since, snapshot = checkpoint if checkpoint is not None else (0, None)
    changes = (
        LtmEvent.objects.filter(run=run, seq__gt=since, seq__lte=end, change__isnull=False)
        .order_by("seq")
        .values_list("change", flat=True)
    )
    point = replay(snapshot, [change for change in changes if change is not None])
    open_then = (
        LtmExecution.objects.filter(run=run, queued_seq__lte=end)
        .filter(Q(closed_seq__isnull=True) | Q(closed_seq__gt=end))
        .order_by("pk")
        .values_list("pk", "fqn", "payload", "entry")
    )
    return Moment(run, seq, end, point, list(open_then))


def ltm_at(run_id: Any, seq: Any, user: Any) -> RunView:
    """The run as committed right after its event `seq`, read-only: `.state` (the global
    state then), `.instances` (every state's status and data then), `.graph()` / `.to_dot()`
    coloured as it was, `.run` (`state`, `error` then; `seq` the event asked for, `version`
    the write's last event). A foreign or unknown run is `LtmRun.DoesNotExist`; a `seq`
    outside the run's history a ValueError naming the range."""
    run = _get_run(run_id, user)
    then = moment(run, _seq(seq, run))
    return _view(then)


def _view(then: Moment) -> RunView:
    run = then.run
    record = replace(
        service.run_record(run),
        state=then.point.state,
        error=then.point.error,
        version=then.at,
        seq=then.seq,
    )
    machine = store.root_class(run.name)
    return RunView.of(machine, then.point.records.values(), record)


def _reason(reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("give a reason: it is kept with the event, for whoever looks later")
    check_text(reason, "reason")
    return reason.strip()


def rollback_ltm(
    run_id: Any,
    seq: Any,
    user: Any,
    reason: str,
    *,
    discard_running: bool = False,
    expected_seq: int | None = None,
) -> LtmRun:
    """Take the run back to how it was right after event `seq`: every state's status and
    data, the global state, the appended lists, and the executions that were queued or
    running then (queued again now, keeping the appends they had made by then). The run
    goes on from there with the code deployed now.

    Nothing is erased: the rollback is an event of its own naming `user` and `reason`, and
    can itself be rolled back. Refused (FlowStateError) for a killed run, and while an
    execution is running unless `discard_running` confirms that its outcome is thrown away.
    `expected_seq` (the last event the caller saw) makes a run that moved on meanwhile a
    StaleFlowError, and so does another write racing this one."""
    reason = _reason(reason)
    run = _get_run(run_id, user)

    def build(snap: store.Snapshot) -> store.Write:
        current = snap.run
        if current.state == LtmRunState.KILLED:
            raise FlowStateError(
                f"LTM run {current.pk} was killed: it cannot be rolled back (copy it instead)"
            )
        if expected_seq is not None and current.seq != expected_seq:
            raise StaleFlowError(
                f"LTM run {current.pk} moved on to event {current.seq} since you looked at "
                f"event {expected_seq}; look again"
            )
        target = _seq(seq, current)
        then = moment(current, target)
        if then.at == current.seq:
            raise FlowStateError(
                f"LTM run {current.pk} is as it was after event {target} already: "
                "there is nothing to roll back"
            )
        now = timezone.now()
        running = list(
            LtmExecution.objects.filter(run=current, status=ExecutionStatus.CLAIMED).values_list(
                "pk", "fqn"
            )
        )
        if running and not discard_running:
            names = ", ".join(sorted({fqn for _, fqn in running}))
            raise FlowStateError(
                f"{names} is executing now: roll back only if its outcome may be thrown away "
                "(confirm to discard it), or wait until it is done"
            )
        stale = {"status": ExecutionStatus.STALE, "finished": now, "lease_until": None}
        closing = LtmExecution.objects.filter(run=current, status__in=OPEN)
        write = _restore(then, present=set(snap.rows))
        write.execution_changes = [(pk, stale) for pk in closing.values_list("pk", flat=True)]
        data = {
            "to": target,
            "at": then.at,
            "from": current.seq,
            "reason": reason,
            "requeued": [fqn for fqn, _ in write.executions],
            "discarded": sorted({fqn for _, fqn in running}),
        }
        write.events = [{"kind": "rollback", "fqn": "", "actor": user, "data": data}]
        return write

    store.commit(run.pk, build, retry=False)
    return LtmRun.objects.select_related("owner").get(pk=run.pk)


def _restore(then: Moment, present: set[str] = frozenset()) -> store.Write:  # type: ignore[assignment]
    """A write that makes a run what `then` was: every record of then, none other, its
    state and error, and its open executions queued anew (with their appends so far)."""
    records = list(then.point.records.values())
    kept = {record.fqn for record in records}
    executions: list[tuple[str, dict[str, Any]]] = []
    inherit: dict[int, tuple[int, int]] = {}
    for pk, fqn, payload, _entry in then.open:
        if fqn not in kept:
            continue
        inherit[len(executions)] = (pk, then.at)
        executions.append((fqn, payload))
    state = then.point.state
    if executions:
        state = LtmRunState.PENDING if state == LtmRunState.PENDING else LtmRunState.RUNNING
    elif state in (LtmRunState.PENDING, LtmRunState.RUNNING):
        failed = any(r.status == LtmStatus.FAILED for r in records)
        state = LtmRunState.FAILED if failed else LtmRunState.COMPLETE
    return store.Write(
        records=records,
        executions=executions,
        inherit=inherit,
        removed=sorted(present - kept),
        run_state=state,
        run_error=then.point.error,
    )


def copy_ltm(run_id: Any, user: Any, seq: Any = None) -> str:
    """A new, independent run of the same LTM owned by `user`, with the tree and state of
    run `run_id` right after event `seq` (default: its latest). Nothing that had finished
    by then runs again; what was queued or running then is queued in the copy, so the copy
    goes on from there. Returns the new run's id."""
    source = _get_run(run_id, user)
    target = source.seq if seq is None else _seq(seq, source)
    if target < source.history_from:
        raise HistoryRangeError(f"LTM run {source.pk} has no history to copy yet")
    then = moment(source, target)
    store.root_class(source.name)  # the class must be known here
    write = _restore(then)
    if write.run_state == LtmRunState.KILLED:
        write.run_state = (
            LtmRunState.FAILED
            if any(r.status == LtmStatus.FAILED for r in write.records)
            else LtmRunState.COMPLETE
        )
        write.run_error = ""
    root = next(r for r in write.records if "." not in r.fqn)
    data = {"from_run": str(source.pk), "from_seq": target, "at": then.at}
    write.events = [{"kind": "run.copied", "fqn": root.fqn, "actor": user, "data": data}]
    write.records = [replace(r) for r in write.records]
    with transaction.atomic():
        copy = LtmRun.objects.create(
            name=source.name,
            owner=user,
            global_state=root.state,
            state=LtmRunState.PENDING,
        )
        if not store.apply(store.Snapshot(copy, {}), write):  # a new row: nobody else has it
            raise StaleFlowError("the copy was changed while it was made; try again")
    return str(copy.pk)
