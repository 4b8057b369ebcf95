"""The engine's models, for Django's model discovery: each slice defines its own (the flows
slice in `engine.flows.models`, the LTM slice in `engine.ltm.models`, the consumers' heartbeat
rows in `engine.liveness`). Import them from here."""

from engine.flows.models import (
    AuditEntry,
    BulkAction,
    Flow,
    FlowAssignee,
    FlowEvent,
    FlowResult,
    Notification,
    Routine,
    RoutineStep,
    RoutineVersion,
    Schedule,
    ScheduleRun,
    Task,
    validate_script_name,
)
from engine.liveness import Worker
from engine.ltm.models import LtmAppend, LtmCheckpoint, LtmEvent, LtmExecution, LtmInstance, LtmRun

__all__ = [
    "AuditEntry",
    "BulkAction",
    "Flow",
    "FlowAssignee",
    "FlowEvent",
    "FlowResult",
    "LtmAppend",
    "LtmCheckpoint",
    "LtmEvent",
    "LtmExecution",
    "LtmInstance",
    "LtmRun",
    "Notification",
    "Routine",
    "RoutineStep",
    "RoutineVersion",
    "Schedule",
    "ScheduleRun",
    "Task",
    "Worker",
    "validate_script_name",
]
