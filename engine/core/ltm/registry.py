"""The registry of root LTM classes, by name: workers find a run's class by the name stored
on the run. It holds classes only, and checks their definitions before taking them."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

from .definition import InvalidDefinition, LTMRedefinitionWarning, check_tree

if TYPE_CHECKING:
    from .node import LTM

_registry: dict[str, type[LTM]] = {}
_Cls = TypeVar("_Cls", bound="type[LTM]")


def register(cls: _Cls) -> _Cls:
    """Register a root LTM class by name (usable as a decorator); checks its whole tree."""
    check_tree(cls)
    if cls.placeholders:
        raise InvalidDefinition(f"{cls.__qualname__}: a root cannot be parameterised")
    other = _registry.get(cls.name)
    if other is not None and other is not cls:
        if _where(other) != _where(cls):
            raise InvalidDefinition(
                f"{_where(cls)}: root name {cls.name!r} is taken by {_where(other)}"
            )
        # The same class defined again (a module reloaded, a class built in a loop or a
        # parametrised test): the new definition replaces the old, as Django does for models.
        warnings.warn(
            f"LTM {cls.name!r} ({_where(cls)}) was already registered; the new definition "
            "replaces it. Runs of it go on with the new definition.",
            LTMRedefinitionWarning,
            stacklevel=2,
        )
    _registry[cls.name] = cls
    return cls


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


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
