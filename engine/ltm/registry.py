"""Finding the root LTMs of the project at start-up, and plugging in the Django runtime.

The engine imports every installed app's `ltms.py` and the modules of
`FLOWSTUDIO['SCRIPT_MODULES']`; the LTM classes defined there that no other of them names as
a child state are the roots, registered by name. Every process (server, consumers) does the
same, so a worker finds a run's class by the name stored on the run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from types import ModuleType

from django.apps import apps

from engine import config
from engine.core.ltm.node import LTM
from engine.core.ltm.registry import register, root_classes
from engine.core.ltm.runtime import set_default_runtime


def discovery_modules() -> list[ModuleType]:
    """The imported `ltms` modules of installed apps, and the configured script modules."""
    names = [f"{app.name}.ltms" for app in apps.get_app_configs()]
    names += config.script_modules()
    return [sys.modules[name] for name in names if name in sys.modules]


def classes_in(modules: Iterable[ModuleType]) -> list[type[LTM]]:
    """The public LTM classes defined (not merely imported) in `modules`."""
    found: list[type[LTM]] = []
    for module in modules:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, LTM)
                and value is not LTM
                and not value.__name__.startswith("_")  # private bases of shared behaviour
                and value.__module__ == module.__name__
                and value not in found
            ):
                found.append(value)
    return found


def discover() -> list[type[LTM]]:
    """Register the root classes of the discovery modules; returns them. Raises
    InvalidDefinition when two roots share a name."""
    roots = [cls for cls in root_classes(classes_in(discovery_modules())) if not cls.placeholders]
    for cls in roots:
        register(cls)
    return roots


def setup() -> None:
    """At app start-up: register the roots, and make `MyLtm().start()` store its run in the
    database and execute it on Huey."""
    from engine.ltm.executor import DjangoRuntime

    discover()
    set_default_runtime(DjangoRuntime())
