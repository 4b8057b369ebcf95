"""The definition side of LTMs: errors, names, and checking `init`/`transitions`.

`LTM.__init_subclass__` calls `resolve` (at class creation, or on first use when `init` or
`transitions` are callables for forward references); the result is a `Definition`. This
module sits below the class it checks: it is handed the class, and never imports it.
"""

from __future__ import annotations

import copy
import re
import warnings
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .node import LTM

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
PLACEHOLDER_PATTERN = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
# Formatted names of parameterised instances: no dots, they would break fqns.
INSTANCE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
TRANSITION_KEYS = frozenset({"from", "label", "to", "namespace"})


class InvalidDefinition(Exception):
    """An LTM class is defined wrongly; the message names the class at fault."""


class InvalidTransition(Exception):
    """`transition()` was called with a label that moves nothing (or with unusable params)."""


class LTMRedefinitionWarning(RuntimeWarning):
    """A root LTM class was defined again under the same module and qualified name: the new
    definition replaced the registered one."""


class LTMDefinitionWarning(UserWarning):
    """An LTM definition is legal but probably not what was meant (unreachable states)."""


def snake_case(class_name: str) -> str:
    """`EndState` -> `end_state`, `MyLTM2` -> `my_ltm2`, `HTTPServer` -> `http_server`."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", class_name)
    return spaced.lower().lstrip("_")


def check_initial_state(cls: type) -> None:
    """`initial_state` must be a dict with str keys (copied into each visit's state)."""
    initial = getattr(cls, "initial_state", {})
    if not isinstance(initial, Mapping) or not all(isinstance(key, str) for key in initial):
        raise InvalidDefinition(
            f"{cls.__qualname__}: initial_state must be a dict with str keys, got {initial!r}"
        )


def format_name(template: str, params: Mapping[str, Any]) -> str:
    """Fill the `{field}` placeholders of a state name from one params item."""

    def fill(match: re.Match[str]) -> str:
        field = match.group(1)
        if field not in params:
            raise InvalidTransition(f"state {template!r} needs param {field!r}, got {params!r}")
        return str(params[field])

    name = PLACEHOLDER_PATTERN.sub(fill, template)
    if not INSTANCE_NAME_PATTERN.fullmatch(name):
        raise InvalidTransition(
            f"params {dict(params)!r} make the state name {name!r}; "
            "use letters, digits, '_' or '-' only"
        )
    return name


@dataclass(frozen=True)
class TransitionDef:
    """One checked entry of `LTM.transitions`."""

    sources: tuple[type[LTM], ...]
    label: str
    targets: tuple[type[LTM], ...]
    namespace: str | None = None


@dataclass(frozen=True)
class Definition:
    """The checked definition of an LTM class: its children keyed by declared name."""

    init: tuple[type[LTM], ...]
    transitions: tuple[TransitionDef, ...]
    children: Mapping[str, type[LTM]]

    @property
    def is_machine(self) -> bool:
        return bool(self.children)


def check_name(cls: type[LTM]) -> tuple[str, ...]:
    """Check the class's `name` (set by the caller) and return its `{field}` placeholders."""
    name = cls.name
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(PLACEHOLDER_PATTERN.sub("x", name)):
        raise InvalidDefinition(
            f"{cls.__qualname__}: name {name!r} must match ^[a-z][a-z0-9_]*$ "
            "(with optional {field} placeholders)"
        )
    return tuple(PLACEHOLDER_PATTERN.findall(name))


def check_reserved(cls: type[LTM], reserved: Iterable[str]) -> None:
    """Refuse a class that defines one of the `reserved` names: the engine calls them, and
    a state's own `execute` or `records` would break its runs."""
    taken = sorted(name for name in reserved if name in cls.__dict__)
    if taken:
        raise InvalidDefinition(
            f"{cls.__qualname__}: {', '.join(taken)} belong to the engine; use other names"
        )


def is_lazy(value: Any) -> bool:
    return callable(value) and not isinstance(value, type)


def _entries(cls: type[LTM], attr: str) -> tuple[Any, ...]:
    value = getattr(cls, attr)
    if is_lazy(value):
        value = value()
    if value is None:
        return ()
    if isinstance(value, type):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(value)
    raise InvalidDefinition(f"{cls.__qualname__}.{attr} must be a list, got {value!r}")


def _classes(value: Any) -> tuple[Any, ...]:
    if isinstance(value, type | str | bytes) or not isinstance(value, Iterable):
        return (value,)
    return tuple(value)


def resolve(cls: type[LTM], base: type[LTM]) -> Definition:
    """Check the definition of `cls`, whose entries must be subclasses of `base` (the `LTM`
    class); raises InvalidDefinition naming `cls`."""
    owner = cls.__qualname__
    children: dict[str, type[LTM]] = {}

    def child(entry: Any, where: str) -> type[LTM]:
        if not (isinstance(entry, type) and issubclass(entry, base)):
            raise InvalidDefinition(f"{owner}: {where} entry {entry!r} is not an LTM subclass")
        other = children.setdefault(entry.name, entry)
        if other is not entry:
            raise InvalidDefinition(
                f"{owner}: two child states are named {entry.name!r} "
                f"({other.__qualname__} and {entry.__qualname__})"
            )
        return entry

    init = tuple(child(entry, "init") for entry in _entries(cls, "init"))
    for state in init:
        if state.placeholders:
            raise InvalidDefinition(
                f"{owner}: init state {state.name!r} is parameterised; "
                "start it with a transition that passes params"
            )
    transitions = []
    for raw in _entries(cls, "transitions"):
        if not isinstance(raw, Mapping):
            raise InvalidDefinition(f"{owner}: transition {raw!r} is not a dict")
        label = raw.get("label")
        if not isinstance(label, str) or not label:
            raise InvalidDefinition(f"{owner}: transition {dict(raw)!r} has no 'label' string")
        unknown = sorted(str(key) for key in raw if key not in TRANSITION_KEYS)
        if unknown:
            raise InvalidDefinition(f"{owner}: transition {label!r} has unknown keys {unknown}")
        for key in ("from", "to"):
            if key not in raw or not _classes(raw[key]):
                raise InvalidDefinition(f"{owner}: transition {label!r} has no {key!r} state")
        namespace = raw.get("namespace")
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise InvalidDefinition(f"{owner}: transition {label!r} has a bad namespace")
        sources = tuple(child(e, f"transition {label!r} 'from'") for e in _classes(raw["from"]))
        targets = tuple(child(e, f"transition {label!r} 'to'") for e in _classes(raw["to"]))
        transitions.append(TransitionDef(sources, label, targets, namespace))

    reachable = set(init).union(*(t.targets for t in transitions))
    unreachable = [name for name, state in children.items() if state not in reachable]
    if unreachable:
        warnings.warn(
            f"{owner}: states {unreachable} can never be reached "
            "(they are in no 'init' and no transition 'to')",
            LTMDefinitionWarning,
            stacklevel=4,  # the class statement, when checked at class creation
        )
    return Definition(init, tuple(transitions), MappingProxyType(children))


# Classes whose whole tree has been checked (weakly: a class defined in a test may go).
_checked_trees: weakref.WeakSet[type] = weakref.WeakSet()


def check_tree(cls: type[LTM], _path: tuple[type[LTM], ...] = ()) -> None:
    """Resolve and check `cls` and every class below it; catches cycles and lazy definitions."""
    if cls in _path:
        chain = " -> ".join(c.__qualname__ for c in (*_path, cls))
        raise InvalidDefinition(f"{cls.__qualname__}: contains itself ({chain})")
    if cls in _checked_trees:
        return
    for child in cls.definition().children.values():
        check_tree(child, (*_path, cls))
    _checked_trees.add(cls)


def classes_of(cls: type[LTM]) -> list[type[LTM]]:
    """`cls` and every class of its tree, each once (a machine may name itself as a child)."""
    seen: dict[type[LTM], None] = {}
    pending = [cls]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen[current] = None
        pending.extend(current.definition().children.values())
    return list(seen)


def normalise_params(
    params: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None,
) -> list[dict[str, Any]] | None:
    """`None`, one dict or an iterable of dicts -> `None` or a list of dict copies."""
    if params is None:
        return None
    items = [params] if isinstance(params, Mapping) else list(params)
    if not all(isinstance(item, Mapping) for item in items):
        raise InvalidTransition(f"params must be a dict or a list of dicts, got {params!r}")
    return [copy.deepcopy(dict(item)) for item in items]
