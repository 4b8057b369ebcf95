"""The engine's settings, read in one place: `settings.FLOWSTUDIO` (see studio/settings.py for
each one, and the environment variables that set them) and Huey's consumer options."""

from __future__ import annotations

from typing import Any

from django.conf import settings


def value(name: str, default: Any = None) -> Any:
    config: dict[str, Any] = getattr(settings, "FLOWSTUDIO", {})
    return config.get(name, default)


def seconds(name: str) -> float:
    """A duration setting, in seconds."""
    return float(value(name))


def script_modules() -> list[str]:
    """Modules holding Task scripts or LTMs beyond installed apps' scripts.py / ltms.py."""
    return list(value("SCRIPT_MODULES", []))


def consumer_options() -> dict[str, Any]:
    """Options of the engine's Huey consumer (workers, polling, periodic tasks)."""
    huey: dict[str, Any] = getattr(settings, "HUEY", {})
    return dict(huey.get("consumer", {}))


def ltm_in_a_row() -> int:
    """How many LTM executions one task runs at most in a row (`executor.execute_execution`):
    a worker goes on with the state its commit queued, then hands the next to the queue."""
    return max(1, int(value("LTM_IN_A_ROW", 50)))


def checkpoint_every() -> int:
    """How many events of an LTM run lie at most between two of its snapshots."""
    return max(1, int(value("LTM_CHECKPOINT_EVERY", 100)))
