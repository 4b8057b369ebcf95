"""A run's instance records arranged as its tree: each record's class, its children in the
order they appeared, and the walk order (parents first).

The planner works on one (its own copy, which it changes through `child`, `find` and
`update`); the diagrams and the read-only views only read one. It holds records, never LTM
instances: the classes are only asked for their checked definitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .definition import InvalidTransition, check_tree, format_name
from .records import InstanceRecord, copy_data

if TYPE_CHECKING:
    from .node import LTM


class RecordTree:
    """The records of a run of `machine` (a root LTM class), checked against its definition.

    The root, and the non-parameterised machines on the way to a record, are there even when
    no record names them (as `init`, with no state), the way a loaded run's tree has them.
    Records that do not fit the definition raise ValueError. The records are copies (but in
    `with_records`, which takes the records a write stored as they are): what the tree
    changes is never what it was given. Records are frozen and their data is never changed
    in place (a change replaces a record, with new data), so copies of a tree (`copy`) share
    them."""

    def __init__(self, machine: type[LTM], records: Iterable[InstanceRecord] = ()) -> None:
        if machine.placeholders:
            raise TypeError(
                f"{machine.__qualname__} is parameterised ({machine.name!r}): not a root"
            )
        check_tree(machine)
        self.machine = machine
        self.root = machine.name
        self._records: dict[str, InstanceRecord] = {}
        self._classes: dict[str, type[LTM]] = {}
        self._children: dict[str, list[str]] = {}
        self._own: set[str] | None = None  # None: every list of children is this tree's own
        self._before: dict[str, InstanceRecord | None] = {}  # see `changed`
        initial = copy_data(dict(machine.initial_state))
        self._add(
            InstanceRecord(self.root, self.root, machine.name, "init", initial), machine, None
        )
        for record in sorted(records, key=lambda r: r.fqn.count(".")):
            self._load(record)
        self._before = {}

    @classmethod
    def of(cls, machine: type[LTM], records: Iterable[InstanceRecord] | RecordTree) -> RecordTree:
        """A tree of `records`; given a tree already, a copy of it (see `copy`)."""
        if isinstance(records, RecordTree):
            if records.machine is not machine:
                raise TypeError(f"a tree of {records.machine.__qualname__}, not of {machine}")
            return records.copy()
        return cls(machine, records)

    def copy(self) -> RecordTree:
        """A tree of the same records that can be changed apart from this one. It shares the
        records (frozen) and their data, which nothing changes in place: `update` replaces a
        record, and every state it is given is new."""
        twin = object.__new__(RecordTree)
        twin.machine, twin.root = self.machine, self.root
        twin._records = dict(self._records)
        twin._classes = dict(self._classes)
        # The lists of children are shared too, each copied before its first change.
        twin._children = dict(self._children)
        twin._own = set()
        self._own = set()  # (and this tree's, from now on)
        twin._before = {}
        return twin

    def _children_to_change(self, fqn: str) -> list[str]:
        if self._own is not None and fqn not in self._own:
            self._children[fqn] = list(self._children[fqn])
            self._own.add(fqn)
        return self._children[fqn]

    def changed(self) -> list[InstanceRecord]:
        """The records this tree changed or added since it was made (or copied), as they
        are now, parents first (in `walk` order); a record changed back to what it was is
        left out."""
        changed = [
            fqn
            for fqn, before in self._before.items()
            if fqn in self._records and before != self._records[fqn]
        ]
        changed.sort(key=self._position)
        return [self._records[fqn] for fqn in changed]

    def _position(self, fqn: str) -> tuple[int, ...]:
        """Where `fqn` comes in `walk`: its index among its siblings, at every level."""
        position: list[int] = []
        while fqn != self.root:
            parent = fqn.rsplit(".", 1)[0]
            position.append(self._children[parent].index(fqn))
            fqn = parent
        return tuple(reversed(position))

    def with_records(
        self, records: Iterable[InstanceRecord], removed: Iterable[str] = ()
    ) -> RecordTree:
        """A copy of this tree with the instances `removed` gone (with what is below them)
        and `records` stored over it (new instances added last among their siblings): the
        tree a write of those leaves, without building it again from every record."""
        twin = self.copy()
        for fqn in removed:
            if fqn in twin._records and fqn != twin.root:
                for each in list(twin.walk(fqn)):
                    del twin._records[each], twin._classes[each], twin._children[each]
                twin._children_to_change(fqn.rsplit(".", 1)[0]).remove(fqn)
        for record in sorted(records, key=lambda r: r.fqn.count(".")):
            twin._load(record, copy=False)  # (the records written: nothing changes them)
        twin._before = {}
        return twin

    def _add(self, record: InstanceRecord, cls: type[LTM], parent: str | None) -> None:
        self._before.setdefault(record.fqn, None)
        self._records[record.fqn] = record
        self._classes[record.fqn] = cls
        self._children[record.fqn] = []
        if self._own is not None:
            self._own.add(record.fqn)
        if parent is not None:
            self._children_to_change(parent).append(record.fqn)

    def _load(self, record: InstanceRecord, *, copy: bool = True) -> None:
        cls: type[LTM] | None = None
        parent: str | None = None
        try:
            if record.fqn == self.root:
                fqn = self.root
            else:
                parent = self.find(record.parent_fqn or "")
                cls = self.child_class(parent, record.declared_name)
                name = format_name(cls.name, record.params) if cls.placeholders else cls.name
                fqn = f"{parent}.{name}"
        except (KeyError, InvalidTransition) as exc:
            fits = self.machine.__qualname__
            raise ValueError(f"record {record.fqn!r} does not fit {fits}: {exc}") from exc
        if fqn != record.fqn:
            raise ValueError(f"record {record.fqn!r} rebuilds as {fqn!r}")
        state = copy_data(record.state) if copy else record.state
        if fqn in self._records:  # the root, or a machine made on the way to another record
            self.update(
                fqn, status=record.status, state=state, error=record.error, entry=record.entry
            )
            return
        assert cls is not None and parent is not None
        # What `child` would create, with the record's status, state, error and entry.
        params = (
            (copy_data(dict(record.params)) if copy else record.params) if cls.placeholders else {}
        )
        loaded = InstanceRecord(
            fqn,
            fqn.rsplit(".", 1)[1],
            cls.name,
            record.status,
            state,
            params,
            error=record.error,
            entry=record.entry,
        )
        self._add(loaded, cls, parent)

    # -- reading ---------------------------------------------------------------------------

    def __contains__(self, fqn: object) -> bool:
        return fqn in self._records

    def fqns(self) -> Iterable[str]:
        """Every fqn in the tree (in no particular order)."""
        return self._records.keys()

    def record(self, fqn: str) -> InstanceRecord:
        """The record at `fqn` (KeyError if there is none)."""
        return self._records[fqn]

    def class_of(self, fqn: str) -> type[LTM]:
        """The LTM class of the instance at `fqn`."""
        return self._classes[fqn]

    def children(self, fqn: str) -> list[str]:
        """The fqns of the instance's children, in the order they appeared."""
        return list(self._children[fqn])

    def walk(self, fqn: str | None = None) -> Iterator[str]:
        """`fqn` (default: the root) and every fqn below it, parents first."""
        children = self._children
        stack = [self.root if fqn is None else fqn]
        while stack:
            each = stack.pop()
            yield each
            stack.extend(reversed(children[each]))

    def records(self, fqn: str | None = None) -> list[InstanceRecord]:
        """The records of `walk(fqn)`, in that order."""
        return [self._records[each] for each in self.walk(fqn)]

    def child_class(self, parent: str, state: str | type[LTM]) -> type[LTM]:
        """The child state class for a class, declared name or existing instance name."""
        children = self._classes[parent].definition().children
        if isinstance(state, type):
            if state in children.values():
                return state
        elif state in children:
            return children[state]
        elif f"{parent}.{state}" in self._records:
            return self._classes[f"{parent}.{state}"]
        raise KeyError(f"{parent} has no child state {state!r}")

    # -- changing (the planner's own copy) --------------------------------------------------

    def child(
        self, parent: str, state: str | type[LTM], params: Mapping[str, Any] | None = None
    ) -> str:
        """The fqn of the child for `state`, its record created (`init`) on first use;
        parameterised states need `params` to name the instance."""
        if isinstance(state, str) and f"{parent}.{state}" in self._records:
            return f"{parent}.{state}"
        cls = self.child_class(parent, state)
        if cls.placeholders and params is None:
            raise KeyError(f"{parent}: {cls.name!r} is parameterised, pass params")
        params = params if cls.placeholders and params is not None else {}
        name = format_name(cls.name, params) if cls.placeholders else cls.name
        fqn = f"{parent}.{name}"
        if fqn not in self._records:
            initial = copy_data(dict(cls.initial_state))
            record = InstanceRecord(fqn, name, cls.name, "init", initial, copy_data(dict(params)))
            self._add(record, cls, parent)
        return fqn

    def find(self, fqn: str) -> str:
        """`fqn` itself, once the non-parameterised instances on its way exist."""
        first, *rest = fqn.split(".")
        if first != self.root:
            raise KeyError(f"{fqn!r} is not in the tree of {self.root!r}")
        node = self.root
        for part in rest:
            node = self.child(node, part)
        return node

    def update(self, fqn: str, **changes: Any) -> InstanceRecord:
        """Replace the record at `fqn` with a copy carrying `changes`; returns it."""
        self._before.setdefault(fqn, self._records[fqn])
        record = self._records[fqn] = replace(self._records[fqn], **changes)
        return record
