"""THE door of the engine: every service function for flows, routines and LTM runs.

The studio's pages, the REST API and the tests call these (and read `engine.models`);
nothing else changes a flow's or a run's state from outside the runners. Each function checks
that the user may act on the object (`engine.access`: its owner, or an operator), that the
action fits the object's state (the slices' status tables), and writes with a compare-and-set
and an event naming the acting user. A call that does not fit raises `FlowStateError` with a
message the user can act on.
"""

from __future__ import annotations

from engine.access import is_operator as can_see_all
from engine.core.errors import FlowStateError, StaleFlowError
from engine.flows.routines import (
    RoutineStepError,
    StaleRoutineError,
    can_edit_routine,
    create_checked_routine,
    create_routine,
    update_routine,
    validate_steps,
    visible_routines,
)
from engine.flows.service import (
    available_actions,
    can_operate,
    kill_flow,
    move_to,
    push_input,
    recheck_waiting,
    results_for_display,
    resume,
    retry,
    skip,
    start_flow,
    visible_flows,
)
from engine.flows.status import ACTIONS, FINISHED, FlowState
from engine.flows.sweep import sweep
from engine.ltm.service import (
    can_operate_ltm,
    fire_transition,
    kill_ltm,
    load_ltm,
    retry_ltm,
    start_ltm,
    visible_ltm_runs,
)

__all__ = [
    "ACTIONS",
    "FINISHED",
    "FlowState",
    "FlowStateError",
    "RoutineStepError",
    "StaleFlowError",
    "StaleRoutineError",
    "available_actions",
    "can_edit_routine",
    "can_operate",
    "can_operate_ltm",
    "can_see_all",
    "create_checked_routine",
    "create_routine",
    "fire_transition",
    "kill_flow",
    "kill_ltm",
    "load_ltm",
    "move_to",
    "push_input",
    "recheck_waiting",
    "results_for_display",
    "resume",
    "retry",
    "retry_ltm",
    "skip",
    "start_flow",
    "start_ltm",
    "sweep",
    "update_routine",
    "validate_steps",
    "visible_flows",
    "visible_ltm_runs",
    "visible_routines",
]
