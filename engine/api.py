"""THE door of the engine: every service function for flows, routines and LTM runs.

The studio's pages, the REST API and the tests call these (and read `engine.models`);
nothing else changes a flow's or a run's state from outside the runners. Each function checks
that the user may act on the object (`engine.access`: its owner, or an operator), that the
action fits the object's state (the slices' status tables), and writes with a compare-and-set
and an event naming the acting user. A call that does not fit raises `FlowStateError` with a
message the user can act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine import dbpool as _dbpool
from engine import diagram as _diagram
from engine.access import is_operator as can_see_all
from engine.core.errors import FlowStateError, StaleFlowError
from engine.core.flows import script as script_registry
from engine.core.flows.retry import LIMITS as RETRY_LIMITS
from engine.core.graph.extract import ltm_graph, routine_graph
from engine.core.ltm.definition import classes_of as ltm_classes
from engine.core.ltm.registry import ltm_registry
from engine.core.ltm.view import RunView
from engine.diagram import DiagramUnavailable
from engine.flows.bulk import (
    BULK_ACTIONS,
    BulkPreview,
    preview_bulk,
    refusals_out,
    start_bulk,
    visible_bulk_actions,
)
from engine.flows.bulk import MAX_FLOWS as MAX_BULK_FLOWS
from engine.flows.health import holder as flow_holder
from engine.flows.health import plan as housekeeping_plan
from engine.flows.humans import (
    DecisionForm,
    input_form_of,
    is_decision,
    json_schema,
    may_answer,
    notifications_of,
    script_schema,
    sees_results,
    unread_count,
    unread_counts,
    waiting_for,
)
from engine.flows.queries import (
    COUNT_LIMIT,
    FlowCount,
    FlowFilter,
    KeysetPage,
    count_listed,
    count_upto,
    cursor_of,
    filter_flows,
    filter_from_json,
    keyset_page,
    parse_filter,
)
from engine.flows.queries import ORDER as FLOW_ORDER
from engine.flows.queries import narrow as narrow_flows
from engine.flows.retries import retry_status, step_policy
from engine.flows.routines import (
    RoutineStepError,
    StaleRoutineError,
    can_edit_routine,
    create_checked_routine,
    create_routine,
    step_problems,
    update_routine,
    validate_steps,
    visible_routines,
)
from engine.flows.schedules import (
    MISSED_COUNTED,
    StaleScheduleError,
    create_schedule,
    delete_schedule,
    due_times,
    fire_schedules,
    pause_schedule,
    resume_schedule,
    time_zones,
    update_schedule,
    validate_cron,
    validate_time_zone,
    visible_schedules,
)
from engine.flows.schedules import describe as describe_cron
from engine.flows.schedules import upcoming as upcoming_runs
from engine.flows.service import (
    available_actions,
    can_operate,
    can_see_flow,
    give_up,
    kill_flow,
    latest_events,
    move_to,
    push_input,
    read_flow,
    recheck_waiting,
    results_for_display,
    resume,
    retry,
    skip,
    start_flow,
    visible_flows,
)
from engine.flows.status import ACTIONS, ACTIVE, FINISHED, FlowState
from engine.flows.sweep import sweep
from engine.flows.versions import (
    DiffRow,
    DiffStep,
    NoSuchVersion,
    VersionDiff,
    VersionMove,
    change_version,
    get_version,
    map_position,
    plan_version_move,
    routine_versions,
    version_diff,
    version_steps,
)
from engine.housekeeping import run_housekeeping
from engine.jsonsafe import (
    MAX_ID,
    NotJSON,
    check_text,
    ensure_json,
    parse_id,
    storable_text,
    text_problem,
)
from engine.jsonsafe import loads as load_json
from engine.ltm.service import (
    can_operate_ltm,
    fire_transition,
    kill_ltm,
    load_ltm,
    retry_ltm,
    start_ltm,
    visible_ltm_runs,
)
from engine.ltm.timemachine import copy_ltm, ltm_at, rollback_ltm
from engine.rows import cursor_for, model_from_row

__all__ = [
    "BULK_ACTIONS",
    "MAX_BULK_FLOWS",
    "BulkPreview",
    "FlowFilter",
    "KeysetPage",
    "COUNT_LIMIT",
    "FLOW_ORDER",
    "FlowCount",
    "count_listed",
    "count_upto",
    "cursor_of",
    "keyset_page",
    "filter_flows",
    "filter_from_json",
    "narrow_flows",
    "parse_filter",
    "preview_bulk",
    "refusals_out",
    "start_bulk",
    "visible_bulk_actions",
    "RETRY_LIMITS",
    "flow_holder",
    "housekeeping_plan",
    "retry_status",
    "step_policy",
    "ACTIONS",
    "ACTIVE",
    "MAX_ID",
    "DiagramUnavailable",
    "NotJSON",
    "busy_message",
    "check_text",
    "ensure_json",
    "is_pool_timeout",
    "load_json",
    "ltm_diagram",
    "ltm_classes",
    "ltm_roots",
    "parse_id",
    "routine_diagram",
    "script",
    "scripts",
    "text_problem",
    "FINISHED",
    "FlowState",
    "FlowStateError",
    "RoutineStepError",
    "StaleFlowError",
    "StaleRoutineError",
    "MISSED_COUNTED",
    "StaleScheduleError",
    "create_schedule",
    "delete_schedule",
    "describe_cron",
    "due_times",
    "fire_schedules",
    "pause_schedule",
    "resume_schedule",
    "time_zones",
    "upcoming_runs",
    "update_schedule",
    "validate_cron",
    "validate_time_zone",
    "visible_schedules",
    "DiffRow",
    "DiffStep",
    "NoSuchVersion",
    "VersionDiff",
    "VersionMove",
    "change_version",
    "get_version",
    "map_position",
    "plan_version_move",
    "routine_versions",
    "version_diff",
    "version_steps",
    "available_actions",
    "can_edit_routine",
    "can_operate",
    "can_operate_ltm",
    "can_see_all",
    "can_see_flow",
    "DecisionForm",
    "input_form_of",
    "is_decision",
    "json_schema",
    "may_answer",
    "notifications_of",
    "run_housekeeping",
    "script_schema",
    "sees_results",
    "unread_count",
    "unread_counts",
    "waiting_for",
    "create_checked_routine",
    "create_routine",
    "copy_ltm",
    "cursor_for",
    "fire_transition",
    "give_up",
    "kill_flow",
    "kill_ltm",
    "load_ltm",
    "latest_events",
    "ltm_at",
    "model_from_row",
    "move_to",
    "push_input",
    "read_flow",
    "recheck_waiting",
    "results_for_display",
    "resume",
    "retry",
    "retry_ltm",
    "rollback_ltm",
    "skip",
    "start_flow",
    "start_ltm",
    "step_problems",
    "storable_text",
    "sweep",
    "update_routine",
    "validate_steps",
    "visible_flows",
    "visible_ltm_runs",
    "visible_routines",
]


# --- for the studio's pages -------------------------------------------------------------------
# Thin doors over what the engine already has, so that the studio (its pages, live updates and
# REST API) imports no engine module but this one, `engine.models` and `engine` itself.


def scripts() -> dict[str, dict[str, Any]]:
    """Every registered Task script by name, as the palette shows it (label, doc, blocking,
    input fields, ...)."""
    return {name: script_registry.describe(cls) for name, cls in script_registry.registry().items()}


def script(name: str) -> dict[str, Any] | None:
    """What the palette shows of the script registered as `name`; None if there is none."""
    cls = script_registry.registry().get(name)
    return script_registry.describe(cls) if cls is not None else None


def ltm_roots() -> dict[str, Any]:
    """The registered root LTM classes by name: the LTMs a run may be started from."""
    return ltm_registry()


def routine_diagram(
    steps: Sequence[tuple[str, str]],
    current: int | None = None,
    states: Sequence[str | None] | None = None,
    title: str = "routine",
) -> str:
    """The SVG diagram of a routine's `(label, script)` steps, `current` highlighted and each
    step coloured by its status in `states`; a script's box shows whether it blocks (one not
    registered is drawn as blocking). Raises `DiagramUnavailable` without Graphviz."""
    known = script_registry.registry()
    drawn = [
        (label, script, getattr(known.get(script), "blocking", True)) for label, script in steps
    ]
    return _diagram.render_graph(routine_graph(drawn, current, states, title=title))


def ltm_diagram(target: Any) -> str:
    """The SVG diagram of an LTM class (its definition) or of a run as `load_ltm` returns it
    (coloured by status). Raises `DiagramUnavailable` without Graphviz."""
    graph = target.graph() if isinstance(target, RunView) else ltm_graph(target)
    return _diagram.render_graph(graph)


def is_pool_timeout(exc: BaseException) -> bool:
    """Whether a database error means no connection of this process's pool became free."""
    return _dbpool.is_pool_timeout(exc)


def busy_message() -> str:
    """What a caller is told when no database connection became free in time."""
    return _dbpool.busy_message()
