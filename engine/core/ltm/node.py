"""Labeled Transition Models: one class that is both a state and a state machine.

The class is the definition (`name`, `init`, `transitions`, checked when the class is
created, see `definition`); an instance is one node of a run's tree (status, state,
children). While `run()` executes, `update_state` and `transition` are recorded in an effect
buffer and come back from `execute()` as `Effects`; the planner (`planner.plan`) decides
what they do to the stored records. A `Runtime` (see `runtime`) does the I/O around that.

    class MyLtm(LTM):
        name = "my_ltm"
        init = [MyState]
        transitions = [{"from": MyState, "label": "my_transition", "to": EndState}]

The engine side of an instance is small: `from_records` builds a tree from stored records,
`apply_records` brings one up to date, `record`/`records` snapshot it, `execute` runs one
state's `run()`. Only this class writes its instances' private attributes.

Pure Python: this package imports no Django, Huey or Channels.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, MethodType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from engine.core.graph.dot import to_dot
from engine.core.graph.extract import ltm_graph

from .definition import (
    Definition,
    InvalidTransition,
    check_initial_state,
    check_name,
    check_reserved,
    check_tree,
    format_name,
    is_lazy,
    normalise_params,
    resolve,
    snake_case,
)
from .planner import find_moves
from .records import Effects, InstanceRecord, TransitionCall, copy_data
from .runtime import get_default_runtime
from .tree import RecordTree

if TYPE_CHECKING:
    from engine.core.graph.model import Graph

    from .runtime import Runtime

_Target = TypeVar("_Target")
_Self = TypeVar("_Self", bound="LTM")

# What the engine calls on instances: a state class must not define these itself.
ENGINE_METHODS = ("apply_records", "execute", "from_records", "record", "records")


class _class_or_instance_method(Generic[_Target]):  # lower case: used like `classmethod`
    """A method that binds to the instance when there is one, else to the class."""

    def __init__(self, func: Callable[..., _Target]) -> None:
        self.__func__ = func
        self.__doc__ = func.__doc__

    def __get__(self, obj: Any, owner: type) -> Callable[..., _Target]:
        return MethodType(self.__func__, owner if obj is None else obj)


@dataclass
class _EffectBuffer:
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


class LTM:
    """Base class of Labeled Transition Models: a state, and a machine when it has children.

    Class attributes:
      name         `^[a-z][a-z0-9_]*$`, may hold `{field}` placeholders for parameterised
                   states (`processing_{file_id}`); defaults to the snake_cased class name
      init         child states queued when this machine has executed
      transitions  `{"from": Cls or iterable, "label": str, "to": Cls or iterable,
                   "namespace": optional str}`
      initial_state  the state each visit of this state starts with (default empty), say
                   `{"done": []}` for a join that appends to its own list (flou's
                   `get_initial_state()`)
    `init` and `transitions` may be zero-argument callables (lambdas) for forward references;
    they are then checked on first use instead of at class creation.

    Instance attributes: `name`, `fqn`, `params`, `error`, and the read-only `root`, `parent`,
    `status`, `state`, `id`, `children`.
    """

    name: str = "ltm"
    init: Any = ()
    transitions: Any = ()
    initial_state: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    placeholders: tuple[str, ...] = ()
    _ltm_definition: ClassVar[Definition | None] = None  # read from each class's own __dict__

    fqn: str
    params: dict[str, Any]
    error: str | None
    _runtime: Runtime | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = snake_case(cls.__name__)
        cls.placeholders = check_name(cls)
        check_initial_state(cls)
        check_reserved(cls, ENGINE_METHODS)
        if not (is_lazy(cls.init) or is_lazy(cls.transitions)):
            cls.definition()

    @classmethod
    def definition(cls) -> Definition:
        """The checked definition of this class (resolved once, on first use when lazy)."""
        found = cls.__dict__.get("_ltm_definition")
        if found is None:
            found = resolve(cls, LTM)
            cls._ltm_definition = found
        return found

    # -- instances ---------------------------------------------------------------------

    def __init__(self, *, runtime: Runtime | None = None) -> None:
        """Create a root instance; `runtime` defaults to `get_default_runtime()` at start."""
        cls = type(self)
        if cls.placeholders:
            raise TypeError(f"{cls.__qualname__} is parameterised ({cls.name!r}): not a root")
        check_tree(cls)
        self._setup(None, cls.name, {})
        self._runtime = runtime

    @classmethod
    def _make_child(cls, parent: LTM, name: str, params: Mapping[str, Any]) -> LTM:
        # Bypasses __init__ so that user subclasses overriding it do not break the tree.
        instance = cls.__new__(cls)
        instance._setup(parent, name, params)
        return instance

    def _setup(self, parent: LTM | None, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        self.params = copy_data(dict(params))
        self.fqn = f"{parent.fqn}.{name}" if parent is not None else name
        self.error = None
        self._parent = parent
        self._root: LTM = parent._root if parent is not None else self
        self._children: dict[str, LTM] = {}
        # False while children of this instance in the root's stored tree are not all made
        # yet (a tree built `from_records` of a RecordTree makes each one on first use).
        self._complete = True
        self._state: dict[str, Any] = copy_data(dict(type(self).initial_state))
        self._status = "init"
        self._entry = 0
        # Meaningful on the root only.
        self._id: str | None = None
        self._runtime = None
        self._buffer: _EffectBuffer | None = None
        self._start_called = False
        # The records the tree was last set from (`apply_records`), as their tree: what
        # transition() checks its moves against (statuses change only with the records).
        self._stored: RecordTree | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self.fqn} {self._status}>"

    @property
    def root(self) -> LTM:
        return self._root

    @property
    def parent(self) -> LTM | None:
        return self._parent

    @property
    def status(self) -> str:
        """One of `records.STATUSES`; set from the planner's records, never by run()."""
        return self._status

    @property
    def state(self) -> Mapping[str, Any]:
        """Read-only view of this instance's state; change it with `update_state`."""
        return MappingProxyType(self._state)

    @property
    def id(self) -> str | None:
        """The run id (the root's), set by `start()` or when a run is loaded."""
        return self._root._id

    @property
    def runtime(self) -> Runtime | None:
        return self._root._runtime

    @property
    def children(self) -> Mapping[str, LTM]:
        """The child instances created so far, keyed by instance name."""
        return MappingProxyType(self._every_child())

    def child_class(self, state: str | type[LTM]) -> type[LTM]:
        """The child state class for a class, declared name or existing instance name."""
        children = type(self).definition().children
        if isinstance(state, type):
            if state in children.values():
                return state
        elif state in children:
            return children[state]
        elif state in self._children or self._stored_child(state) is not None:
            return type(self._children[state])
        raise KeyError(f"{self.fqn} has no child state {state!r}")

    def child(self, state: str | type[LTM], params: Mapping[str, Any] | None = None) -> LTM:
        """The child instance for `state`, created on first use (parameterised states need
        `params` to name the instance)."""
        if isinstance(state, str):
            if state in self._children:
                return self._children[state]
            stored = self._stored_child(state)
            if stored is not None:
                return stored
        cls = self.child_class(state)
        if cls.placeholders and params is None:
            raise KeyError(f"{self.fqn}: {cls.name!r} is parameterised, pass params")
        params = params if cls.placeholders and params is not None else {}
        name = format_name(cls.name, params) if cls.placeholders else cls.name
        if name not in self._children and self._stored_child(name) is None:
            self._children[name] = cls._make_child(self, name, params)
        return self._children[name]

    def _stored_child(self, name: str) -> LTM | None:
        """The child `name` as the root's stored tree holds it (made now if it was not), or
        None if that tree has no such child."""
        stored = self._root._stored
        if self._complete or stored is None or f"{self.fqn}.{name}" not in stored:
            return None
        return self._children.get(name) or self._made_from(stored, f"{self.fqn}.{name}")

    def _made_from(self, stored: RecordTree, fqn: str) -> LTM:
        """The child at `fqn` made from its stored record (its own children made later)."""
        record, cls = stored.record(fqn), stored.class_of(fqn)
        child = cls._make_child(self, record.name, record.params if cls.placeholders else {})
        child._status, child._state = record.status, copy_data(record.state)
        child.error, child._entry = record.error, record.entry
        child._complete = False
        self._children[record.name] = child
        return child

    def _every_child(self) -> dict[str, LTM]:
        """Every child made so far, and all those of the stored tree: in its order, then
        those made since."""
        stored = self._root._stored
        if not self._complete and stored is not None and self.fqn in stored:
            made = self._children
            ordered: dict[str, LTM] = {}
            for fqn in stored.children(self.fqn):
                name = fqn.rsplit(".", 1)[1]
                ordered[name] = made.get(name) or self._made_from(stored, fqn)
            self._children = {**ordered, **made}
        self._complete = True
        return self._children

    def _made(self) -> Iterator[LTM]:
        """This instance and every instance below it made so far (none made now)."""
        yield self
        for child in list(self._children.values()):
            yield from child._made()

    def find(self, fqn: str) -> LTM:
        """The instance at `fqn` in this tree (non-parameterised ones are created on use)."""
        first, *rest = fqn.split(".")
        if first != self._root.name:
            raise KeyError(f"{fqn!r} is not in the tree of {self._root.name!r}")
        node = self._root
        for part in rest:
            node = node.child(part)
        return node

    def walk(self) -> Iterator[LTM]:
        """This instance and every instance below it, parents first."""
        yield self
        for child in list(self._every_child().values()):
            yield from child.walk()

    def default_namespace(self) -> str:
        """Where this instance's transitions look by default: its parent machine's fqn."""
        return self._parent.fqn if self._parent is not None else self.fqn

    # -- the API used inside run() -----------------------------------------------------

    def run(self, **payload: Any) -> None:
        """User code executed when this state is executed. Don't call it directly."""

    def update_state(self, update: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> None:
        """Update this instance's state with a dict or a list of `{key: value}` dicts.

        Inside `run()` the change is visible at once and persisted when `run()` returns;
        before `start()` it sets the initial state. Anywhere else it is an error."""
        items = _merge_update(update)
        buffer = self._root._buffer
        if buffer is not None:
            buffer.updates.append((self.fqn, copy_data(items)))
        elif self._root._start_called or self._root._id is not None:
            raise RuntimeError("update_state() outside run() after start(): nothing would store it")
        self._state.update(copy_data(items))

    def transition(
        self,
        label: str,
        payload: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
        namespace: str | None = None,
    ) -> None:
        """Move every active state that has a `label` transition in `namespace` (default:
        this instance's parent machine) once `run()` returns. `params` (a list of dicts)
        creates one target instance per item for parameterised states.

        Raises InvalidTransition at once if the label would move nothing now."""
        root = self._root
        buffer = root._buffer
        if buffer is None:
            raise RuntimeError("transition() is for run(); operators use plan_transition()")
        call = TransitionCall(
            caller_fqn=self.fqn,
            label=label,
            payload=copy_data(dict(payload or {})),
            params=normalise_params(params),
            namespace=namespace or self.default_namespace(),
        )
        stored = root._stored if root._stored is not None else root.records()
        if not find_moves(type(root), stored, call):
            raise InvalidTransition(
                f"{label!r} in namespace {call.namespace!r} moves nothing (called by {self.fqn})"
            )
        buffer.transitions.append(call)

    def atomic_state_append(self, key: str, value: Any) -> list[Any]:
        """Append `value` to the list `state[key]` (it must exist) at once and atomically,
        through the runtime; returns the whole list. For joins of concurrent states."""
        root = self._root
        if root._buffer is None or root._runtime is None:
            raise RuntimeError("atomic_state_append() works inside run() of a started LTM")
        index = root._buffer.next_call_index()
        # The runtime stores a copy of `value`, and returns the list as stored, which it may
        # keep (a process holds the rows it committed): the state gets a copy, so what run()
        # does with it afterwards changes nothing stored. The caller gets that same list, as
        # `self.state[key]` (one copy of a join's growing list per arrival, not two); when
        # run() returns the state is the list as stored again. (The buffer's is copied where
        # it is used.)
        stored = root._runtime.atomic_state_append(self, key, copy_data(value), index)
        values = self._state[key] = copy_data(stored)
        root._buffer.appended[(self.fqn, key)] = stored
        return values

    def start(self, /, **payload: Any) -> str:
        """Start this root machine once: its runtime queues its execution with `payload`.
        Returns the run id (also `self.id`)."""
        if self._parent is not None:
            raise RuntimeError(f"start() is for the root machine, not {self.fqn}")
        if self._start_called or self._id is not None or self._status != "init":
            raise RuntimeError(f"{self.fqn} was already started")
        self._start_called = True
        if self._runtime is None:
            self._runtime = get_default_runtime()
        self._id = self._runtime.start(self, dict(payload))
        return self._id

    # -- the engine side: records in and out, executing one state -----------------------

    @classmethod
    def from_records(
        cls: type[_Self],
        records: Iterable[InstanceRecord] | RecordTree,
        global_state: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        runtime: Runtime | None = None,
    ) -> _Self:
        """A live tree of this root class from stored records. `global_state` is the root's
        state when it is stored apart from the records (None keeps the root record's).

        Given their tree (`RecordTree`, which it keeps as it is), each instance is made on
        first use: an execution of one state of a wide run makes the few it looks at."""
        root = cls(runtime=runtime)
        root._id = run_id
        if isinstance(records, RecordTree):
            if records.machine is not cls:
                raise TypeError(f"a tree of {records.machine.__qualname__}, not of {cls}")
            record = records.record(records.root)
            root._status, root._state = record.status, copy_data(record.state)
            root.error, root._entry = record.error, record.entry
            root._stored, root._complete = records, False
        else:
            root.apply_records(records)
        if global_state is not None:
            root._state = copy_data(dict(global_state))
        return root

    def apply_records(self, records: Iterable[InstanceRecord] | RecordTree) -> None:
        """Set status, state and error of this tree's instances from records (creating the
        instances that do not exist yet). Records that do not fit raise ValueError. Given
        their tree (`RecordTree`, built once for several uses), it is kept as it is: the
        caller changes it no more."""
        root = self._root
        if isinstance(records, RecordTree):
            if records.machine is not type(root):
                raise TypeError(f"a tree of {records.machine.__qualname__}, not of {root}")
            tree = records
            stored = set(tree.fqns())  # (machines made on the way hold what a node has)
            root._stored = tree
        else:
            given = list(records)
            tree = RecordTree(type(root), given)  # checks that they fit, orders them
            stored = {record.fqn for record in given}
            root._stored = None  # (records of some instances only, maybe)
        nodes: dict[str, LTM] = {root.fqn: root}
        for fqn in tree.walk():
            record = tree.record(fqn)
            if fqn != root.fqn:
                parent = nodes[record.parent_fqn or ""]
                cls = tree.class_of(fqn)
                nodes[fqn] = parent.child(cls, record.params if cls.placeholders else None)
            if fqn in stored:
                node = nodes[fqn]
                node._status = record.status
                node._state = copy_data(record.state)
                node.error = record.error
                node._entry = record.entry

    def record(self) -> InstanceRecord:
        """The snapshot of this instance."""
        return InstanceRecord(
            fqn=self.fqn,
            name=self.name,
            declared_name=type(self).name,
            status=self._status,
            state=copy_data(self._state),
            params=copy_data(self.params),
            error=self.error,
            entry=self._entry,
        )

    def records(self) -> list[InstanceRecord]:
        """Snapshots of this instance and every instance below it created so far, parents
        first."""
        return [instance.record() for instance in self.walk()]

    def execute(self, payload: Mapping[str, Any]) -> Effects:
        """Run `self.run(**payload)` (status 'active' meanwhile) under an effect buffer.

        On return the tree is as it was before (atomic appends aside, which the runtime has
        stored already); the effects say what to plan. If run() raised, the effects carry
        the traceback and nothing else."""
        root = self._root
        if root._buffer is not None:
            raise RuntimeError(f"{root.fqn} is already executing {root._buffer.executing.fqn}")
        # (Only the instances made so far: those made while it runs come from the stored
        # tree, or are new.)
        saved = {i.fqn: (i._status, copy_data(i._state), i.error) for i in root._made()}
        buffer = _EffectBuffer(self)
        root._buffer = buffer
        self._status = "active"
        error: str | None = None
        try:
            self.run(**payload)
        except Exception:
            error = traceback.format_exc()
        finally:
            root._buffer = None
            stored = root._stored
            for instance in root._made():
                before = saved.get(instance.fqn)
                if before is None and stored is not None and instance.fqn in stored:
                    record = stored.record(instance.fqn)  # made from it while run() ran
                    before = (record.status, copy_data(record.state), record.error)
                status, state, instance.error = before or ("init", {}, None)
                instance._status, instance._state = status, state
            for (fqn, key), value in buffer.appended.items():
                root.find(fqn)._state[key] = copy_data(value)
        if error is not None:
            return Effects(error=error)
        return Effects(updates=list(buffer.updates), transitions=list(buffer.transitions))

    # -- diagrams ----------------------------------------------------------------------

    @_class_or_instance_method
    def graph(target: type[LTM] | LTM) -> Graph:
        """Diagram data: of the definition on the class, with statuses on an instance."""
        if isinstance(target, type):
            return ltm_graph(target)
        root = target.root
        return ltm_graph(type(root), root.records(), target.fqn)

    @_class_or_instance_method
    def to_dot(target: type[LTM] | LTM) -> str:
        """Graphviz DOT text of `graph()`."""
        return to_dot(target.graph())


def _merge_update(update: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    parts = [update] if isinstance(update, Mapping) else list(update)
    merged: dict[str, Any] = {}
    for part in parts:
        if not isinstance(part, Mapping) or not all(isinstance(k, str) for k in part):
            raise TypeError(f"state updates are dicts with str keys, got {part!r}")
        merged.update(part)
    return merged
