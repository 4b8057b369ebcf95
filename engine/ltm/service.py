"""Service functions of LTM runs (re-exported by `engine.api`): start, fire a transition,
retry, kill, load, list.

The access rule is the flows' one: a run's owner, staff, or a user with the
`engine.operate_flow` permission (runs started from code have no owner: staff only). Every
operator action is one compare-and-set write with an event naming the acting user; a call
that does not fit the run's state raises `FlowStateError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.utils import timezone

from engine import access
from engine.core.errors import FlowStateError
from engine.core.ltm.node import LTM
from engine.core.ltm.planner import plan_transition
from engine.core.ltm.registry import ltm_registry
from engine.core.ltm.view import RunRecord, RunView
from engine.jsonsafe import check_text, ensure_json
from engine.ltm import store
from engine.ltm.executor import DjangoRuntime
from engine.ltm.models import LtmExecution, LtmRun
from engine.ltm.status import OPEN, ExecutionStatus, LtmRunState, LtmStatus

__all__ = [
    "can_operate_ltm",
    "fire_transition",
    "kill_ltm",
    "load_ltm",
    "retry_ltm",
    "start_ltm",
    "visible_ltm_runs",
]


def can_operate_ltm(user: Any, run: LtmRun) -> bool:
    """Whether `user` may see and act on `run` (runs started from code have no owner:
    operators only)."""
    return access.may_act(user, run.owner_id)


def visible_ltm_runs(user: Any) -> QuerySet[LtmRun]:
    """The LTM runs `user` may see."""
    return access.visible(user, LtmRun.objects.select_related("owner"))


def get_run(run_id: Any, user: Any, *, check: bool = True) -> LtmRun:
    """The run `run_id`; `LtmRun.DoesNotExist` if there is none, PermissionDenied (with
    `check`) if `user` may not act on it."""
    try:
        run = LtmRun.objects.select_related("owner").get(pk=run_id)
    except (ValueError, ValidationError):
        raise LtmRun.DoesNotExist(f"LTM run {run_id!r} does not exist") from None
    if check:
        access.require(user, run.owner_id, "LTM run")
    return run


def start_ltm(name: str, user: Any, payload: Mapping[str, Any] | None = None) -> str:
    """Start the registered root LTM `name` for `user` with `payload` (handed to the root's
    run()); returns the run id. In immediate mode the whole run has executed on return."""
    if user is None or not user.is_authenticated:
        raise PermissionDenied("sign in to start an LTM")
    known = ltm_registry()
    if name not in known:
        raise ValueError(f"unknown LTM {name!r}; known: {', '.join(sorted(known)) or 'none'}")
    payload = {} if payload is None else payload
    if not isinstance(payload, Mapping) or not all(isinstance(k, str) for k in payload):
        raise ValueError("an LTM's start payload must be a JSON object")
    ensure_json(dict(payload), "payload")
    root = known[name](runtime=DjangoRuntime(owner=user))
    return root.start(**payload)


def fire_transition(
    run_id: Any,
    label: str,
    user: Any,
    payload: Mapping[str, Any] | None = None,
    namespace: str | None = None,
    params: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
) -> LtmRun:
    """Fire `label` as an operator in `namespace` (default: the root machine's), moving every
    active state that has it; `params` names parameterised targets."""
    check_text(label, "label")
    check_text(namespace, "namespace")
    run = get_run(run_id, user)
    payload = dict(payload or {})
    ensure_json(payload, "payload")

    def build(snap: store.Snapshot) -> store.Write:
        _refuse_killed(snap.run)
        machine = store.root_class(snap.run.name)
        result = plan_transition(machine, snap.records(), label, payload, params, namespace)
        if result.skipped_transitions:
            reason = result.events[0]["data"].get("reason", "")
            raise FlowStateError(
                f"transition {label!r} moves nothing in LTM run {snap.run.pk}: {reason}"
            )
        data = {"label": label, "namespace": namespace, "payload": payload}
        fired = {"kind": "manual.transition", "fqn": "", "data": data}
        events = [{**event, "actor": user} for event in [fired, *result.events]]
        write = store.Write(result.records_changed, result.executions, events)
        store.check_json(write)
        return write

    store.commit(run.pk, build)
    return get_run(run.pk, None, check=False)


def retry_ltm(run_id: Any, user: Any) -> LtmRun:
    """Execute the failed states of a run again (each with the payload it failed with)."""
    run = get_run(run_id, user)

    def build(snap: store.Snapshot) -> store.Write:
        _refuse_killed(snap.run)
        tree = snap.tree()
        failed = [i for i in tree.walk() if i.status == LtmStatus.FAILED and _reachable(i)]
        if not failed:
            raise FlowStateError(f"LTM run {snap.run.pk} has no failed state to retry")
        write = store.Write()
        data = {"states": [instance.fqn for instance in failed]}
        write.events.append({"kind": "manual.retry", "fqn": "", "actor": user, "data": data})
        for instance in failed:
            last = (
                LtmExecution.objects.filter(
                    run=snap.run, fqn=instance.fqn, status=ExecutionStatus.FAILED
                )
                .order_by("-pk")
                .first()
            )
            record = replace(instance.record(), status=LtmStatus.QUEUED, error=None)
            write.records.append(record)
            write.executions.append((instance.fqn, last.payload if last else {}))
            status = {"from": LtmStatus.FAILED, "to": LtmStatus.QUEUED}
            write.events.append(
                {"kind": "status", "fqn": instance.fqn, "actor": user, "data": status}
            )
        return write

    store.commit(run.pk, build)
    return get_run(run.pk, None, check=False)


def kill_ltm(run_id: Any, user: Any, reason: str = "") -> LtmRun:
    """End a run as killed: nothing queued executes, a run() still executing is discarded."""
    check_text(reason, "reason")
    run = get_run(run_id, user)

    def build(snap: store.Snapshot) -> store.Write:
        _refuse_killed(snap.run)
        stale = {"status": ExecutionStatus.STALE, "finished": timezone.now(), "lease_until": None}
        open_ids = LtmExecution.objects.filter(run=snap.run, status__in=OPEN)
        data = {"reason": reason, "was": snap.run.state}
        return store.Write(
            events=[{"kind": "manual.kill", "fqn": "", "actor": user, "data": data}],
            execution_changes=[(pk, stale) for pk in open_ids.values_list("pk", flat=True)],
            run_state=LtmRunState.KILLED,
            run_error=reason or f"killed by {user}",
        )

    store.commit(run.pk, build)
    return get_run(run.pk, None, check=False)


def load_ltm(run_id: Any, user: Any = None) -> RunView:
    """The run as committed, read-only (`engine.core.ltm.view.RunView`): `.run` (the LtmRun's
    fields, frozen), `.state` (global state), `.status` (the root's), `.instances` (fqn ->
    an InstanceView with `.status`, `.state`, `.params`, `.error`, `.name`), `.graph()`.
    With `user`, refuses (PermissionDenied) a run they may not see."""
    run = get_run(run_id, user, check=user is not None)
    snap = store.read(run.pk)
    return RunView.of(store.root_class(snap.run.name), snap.records(), run_record(snap.run))


def run_record(run: LtmRun) -> RunRecord:
    """The run's fields as the pure core's frozen `RunRecord`."""
    return RunRecord(
        id=str(run.pk),
        name=run.name,
        state=run.state,
        error=run.error,
        owner=run.owner,
        owner_id=run.owner_id,
        version=run.version,
        seq=run.seq,
        created=run.created,
        updated=run.updated,
        finished=run.finished,
    )


def _refuse_killed(run: LtmRun) -> None:
    if run.state == LtmRunState.KILLED:
        raise FlowStateError(f"LTM run {run.pk} was killed: it accepts no more actions")


def _reachable(instance: LTM) -> bool:
    # A failed state inside a machine that has since moved on stays as it is.
    parent = instance.parent
    while parent is not None:
        if parent.status == LtmStatus.COMPLETED:
            return False
        parent = parent.parent
    return True
