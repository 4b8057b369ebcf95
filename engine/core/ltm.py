"""Labeled Transition Models: one class that is both a state and a state machine.

The class is the definition (`name`, `init`, `transitions`, checked when the class is
created, see `ltm_definition`); an instance is one node of a run's tree (status, state,
children). While `run()` executes, `update_state` and `transition` are recorded in an effect
buffer; `plan()` (in `ltm_plan`) applies them once `run()` has returned. A `Runtime` (in
`ltm_runtime`) does the I/O around that: `InMemoryRuntime` in-process, the Django/Huey one in
the engine. Everything public is importable from this module.

    class MyLtm(LTM):
        name = "my_ltm"
        init = [MyState]
        transitions = [{"from": MyState, "label": "my_transition", "to": EndState}]

Pure Python: this package imports no Django, Huey or Channels.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType, MethodType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from .ltm_definition import (
    INSTANCE_NAME_PATTERN,
    NAME_PATTERN,
    PLACEHOLDER_PATTERN,
    STATUSES,
    Definition,
    InvalidDefinition,
    InvalidTransition,
    LTMDefinitionWarning,
    TransitionDef,
    check_tree,
    format_name,
    is_lazy,
    normalise_params,
    resolve,
    snake_case,
)

if TYPE_CHECKING:
    from .graph import Graph
    from .ltm_plan import (
        EffectBuffer,
        Effects,
        InstanceRecord,
        Plan,
        TransitionCall,
        apply_records,
        build_tree,
        dump_tree,
        execute,
        find_moves,
        plan,
        plan_start,
        plan_transition,
    )
    from .ltm_runtime import InMemoryRuntime, Runtime, get_default_runtime, set_default_runtime

__all__ = [
    "LTM",
    "STATUSES",
    "Definition",
    "EffectBuffer",
    "Effects",
    "InMemoryRuntime",
    "INSTANCE_NAME_PATTERN",
    "InstanceRecord",
    "InvalidDefinition",
    "InvalidTransition",
    "LTMDefinitionWarning",
    "NAME_PATTERN",
    "PLACEHOLDER_PATTERN",
    "Plan",
    "Runtime",
    "TransitionCall",
    "TransitionDef",
    "apply_records",
    "build_tree",
    "check_tree",
    "dump_tree",
    "execute",
    "find_moves",
    "format_name",
    "normalise_params",
    "get_default_runtime",
    "ltm_registry",
    "plan",
    "plan_start",
    "plan_transition",
    "register",
    "root_classes",
    "set_default_runtime",
    "snake_case",
    "unregister",
]

_Target = TypeVar("_Target")


class _class_or_instance_method(Generic[_Target]):  # lower case: used like `classmethod`
    """A method that binds to the instance when there is one, else to the class."""

    def __init__(self, func: Callable[..., _Target]) -> None:
        self.__func__ = func
        self.__doc__ = func.__doc__

    def __get__(self, obj: Any, owner: type) -> Callable[..., _Target]:
        return MethodType(self.__func__, owner if obj is None else obj)


class LTM:
    """Base class of Labeled Transition Models: a state, and a machine when it has children.

    Class attributes:
      name         `^[a-z][a-z0-9_]*$`, may hold `{field}` placeholders for parameterised
                   states (`processing_{file_id}`); defaults to the snake_cased class name
      init         child states queued when this machine has executed
      transitions  `{"from": Cls or iterable, "label": str, "to": Cls or iterable,
                   "namespace": optional str}`
    `init` and `transitions` may be zero-argument callables (lambdas) for forward references;
    they are then checked on first use instead of at class creation.

    Instance attributes: `name`, `fqn`, `params`, `error`, and the read-only `root`, `parent`,
    `status`, `state`, `id`, `children`.
    """

    name: str = "ltm"
    init: Any = ()
    transitions: Any = ()
    placeholders: tuple[str, ...] = ()
    _ltm_definition: ClassVar[Definition | None] = None  # read from each class's own __dict__
    _ltm_tree_checked: ClassVar[bool] = False

    fqn: str
    params: dict[str, Any]
    error: str | None
    _runtime: Runtime | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = snake_case(cls.__name__)
        name = cls.name
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(
            PLACEHOLDER_PATTERN.sub("x", name)
        ):
            raise InvalidDefinition(
                f"{cls.__qualname__}: name {name!r} must match ^[a-z][a-z0-9_]*$ "
                "(with optional {field} placeholders)"
            )
        cls.placeholders = tuple(PLACEHOLDER_PATTERN.findall(name))
        if not (is_lazy(cls.init) or is_lazy(cls.transitions)):
            cls.definition()

    @classmethod
    def definition(cls) -> Definition:
        """The checked definition of this class (resolved once, on first use when lazy)."""
        found = cls.__dict__.get("_ltm_definition")
        if found is None:
            found = resolve(cls)
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
        self.params = copy.deepcopy(dict(params))
        self.fqn = f"{parent.fqn}.{name}" if parent is not None else name
        self.error = None
        self._parent = parent
        self._root: LTM = parent._root if parent is not None else self
        self._children: dict[str, LTM] = {}
        self._state: dict[str, Any] = {}
        self._status = "init"
        # Meaningful on the root only.
        self._id: str | None = None
        self._runtime = None
        self._buffer: EffectBuffer | None = None
        self._start_called = False

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
        """One of `STATUSES`; changed only by the planner."""
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
        return MappingProxyType(self._children)

    def child_class(self, state: str | type[LTM]) -> type[LTM]:
        """The child state class for a class, declared name or existing instance name."""
        children = type(self).definition().children
        if isinstance(state, type):
            if state in children.values():
                return state
        elif state in children:
            return children[state]
        elif state in self._children:
            return type(self._children[state])
        raise KeyError(f"{self.fqn} has no child state {state!r}")

    def child(self, state: str | type[LTM], params: Mapping[str, Any] | None = None) -> LTM:
        """The child instance for `state`, created on first use (parameterised states need
        `params` to name the instance)."""
        if isinstance(state, str) and state in self._children:
            return self._children[state]
        cls = self.child_class(state)
        if cls.placeholders and params is None:
            raise KeyError(f"{self.fqn}: {cls.name!r} is parameterised, pass params")
        params = params if cls.placeholders and params is not None else {}
        name = format_name(cls.name, params) if cls.placeholders else cls.name
        if name not in self._children:
            self._children[name] = cls._make_child(self, name, params)
        return self._children[name]

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
        for child in list(self._children.values()):
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
            buffer.updates.append((self.fqn, copy.deepcopy(items)))
        elif self._root._start_called or self._root._id is not None:
            raise RuntimeError("update_state() outside run() after start(): nothing would store it")
        self._state.update(copy.deepcopy(items))

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
        from .ltm_plan import TransitionCall, find_moves

        buffer = self._root._buffer
        if buffer is None:
            raise RuntimeError("transition() is for run(); operators use plan_transition()")
        call = TransitionCall(
            caller_fqn=self.fqn,
            label=label,
            payload=copy.deepcopy(dict(payload or {})),
            params=normalise_params(params),
            namespace=namespace or self.default_namespace(),
        )
        if not find_moves(self._root, call):
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
        result = list(root._runtime.atomic_state_append(self, key, value, index))
        self._state[key] = copy.deepcopy(result)
        root._buffer.appended[(self.fqn, key)] = copy.deepcopy(result)
        return result

    def start(self, /, **payload: Any) -> str:
        """Start this root machine once: its runtime queues its execution with `payload`.
        Returns the run id (also `self.id`)."""
        if self._parent is not None:
            raise RuntimeError(f"start() is for the root machine, not {self.fqn}")
        if self._start_called or self._id is not None or self._status != "init":
            raise RuntimeError(f"{self.fqn} was already started")
        self._start_called = True
        if self._runtime is None:
            from .ltm_runtime import get_default_runtime

            self._runtime = get_default_runtime()
        self._id = self._runtime.start(self, dict(payload))
        return self._id

    # -- diagrams ----------------------------------------------------------------------

    @_class_or_instance_method
    def graph(target: type[LTM] | LTM) -> Graph:
        """Diagram data: of the definition on the class, with statuses on an instance."""
        from .graph import ltm_graph

        return ltm_graph(target)

    @_class_or_instance_method
    def to_dot(target: type[LTM] | LTM) -> str:
        """Graphviz DOT text of `graph()`."""
        from .graph import ltm_graph, to_dot

        return to_dot(ltm_graph(target))


def _merge_update(update: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    parts = [update] if isinstance(update, Mapping) else list(update)
    merged: dict[str, Any] = {}
    for part in parts:
        if not isinstance(part, Mapping) or not all(isinstance(k, str) for k in part):
            raise TypeError(f"state updates are dicts with str keys, got {part!r}")
        merged.update(part)
    return merged


# -- registry of root machines ---------------------------------------------------------

_registry: dict[str, type[LTM]] = {}
_Cls = TypeVar("_Cls", bound=type[LTM])


def register(cls: _Cls) -> _Cls:
    """Register a root LTM class by name (usable as a decorator); checks its whole tree."""
    check_tree(cls)
    if cls.placeholders:
        raise InvalidDefinition(f"{cls.__qualname__}: a root cannot be parameterised")
    other = _registry.get(cls.name)
    if other is not None and other is not cls:
        raise InvalidDefinition(
            f"{cls.__qualname__}: root name {cls.name!r} is taken by {other.__qualname__}"
        )
    _registry[cls.name] = cls
    return cls


def unregister(cls: type[LTM]) -> None:
    """Forget a registered root class (tests, reloads)."""
    if _registry.get(cls.name) is cls:
        del _registry[cls.name]


def ltm_registry() -> dict[str, type[LTM]]:
    """Registered root classes by name (a copy)."""
    return dict(_registry)


def root_classes(classes: Iterable[type[LTM]]) -> list[type[LTM]]:
    """The classes of `classes` (say, those found in apps' `ltms.py`) that no other class of
    them names as a child: the ones to `register`."""
    pool = list(classes)
    referenced = {
        child for cls in pool for child in cls.definition().children.values() if child is not cls
    }
    return [cls for cls in pool if cls not in referenced]


# The runtime side lives in sibling modules that import this one; re-export it lazily.
_REEXPORTS = {
    "ltm_plan": [
        "EffectBuffer",
        "Effects",
        "InstanceRecord",
        "Plan",
        "TransitionCall",
        "apply_records",
        "build_tree",
        "dump_tree",
        "execute",
        "find_moves",
        "plan",
        "plan_start",
        "plan_transition",
    ],
    "ltm_runtime": ["InMemoryRuntime", "Runtime", "get_default_runtime", "set_default_runtime"],
}


def __getattr__(name: str) -> Any:
    for module, names in _REEXPORTS.items():
        if name in names:
            return getattr(importlib.import_module(f"{__package__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
