"""Flow Studio's workflow engine.

The public API for script and machine authors; importing it needs no Django settings:

    from engine import Task, result, wait, kill, done, LTM
"""

from typing import Any

from engine.core.errors import FlowStateError
from engine.core.flows.script import Task
from engine.core.flows.signals import done, kill, result, wait

__all__ = ["LTM", "FlowStateError", "InvalidTransition", "Task", "done", "kill", "result", "wait"]


def __getattr__(name: str) -> Any:
    # The LTM module is larger; load it when first asked for.
    if name in {"LTM", "InvalidTransition"}:
        from engine.core import ltm

        return getattr(ltm, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
