"""The LTM planner: records in, records out, like the flows' `decide()`.

Given a root class (for its definitions), the records of a run as stored and what happened
(an execution's effects, a start, an operator's transition), it says what to store, queue
and publish. It changes nothing it is given and does no I/O:

    effects = tree.find(fqn).execute(payload)          # user code, no writes (the node)
    # then, in one transaction holding the run's lock:
    result = plan(RootCls, records_now, fqn, effects)  # pure decision over the stored records
    # write result.records_changed, put result.executions in the outbox, emit result.events
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .definition import (
    InvalidTransition,
    TransitionDef,
    classes_of,
    format_name,
    normalise_params,
)
from .records import Effects, InstanceRecord, Move, Plan, TransitionCall, copy_data
from .tree import RecordTree

if TYPE_CHECKING:
    from .node import LTM


def plan(
    machine: type[LTM],
    records: Iterable[InstanceRecord] | RecordTree,
    executed_fqn: str,
    effects: Effects,
) -> Plan:
    """What the `effects` of executing `executed_fqn` do to the run whose stored records
    are `records` (or their tree, which is not changed). Transitions that move nothing by
    now are skipped, not raised: the run may have changed since run() checked them."""
    planner = _Planner(RecordTree.of(machine, records))
    tree = planner.tree
    fqn = tree.find(executed_fqn)
    if effects.error is not None:
        tree.update(fqn, error=effects.error)
        planner.set_status(fqn, "failed")
        planner.event("error", fqn, {"error": effects.error})
        return planner.finish()
    # Completed while it ran (a concurrent transition): it stays so and starts nothing.
    moved_on = tree.record(fqn).status == "completed"
    if not moved_on:
        tree.update(fqn, error=None)
        planner.set_status(fqn, "active")
    for target, update in effects.updates:
        at = tree.find(target)
        tree.update(at, state={**tree.record(at).state, **copy_data(update)})
        planner.event("state.updated", target, {"update": copy_data(update)})
    if not moved_on:
        for cls in tree.class_of(fqn).definition().init:
            child = tree.child(fqn, cls)
            planner.reinitialise(child)
            planner.queue(child, {})
    for call in effects.transitions:
        planner.transition(call)
    return planner.finish()


def plan_start(
    machine: type[LTM], records: Iterable[InstanceRecord], payload: Mapping[str, Any]
) -> Plan:
    """The plan of starting a new run from the records of an unstarted tree (its root's
    initial state): every record is new, the root is queued with `payload`."""
    planner = _Planner(RecordTree(machine, records), stored=False)
    planner.queue(planner.tree.root, payload)
    return planner.finish()


def plan_transition(
    machine: type[LTM],
    records: Iterable[InstanceRecord] | RecordTree,
    label: str,
    payload: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
    namespace: str | None = None,
) -> Plan:
    """An operator's transition from outside any run(): no caller; the namespace defaults
    to the root's fqn. A transition that moves nothing is in `skipped_transitions`."""
    tree = RecordTree.of(machine, records)
    call = TransitionCall(
        caller_fqn=None,
        label=label,
        payload=copy_data(dict(payload or {})),
        params=normalise_params(params),
        namespace=namespace or tree.root,
    )
    planner = _Planner(tree)
    planner.transition(call)
    return planner.finish()


def find_moves(
    machine: type[LTM], records: Iterable[InstanceRecord] | RecordTree, call: TransitionCall
) -> list[Move]:
    """Every machine of the run where `call` applies now: a transition with the label, whose
    namespace (declared, else the machine's fqn) is the call's, from active children. Given
    a tree, it reads it as it is (it changes nothing).

    Raises InvalidTransition if a move's parameterised target cannot be named from params."""
    tree = records if isinstance(records, RecordTree) else RecordTree(machine, records)
    return _moves(tree, call)


def _moves(tree: RecordTree, call: TransitionCall) -> list[Move]:
    moves = []
    # A transition declared without a namespace applies in its machine's: only the machine
    # named by the call's namespace can move, unless the run's classes declare this label
    # in a namespace of its own somewhere (then every machine is looked at).
    if _namespaced(tree.machine, call.label):
        machines = list(tree.walk())
    else:
        machines = [call.namespace] if call.namespace in tree else []
    for machine in machines:
        for transition in tree.class_of(machine).definition().transitions:
            if transition.label != call.label:
                continue
            if (transition.namespace or machine) != call.namespace:
                continue
            sources = tuple(
                child
                for child in _candidates(tree, machine, transition, call.params)
                if tree.class_of(child) in transition.sources
                and _counts_active(tree.record(child).status, child == call.caller_fqn)
                and _named_by(tree.class_of(child), tree.record(child).name, call.params)
            )
            if sources:
                _target_items(transition, call.params)
                moves.append(Move(machine, transition, sources))
    return moves


# Root class -> label -> whether `_namespaced` (weakly: a class defined in a test may go).
_NAMESPACED: weakref.WeakKeyDictionary[type, dict[str, bool]] = weakref.WeakKeyDictionary()


def _namespaced(machine: type[LTM], label: str) -> bool:
    """Whether a class of `machine`'s tree declares a `label` transition with a namespace."""
    known = _NAMESPACED.setdefault(machine, {})
    if label not in known:
        known[label] = _declares_namespace(machine, label)
    return known[label]


def _declares_namespace(machine: type[LTM], label: str) -> bool:
    return any(
        t.label == label and t.namespace
        for cls in classes_of(machine)
        for t in cls.definition().transitions
    )


def _candidates(
    tree: RecordTree, machine: str, transition: TransitionDef, params: list[dict[str, Any]] | None
) -> list[str]:
    """The children of `machine` that can be the transition's sources, in their order: the
    ones the sources' names (and the call's params, for parameterised ones) name, without
    looking at every child; every child when a source's instances are not all named."""
    named: list[str] = []
    for cls in transition.sources:
        if not cls.placeholders:
            named.append(f"{machine}.{cls.name}")
            continue
        naming = [item for item in params or () if all(f in item for f in cls.placeholders)]
        if not naming:
            return tree.children(machine)  # every instance of it is a source
        for item in naming:
            try:
                named.append(f"{machine}.{format_name(cls.name, item)}")
            except InvalidTransition:
                continue
    found = list(dict.fromkeys(fqn for fqn in named if fqn in tree))
    if len(found) > 1:
        order = {fqn: index for index, fqn in enumerate(tree.children(machine))}
        found.sort(key=lambda fqn: order.get(fqn, -1))
    return [fqn for fqn in found if fqn.rsplit(".", 1)[0] == machine]


def _named_by(cls: type[LTM], name: str, params: list[dict[str, Any]] | None) -> bool:
    """Whether the instance `name` of `cls` is one the call's params name. As in flou, the
    params of a call choose its parameterised sources too: `transition("done_{n}",
    params=[{"n": 1}])` moves `work_1`, not every active `work_{n}`. Params that do not
    name the source's placeholders at all leave every instance of it a source."""
    if not params or not cls.placeholders:
        return True
    naming = [item for item in params if all(field in item for field in cls.placeholders)]
    if not naming:
        return True
    for item in naming:
        try:
            if format_name(cls.name, item) == name:
                return True
        except InvalidTransition:
            continue
    return False


def _counts_active(status: str, is_caller: bool) -> bool:
    # The caller may still be queued: a worker plans against what is stored.
    if is_caller:
        return status in ("queued", "active")
    return status == "active"


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
    """Applies one change to its own record tree, noting events and executions."""

    def __init__(self, tree: RecordTree, *, stored: bool = True) -> None:
        self.tree = tree
        self.stored = stored  # False: every record is new
        self.result = Plan()
        self.queued: list[tuple[str, dict[str, Any], int]] = []  # (fqn, payload, entry)

    def event(self, kind: str, fqn: str, data: dict[str, Any]) -> None:
        self.result.events.append({"kind": kind, "fqn": fqn, "data": data})

    def set_status(self, fqn: str, status: str) -> None:
        current = self.tree.record(fqn).status
        if current != status:
            self.event("status", fqn, {"from": current, "to": status})
            self.tree.update(fqn, status=status)

    def queue(self, fqn: str, payload: Mapping[str, Any]) -> None:
        self.set_status(fqn, "queued")
        entry = self.tree.record(fqn).entry
        self.queued.append((fqn, copy_data(dict(payload)), entry))

    def reinitialise(self, fqn: str) -> None:
        """A new visit of `fqn`: its state and its children start afresh, and executions
        queued for an earlier visit of any of them will find themselves stale."""
        for each in list(self.tree.walk(fqn)):
            record = self.tree.record(each)
            initial = copy_data(dict(self.tree.class_of(each).initial_state))
            self.tree.update(each, state=initial, error=None, entry=record.entry + 1)
            if each != fqn:
                self.set_status(each, "init")

    def enter(self, fqn: str, payload: Mapping[str, Any]) -> None:
        """A transition into `fqn`: each one is an execution of its own, with its own
        payload. Into a state that is queued or active already (a join entered by several
        branches) it joins the visit under way: nothing is reset. Otherwise the state
        starts a new visit."""
        if self.tree.record(fqn).status not in ("queued", "active"):
            self.reinitialise(fqn)
        self.queue(fqn, payload)

    def complete(self, fqn: str) -> None:
        # A machine moved on from: what still runs inside it is over too.
        for each in list(self.tree.walk(fqn)):
            if each == fqn or self.tree.record(each).status in ("queued", "active"):
                self.set_status(each, "completed")

    def transition(self, call: TransitionCall) -> None:
        try:
            moves = _moves(self.tree, call)
            reason = "no active state has this transition"
        except InvalidTransition as exc:
            moves, reason = [], str(exc)
        if not moves:
            self.result.skipped_transitions.append(call)
            data = {"label": call.label, "namespace": call.namespace, "reason": reason}
            self.event("transition.skipped", call.caller_fqn or self.tree.root, data)
            return
        for move in moves:
            self.apply(move, call)

    def apply(self, move: Move, call: TransitionCall) -> None:
        targets: list[str] = []
        for cls, item in _target_items(move.transition, call.params):
            target = self.tree.child(move.machine, cls, item)
            if target not in targets:
                targets.append(target)
        self.event(
            "transition",
            move.machine,
            {
                "label": call.label,
                "namespace": call.namespace,
                "payload": copy_data(call.payload),
                "from": list(move.sources),
                "to": targets,
            },
        )
        for source in move.sources:
            self.complete(source)
        for target in targets:
            self.enter(target, call.payload)

    def finish(self) -> Plan:
        tree = self.tree
        self.result.records_changed = tree.changed() if self.stored else tree.records()
        # An execution queued and then overtaken within this very plan (its state moved on,
        # or began a new visit) would only be stale: it is not queued at all.
        for fqn, payload, entry in self.queued:
            record = self.tree.record(fqn)
            if record.entry == entry and record.status in ("queued", "active"):
                self.result.executions.append((fqn, payload))
        return self.result
