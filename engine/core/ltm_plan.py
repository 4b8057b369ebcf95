"""Executing one LTM instance, and planning what its effects do to the run's tree.

These are the pure seams of the persistence layer. A worker does:

    tree = build_tree(RootCls, records, run_id=..., runtime=...)     # load
    effects = execute(tree.find(fqn), payload)                      # user code, no writes
    # then, in one transaction holding the run's lock:
    tree = build_tree(RootCls, records_now, ...)                    # reload what is stored
    result = plan(tree, fqn, effects)                               # pure decision
    # write result.records_changed, put result.executions in the outbox, emit result.events

`execute` leaves the tree as it found it (except the lists changed by atomic appends, which
the runtime has already stored): `plan` is the one place that applies effects.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .ltm import LTM
from .ltm_definition import InvalidTransition, TransitionDef, format_name, normalise_params


@dataclass(frozen=True)
class InstanceRecord:
    """Snapshot of one instance, as the persistence layer stores it.

    `declared_name` is the child state's name as declared in its parent (the name template
    for parameterised states); `name` is the instance name (`processing_1`)."""

    fqn: str
    name: str
    declared_name: str
    status: str
    state: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

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
    `executions`: `(fqn, payload)` to queue, in order; `events`: `{kind, fqn, data}` with
    kinds `status`, `state.updated`, `transition`, `transition.skipped`, `error`;
    `skipped_transitions`: calls that moved nothing by the time they were planned."""

    records_changed: list[InstanceRecord] = field(default_factory=list)
    executions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    skipped_transitions: list[TransitionCall] = field(default_factory=list)


@dataclass
class EffectBuffer:
    """Collects the effects of the `run()` executing now (kept on the root instance)."""

    executing: LTM
    updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    transitions: list[TransitionCall] = field(default_factory=list)
    appended: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    calls: int = 0

    def next_call_index(self) -> int:
        """Order of a runtime call within this execution (the idempotency key's half)."""
        index = self.calls
        self.calls += 1
        return index


@dataclass(frozen=True)
class Move:
    """One machine whose `transition` applies to the active `sources`."""

    machine: LTM
    transition: TransitionDef
    sources: tuple[LTM, ...]


# -- records <-> trees ----------------------------------------------------------------


def record_of(instance: LTM) -> InstanceRecord:
    """The snapshot of one instance."""
    return InstanceRecord(
        fqn=instance.fqn,
        name=instance.name,
        declared_name=type(instance).name,
        status=instance._status,
        state=copy.deepcopy(instance._state),
        params=copy.deepcopy(instance.params),
        error=instance.error,
    )


def dump_tree(root: LTM) -> list[InstanceRecord]:
    """Snapshots of every instance created so far, parents first."""
    return [record_of(instance) for instance in root.walk()]


def apply_records(root: LTM, records: Iterable[InstanceRecord]) -> LTM:
    """Set status, state and error of the tree's instances from records (creating the
    instances that do not exist yet); returns `root`."""
    for record in sorted(records, key=lambda r: r.fqn.count(".")):
        try:
            if record.fqn == root.fqn:
                instance = root
            else:
                parent = root.find(record.parent_fqn or "")
                cls = parent.child_class(record.declared_name)
                instance = parent.child(cls, record.params if cls.placeholders else None)
        except (KeyError, InvalidTransition) as exc:
            fits = type(root).__qualname__
            raise ValueError(f"record {record.fqn!r} does not fit {fits}: {exc}") from exc
        if instance.fqn != record.fqn:
            raise ValueError(f"record {record.fqn!r} rebuilds as {instance.fqn!r}")
        instance._status = record.status
        instance._state = copy.deepcopy(record.state)
        instance.error = record.error
    return root


def build_tree(
    root_cls: type[LTM],
    records: Iterable[InstanceRecord],
    global_state: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    runtime: Any = None,
) -> LTM:
    """A live tree of `root_cls` from stored records. `global_state` is the root's state
    when it is stored apart from the records (None keeps the root record's state)."""
    root = root_cls(runtime=runtime)
    root._id = run_id
    apply_records(root, records)
    if global_state is not None:
        root._state = copy.deepcopy(dict(global_state))
    return root


# -- execute ----------------------------------------------------------------------------


def execute(instance: LTM, payload: Mapping[str, Any]) -> Effects:
    """Run `instance.run(**payload)` (status 'active' meanwhile) under an effect buffer.

    On return the tree is as it was before (atomic appends aside); the effects say what to
    apply. If run() raised, the effects carry the traceback and nothing else."""
    root = instance.root
    if root._buffer is not None:
        raise RuntimeError(f"{root.fqn} is already executing {root._buffer.executing.fqn}")
    saved = {i.fqn: (i._status, copy.deepcopy(i._state), i.error) for i in root.walk()}
    buffer = EffectBuffer(instance)
    root._buffer = buffer
    instance._status = "active"
    error: str | None = None
    try:
        instance.run(**payload)
    except Exception:
        error = traceback.format_exc()
    finally:
        root._buffer = None
        _restore(root, saved, buffer)
    if error is not None:
        return Effects(error=error)
    return Effects(updates=list(buffer.updates), transitions=list(buffer.transitions))


def _restore(
    root: LTM, saved: dict[str, tuple[str, dict[str, Any], str | None]], buffer: EffectBuffer
) -> None:
    for instance in root.walk():
        status, state, error = saved.get(instance.fqn, ("init", {}, None))
        instance._status, instance._state, instance.error = status, state, error
    for (fqn, key), value in buffer.appended.items():
        root.find(fqn)._state[key] = copy.deepcopy(value)


# -- planning ---------------------------------------------------------------------------


def find_moves(root: LTM, call: TransitionCall) -> list[Move]:
    """Every machine in the tree where `call` applies now: a transition with the label, whose
    namespace (declared, else the machine's fqn) is the call's, from active children.

    Raises InvalidTransition if a move's parameterised target cannot be named from params."""
    caller = _existing(root, call.caller_fqn)
    moves = []
    for machine in list(root.walk()):
        for transition in type(machine).definition().transitions:
            if transition.label != call.label:
                continue
            if (transition.namespace or machine.fqn) != call.namespace:
                continue
            sources = tuple(
                child
                for child in machine.children.values()
                if type(child) in transition.sources and _counts_active(child, caller)
            )
            if sources:
                _target_items(transition, call.params)
                moves.append(Move(machine, transition, sources))
    return moves


def _existing(root: LTM, fqn: str | None) -> LTM | None:
    if fqn is None:
        return None
    try:
        return root.find(fqn)
    except KeyError:
        return None


def _counts_active(instance: LTM, caller: LTM | None) -> bool:
    if instance is caller:
        return instance._status in ("queued", "active")
    return instance._status == "active"


def _target_items(
    transition: TransitionDef, params: list[dict[str, Any]] | None
) -> list[tuple[type[LTM], dict[str, Any] | None]]:
    items: list[tuple[type[LTM], dict[str, Any] | None]] = []
    for target in transition.targets:
        if not target.placeholders:
            items.append((target, None))
            continue
        if not params:
            raise InvalidTransition(
                f"{target.name!r} is parameterised: transition {transition.label!r} "
                "needs params=[{...}, ...]"
            )
        for item in params:
            format_name(target.name, item)
            items.append((target, item))
    return items


class _Planner:
    def __init__(self, root: LTM, *, stored: bool = True) -> None:
        self.root = root
        self.before = {r.fqn: r for r in dump_tree(root)} if stored else {}
        self.result = Plan()

    def event(self, kind: str, fqn: str, data: dict[str, Any]) -> None:
        self.result.events.append({"kind": kind, "fqn": fqn, "data": data})

    def set_status(self, instance: LTM, status: str) -> None:
        if instance._status != status:
            self.event("status", instance.fqn, {"from": instance._status, "to": status})
            instance._status = status

    def queue(self, instance: LTM, payload: Mapping[str, Any]) -> None:
        self.set_status(instance, "queued")
        self.result.executions.append((instance.fqn, copy.deepcopy(dict(payload))))

    def reinitialise(self, instance: LTM) -> None:
        for each in instance.walk():
            each._state = {}
            each.error = None
            if each is not instance:
                self.set_status(each, "init")

    def complete(self, instance: LTM) -> None:
        # A machine moved on from: what still runs inside it is over too.
        for each in instance.walk():
            if each is instance or each._status in ("queued", "active"):
                self.set_status(each, "completed")

    def transition(self, call: TransitionCall) -> None:
        try:
            moves = find_moves(self.root, call)
            reason = "no active state has this transition"
        except InvalidTransition as exc:
            moves, reason = [], str(exc)
        if not moves:
            self.result.skipped_transitions.append(call)
            data = {"label": call.label, "namespace": call.namespace, "reason": reason}
            self.event("transition.skipped", call.caller_fqn or self.root.fqn, data)
            return
        for move in moves:
            self.apply(move, call)

    def apply(self, move: Move, call: TransitionCall) -> None:
        sources = [source.fqn for source in move.sources]
        targets: list[LTM] = []
        for cls, item in _target_items(move.transition, call.params):
            target = move.machine.child(cls, item)
            if target not in targets:
                targets.append(target)
        self.event(
            "transition",
            move.machine.fqn,
            {
                "label": call.label,
                "namespace": call.namespace,
                "payload": copy.deepcopy(call.payload),
                "from": sources,
                "to": [target.fqn for target in targets],
            },
        )
        for source in move.sources:
            self.complete(source)
        for target in targets:
            self.reinitialise(target)
            self.queue(target, call.payload)

    def finish(self) -> Plan:
        after = dump_tree(self.root)
        self.result.records_changed = [r for r in after if self.before.get(r.fqn) != r]
        return self.result


def plan(root: LTM, executed_fqn: str, effects: Effects) -> Plan:
    """Apply the effects of executing `executed_fqn` to the tree (in place) and say what
    to store, queue and publish. Transitions that move nothing by now are skipped, not
    raised: the tree may have changed since run() checked them."""
    planner = _Planner(root)
    instance = root.find(executed_fqn)
    if effects.error is not None:
        instance.error = effects.error
        planner.set_status(instance, "failed")
        planner.event("error", instance.fqn, {"error": effects.error})
        return planner.finish()
    # Completed while it ran (a concurrent transition): it stays so and starts nothing.
    moved_on = instance._status == "completed"
    if not moved_on:
        instance.error = None
        planner.set_status(instance, "active")
    for fqn, update in effects.updates:
        root.find(fqn)._state.update(copy.deepcopy(update))
        planner.event("state.updated", fqn, {"update": copy.deepcopy(update)})
    if not moved_on:
        for cls in type(instance).definition().init:
            child = instance.child(cls)
            planner.reinitialise(child)
            planner.queue(child, {})
    for call in effects.transitions:
        planner.transition(call)
    return planner.finish()


def plan_start(root: LTM, payload: Mapping[str, Any]) -> Plan:
    """The plan of starting a new run: every record is new, the root is queued."""
    planner = _Planner(root, stored=False)
    planner.queue(root, payload)
    return planner.finish()


def plan_transition(
    root: LTM,
    label: str,
    payload: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
    namespace: str | None = None,
) -> Plan:
    """An operator's transition from outside any run(): no caller; the namespace defaults
    to the root's fqn. A transition that moves nothing is in `skipped_transitions`."""
    call = TransitionCall(
        caller_fqn=None,
        label=label,
        payload=copy.deepcopy(dict(payload or {})),
        params=normalise_params(params),
        namespace=namespace or root.fqn,
    )
    planner = _Planner(root)
    planner.transition(call)
    return planner.finish()
