"""Flow Studio's workflow engine.

The public API for script and machine authors; importing it needs no Django settings:

    from engine import Task, result, wait, kill, done, LTM
"""

from engine.core.errors import FlowStateError
from engine.core.flows.script import Task
from engine.core.flows.signals import done, kill, result, wait
from engine.core.ltm.definition import InvalidTransition
from engine.core.ltm.node import LTM

__all__ = ["LTM", "FlowStateError", "InvalidTransition", "Task", "done", "kill", "result", "wait"]
