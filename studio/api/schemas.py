"""Request and response shapes of the REST API; the OpenAPI schema is derived from them.

Every number a client sends is bounded (ids fit a database integer, pages are capped) and
every string is limited and free of NUL characters and lone surrogates, so no input reaches
the database in a form it refuses: bad input is a 400, never a server error. Integers in
request bodies are strict: a JSON integer, never a boolean, a string of digits or a float
(``true`` is not step 1 and ``"6"`` is not routine 6); an event's number in a path is
digits only (``PathInt``: not ``6.0``, ``+6`` or ``6_000``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import AfterValidator, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

from engine.api import BULK_ACTIONS, MAX_BULK_FLOWS, FlowState, ensure_json

MAX_ID = 2**63 - 1  # the largest id a database integer column holds
MAX_LIMIT = 200  # largest page of a listing
DEFAULT_LIMIT = 50


def _no_nul(value: Any) -> Any:
    """Refuse what no database stores alike (`engine.jsonsafe`): NUL characters and lone
    surrogates in any string or key, NaN and Infinity, JSON nested too deeply."""
    ensure_json(value)
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
JsonValue = Annotated[Any, AfterValidator(_no_nul)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_no_nul)]
Version = Annotated[int | None, Field(None, strict=True, ge=0, le=MAX_ID)]


def _digits(value: Any) -> Any:
    """A number in a path as a client writes one: ASCII digits only. Pydantic alone would
    also read ``6.0``, ``+6``, `` 6`` and ``6_000`` as integers."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise PydanticCustomError("int_parsing", "Input should be a valid integer (digits only)")
    return value


PathInt = Annotated[int, BeforeValidator(_digits)]


class InputSchema(Schema):
    """Request bodies refuse fields they do not know, so a typo is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")


class Message(Schema):
    detail: str


# --- scripts and LTMs ---------------------------------------------------------------------------


class ScriptOut(Schema):
    name: str
    label: str
    doc: str
    blocking: bool
    rerunnable: bool
    checks_while_waiting: bool
    input_fields: list[str]
    has_input_form: bool = Field(..., description="the script declares an `input_form`")
    handles_timeout: bool = Field(
        ..., description="the script defines `on_timeout()` (else a passed deadline fails the flow)"
    )
    input_schema: dict[str, Any] | None = Field(
        ...,
        description="JSON Schema of the input its waiting step takes (from its `input_form`, "
        "or an object of its `input_fields`); null when it takes any JSON value",
    )


class LtmOut(Schema):
    name: str
    doc: str
    states: list[str]
    labels: list[str]


# --- routines -----------------------------------------------------------------------------------


RETRY_OVERRIDES = (
    "this step's own retry settings and time limit, over its script's: any of `retries`, "
    "`retry_delay`, `retry_backoff`, `retry_max_delay`, `retry_jitter` (numbers) and "
    "`time_limit` (seconds, or null for none); a setting left out is the script's"
)


class StepIn(InputSchema):
    script: Text = Field(..., min_length=1, max_length=100, description="a registered script")
    label: Text = Field(default="", max_length=200)
    params: JsonObject = Field(default_factory=dict)
    key: Text = Field(
        default="",
        max_length=32,
        description="the step's identity across versions (letters, digits, - and _); a new "
        "one when empty",
    )
    overrides: JsonObject = Field(default_factory=dict, description=RETRY_OVERRIDES)


class RoutineIn(InputSchema):
    name: Text = Field(..., min_length=1, max_length=200)
    description: Text = Field(default="", max_length=10_000)
    steps: list[StepIn] = Field(..., min_length=1, max_length=500)


class RoutineUpdate(RoutineIn):
    version: Version = None


class StepOut(Schema):
    order: int
    name: str
    script: str
    label: str
    params: dict[str, Any]
    key: str = Field(..., description="the step's identity across versions")
    overrides: dict[str, Any] = Field(..., description=RETRY_OVERRIDES)


class RoutineOut(Schema):
    id: int
    name: str
    description: str
    owner: str | None
    version: int
    created: datetime
    updated: datetime
    steps: list[StepOut]


# --- flows ------------------------------------------------------------------------------------


class FlowStartIn(InputSchema):
    routine: int = Field(..., strict=True, ge=1, le=MAX_ID)
    data: JsonObject = Field(default_factory=dict)


class InputIn(InputSchema):
    data: JsonValue = Field(..., description="the input the waiting step receives")
    version: Version = None


EDIT_DATA = (
    "edits the flow's data before the step runs again: the whole new data (a JSON object); "
    "the change is recorded, as a diff, in the override's event"
)
EDIT_PARAMS = (
    "edits the params of the step that runs again (for a move: the step moved to): the "
    "whole new params (a JSON object), recorded as a diff like `data`"
)


class MoveIn(InputSchema):
    position: int = Field(
        ..., strict=True, ge=0, le=1_000_000, description="0-based step to run from"
    )
    reason: Text = Field(default="", max_length=500)
    data: JsonObject | None = Field(default=None, description=EDIT_DATA)
    params: JsonObject | None = Field(default=None, description=EDIT_PARAMS)
    version: Version = None


class RerunIn(InputSchema):
    """A retry or resume: why, and edits of the flow's data and the step's params first."""

    reason: Text = Field(default="", max_length=500)
    data: JsonObject | None = Field(default=None, description=EDIT_DATA)
    params: JsonObject | None = Field(default=None, description=EDIT_PARAMS)
    version: Version = None


class ReasonIn(InputSchema):
    reason: Text = Field(default="", max_length=500)
    version: Version = None


class VersionIn(InputSchema):
    version: Version = None


class EventOut(Schema):
    seq: int
    kind: str
    actor: str | None
    state: str
    position: int
    message: str
    data: Any
    created: datetime


class RetryOut(Schema):
    attempt: int = Field(..., description="the attempt due (2 on the first retry)")
    attempts: int = Field(..., description="how many attempts the step's visit gets in all")
    at: datetime = Field(..., description="when it is due")


class HolderOut(Schema):
    worker: str = Field(..., description="the consumer process's worker id")
    host: str
    pid: int
    started: datetime = Field(..., description="when the process started beating")
    beat: datetime = Field(..., description="its last heartbeat")
    age: float = Field(..., description="seconds since that beat (on the database's clock)")
    alive: bool = Field(..., description="false once it has not beaten for the worker timeout")
    thread: str | None = Field(..., description="its thread performing the step, as last beaten")
    since: datetime | None = Field(..., description="since when that thread holds the flow")
    holds: bool = Field(..., description="whether its last beat listed the flow")


class PlanItem(Schema):
    at: datetime | None = Field(..., description="when; null for a standing rule or a fact")
    what: str = Field(..., description="what the housekeeping does, in words")


class FlowOut(Schema):
    id: int
    routine: int
    routine_name: str
    routine_version: int
    owner: str
    state: str
    position: int
    length: int
    wait_reason: str
    error: str
    version: int
    seq: int
    created: datetime
    updated: datetime
    finished: datetime | None
    deadline: datetime | None = Field(
        ..., description="when the current wait times out; null without a deadline or wait"
    )
    attempt: int = Field(
        ..., description="the attempt of the current step's visit (1 on the first)"
    )
    retry: RetryOut | None = Field(
        ..., description="while the flow is `retrying`: its next attempt, of how many, and when"
    )
    step_deadline: datetime | None = Field(
        ...,
        description="when the running attempt passes its step's time limit (it then fails "
        'with "took longer than N s"); null without a limit or a running step',
    )


class Assignees(Schema):
    users: list[str] = Field(..., description="usernames assigned to the current wait")
    groups: list[str] = Field(..., description="names of the groups assigned to it")


INPUT_SCHEMA = (
    "JSON Schema of the input the waiting step takes (`data` of POST .../input); null when "
    "the flow is not waiting or its step takes any JSON value"
)
ASSIGNEES = (
    "who may answer the current wait (besides operators); both empty when nobody is assigned "
    "(then the owner answers) or the flow is not waiting"
)


class FlowDetail(FlowOut):
    steps: list[dict[str, Any]]
    data: dict[str, Any]
    results: list[Any] | None = Field(
        ..., description="each step's result; null when hidden from you (`results_hidden`)"
    )
    results_hidden: bool = Field(
        ...,
        description="true for an assignee of a step whose script hides earlier results: "
        "`results` is null and the events carry no results or inputs",
    )
    traceback: str
    input_schema: dict[str, Any] | None = Field(..., description=INPUT_SCHEMA)
    assignees: Assignees = Field(..., description=ASSIGNEES)
    actions: list[str] = Field(
        ...,
        description="what you may do now: `input` and the overrides `move`, `retry`, `skip`, "
        "`kill`, `resume`, `give_up` the flow's state admits (an assignee who is not the "
        "owner: `input`)",
    )
    events: list[EventOut]
    events_truncated: bool
    holder: HolderOut | None = Field(
        ...,
        description="who performs the running step: its worker, thread and last heartbeat "
        "(operators only; null otherwise, and when no step runs)",
    )
    housekeeping: list[PlanItem] | None = Field(
        ...,
        description="what the housekeeping will do with the flow and when (operators only; "
        "null otherwise)",
    )


class WaitingOut(FlowOut):
    input_schema: dict[str, Any] | None = Field(..., description=INPUT_SCHEMA)
    assignees: Assignees = Field(..., description=ASSIGNEES)


class WaitingPage(Schema):
    count: int
    limit: int
    offset: int
    items: list[WaitingOut]


class NotificationOut(Schema):
    id: int
    flow: int
    wait_number: int = Field(..., description="which wait of the flow it is about")
    kind: str = Field(..., description="`waiting` (a wait began) or `reminder` (deadline soon)")
    message: str
    created: datetime
    cleared: datetime | None = Field(
        ..., description="when the wait was answered or ended; null while it is open (unread)"
    )


class NotificationPage(Schema):
    count: int
    limit: int
    offset: int
    unread: int = Field(..., description="how many of your notifications are still open")
    items: list[NotificationOut]


class FlowPage(Schema):
    count: int = Field(
        ..., description="how many flows match, counted up to 10,000 (see count_capped)"
    )
    count_capped: bool = Field(
        False,
        description="true when more flows may match than `count` says: the count stopped, or "
        "was not made (`count_estimate`)",
    )
    count_estimate: int | None = Field(
        None,
        description=(
            "set when the flows were not counted, counting them would have read too many: "
            "the database's statistics expect about this many (two significant figures; "
            "`count` is then the limit and `count_capped` true). An estimate, which stale "
            "statistics can make wrong; null when the flows were counted"
        ),
    )
    limit: int
    offset: int
    next: str | None = Field(
        None, description="the cursor of the next page (pass it as `cursor`); null at the end"
    )
    items: list[FlowOut]


class EventPage(Schema):
    flow: int
    since: int
    seq: int = Field(..., description="the flow's latest sequence number")
    more: bool = Field(..., description="true when more events follow the last one given")
    events: list[EventOut]


# --- tokens -----------------------------------------------------------------------------------


class TokenIn(InputSchema):
    name: Text = Field(..., min_length=1, max_length=100)


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    created: datetime
    last_used: datetime | None
    revoked: bool


class TokenCreated(TokenOut):
    token: str = Field(..., description="the raw token: shown this once, store it now")


class RoutinePage(Schema):
    count: int
    limit: int
    offset: int
    items: list[RoutineOut]


# --- LTM runs ---------------------------------------------------------------------------------


class LtmStartIn(InputSchema):
    ltm: Text = Field(..., min_length=1, max_length=200, description="a registered LTM's name")
    payload: JsonObject = Field(default_factory=dict, description="handed to the root's run()")


class TransitionIn(InputSchema):
    label: Text = Field(..., min_length=1, max_length=200)
    payload: JsonObject = Field(default_factory=dict)
    namespace: Text | None = Field(default=None, max_length=500)
    params: list[JsonObject] | None = Field(
        default=None, max_length=1000, description="one item per parameterised target instance"
    )


class LtmKillIn(InputSchema):
    reason: Text = Field(default="", max_length=500)


class LtmInstanceOut(Schema):
    fqn: str
    status: str
    state: Any
    params: Any
    error: str


class LtmRollbackIn(InputSchema):
    seq: int = Field(
        ...,
        strict=True,
        ge=0,
        le=MAX_ID,
        description="the event to go back to: the run becomes what it was right after it "
        "(one of `history_from` to the run's `seq`)",
    )
    reason: Text = Field(
        ..., min_length=1, max_length=500, description="why: kept with the rollback event"
    )
    discard_running: bool = Field(
        default=False,
        strict=True,
        description="confirm that the outcome of an execution running now is thrown away "
        "(without it, a running execution makes the rollback a 409)",
    )
    expected_seq: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=MAX_ID,
        description="the run's `seq` when you looked: 409 if it moved on since",
    )


class LtmCopyIn(InputSchema):
    seq: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=MAX_ID,
        description="the event to copy the run as it was right after (default: its latest)",
    )


class LtmInstanceAt(LtmInstanceOut):
    name: str
    entry: int = Field(..., description="which visit of the state this is")


class LtmEventOut(Schema):
    seq: int
    kind: str
    fqn: str
    actor: str | None
    state: str
    data: Any
    created: datetime


class LtmRunOut(Schema):
    id: str
    ltm: str
    owner: str | None
    state: str
    error: str
    version: int
    seq: int
    created: datetime
    updated: datetime
    finished: datetime | None


class LtmRunDetail(LtmRunOut):
    history_from: int = Field(..., description="the run's first event that can be looked at")
    global_state: Any
    instances: list[LtmInstanceOut]
    events: list[LtmEventOut]
    events_truncated: bool


class LtmRunAt(Schema):
    id: str
    ltm: str
    seq: int = Field(..., description="the event asked for")
    at: int = Field(..., description="the last event of the write that holds `seq`")
    state: str = Field(..., description="the run's state then")
    error: str = Field(..., description="the run's error then")
    global_state: Any = Field(..., description="the global state then")
    instances: list[LtmInstanceAt] = Field(..., description="every state then, by fqn")
    history_from: int = Field(..., description="the first event that can be looked at")
    latest: int = Field(..., description="the run's latest event (its `seq` now)")


class LtmRunPage(Schema):
    count: int
    limit: int
    offset: int
    items: list[LtmRunOut]


class LtmEventPage(Schema):
    run: str
    since: int
    seq: int
    more: bool
    events: list[LtmEventOut]


# --- routine versions -----------------------------------------------------------------------


class VersionStepOut(Schema):
    key: str = Field(..., description="the step's identity, kept across versions")
    label: str
    name: str = Field(..., description="its label, or its script's label without one")
    script: str
    params: dict[str, Any]
    overrides: dict[str, Any] = Field(..., description="its retry settings over its script's")


class VersionOut(Schema):
    number: int
    name: str
    description: str
    author: str | None
    created: datetime
    step_count: int


class VersionDetail(VersionOut):
    steps: list[VersionStepOut]


class VersionList(Schema):
    routine: int
    current: int = Field(..., description="the routine's current version")
    items: list[VersionOut] = Field(..., description="newest first")


class DiffStepOut(VersionStepOut):
    position: int = Field(..., description="0-based, in its version")


class DiffRowOut(Schema):
    left: DiffStepOut | None = Field(..., description="the step in `a`; null when added")
    right: DiffStepOut | None = Field(..., description="the step in `b`; null when removed")
    kind: str = Field(..., description="`added`, `removed`, `changed` or `same`")
    changes: list[str] = Field(
        ...,
        description="of `added`, `removed`, `moved`, `label`, `script`, `params`, `overrides`",
    )
    params_changed: list[str] = Field(..., description="the names of the params that differ")


class DiffSummary(Schema):
    added: list[str]
    removed: list[str]
    moved: list[str]
    changed: list[str]


class VersionDiffOut(Schema):
    routine: int
    a: int
    b: int
    name: list[str] | None = Field(..., description="[a's, b's] when the name changed")
    description: list[str] | None = Field(..., description="[a's, b's] when it changed")
    changed: bool
    summary: DiffSummary = Field(..., description="the names of the steps, by change")
    rows: list[DiffRowOut] = Field(
        ..., description="in `b`'s order, steps aligned by key (by position without keys)"
    )


class ChangeVersionIn(InputSchema):
    version: int = Field(
        ..., strict=True, ge=1, le=MAX_ID, description="the routine version to move the flow onto"
    )
    position: int | None = Field(
        None,
        strict=True,
        ge=0,
        le=1_000_000,
        description="0-based step of that version to go on at; by default the step with the "
        "identity of the flow's current step (409 when it has none)",
    )
    reason: Text = Field(default="", max_length=500)
    flow_version: Version = Field(
        None, description="the flow `version` you saw: 409 if the flow changed since"
    )


# --- schedules ----------------------------------------------------------------------------------

CRON = (
    "five fields: minute hour day-of-month month day-of-week (e.g. `0 9 * * 1-5`), or "
    "@hourly, @daily, @weekly, @monthly, @yearly; no seconds or years"
)


# Optional text with its limits checked as text (a limit on `Text | None` reads as a list's).
ScheduleName = Annotated[str, Field(max_length=200), AfterValidator(_no_nul)]
CronText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
ZoneName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_no_nul)]
Username = Annotated[str, Field(max_length=150), AfterValidator(_no_nul)]


class ScheduleIn(InputSchema):
    routine: int = Field(..., strict=True, ge=1, le=MAX_ID, description="a routine you may see")
    cron: Text = Field(..., min_length=1, max_length=200, description=CRON)
    timezone: Text = Field(
        "UTC", min_length=1, max_length=64, description="IANA time zone the cron follows"
    )
    data: JsonObject = Field(default_factory=dict, description="the data each flow starts with")
    name: Text = Field(default="", max_length=200)
    owner: Username | None = Field(
        None, description="the username whose flows they are (operators only); by default you"
    )


class ScheduleUpdate(InputSchema):
    """What is given changes; what is left out stays. A new cron or time zone, or resuming,
    computes the next run from now: due times missed while paused do not start."""

    name: ScheduleName | None = None
    cron: CronText | None = Field(None, description=CRON)
    timezone: ZoneName | None = None
    data: JsonObject | None = None
    paused: bool | None = Field(None, strict=True, description="true pauses, false resumes")


class ScheduleRunOut(Schema):
    due: datetime = Field(..., description="the due time it started for (UTC)")
    missed: int = Field(
        ..., description="earlier due times this catch-up skipped (counted up to 1000)"
    )
    flow: int | None = Field(..., description="the flow it started; null if none could start")
    flow_state: str | None
    error: str = Field(..., description="why no flow started")
    created: datetime


class ScheduleOut(Schema):
    id: int
    name: str
    routine: int
    routine_name: str
    owner: str
    cron: str
    description: str = Field(..., description="the cron expression in words")
    timezone: str
    data: dict[str, Any]
    paused: bool
    next_run: datetime | None = Field(..., description="the next due time (UTC); null if paused")
    last_run: datetime | None = Field(..., description="the last due time it fired for")
    version: int
    created: datetime
    updated: datetime


class ScheduleDetail(ScheduleOut):
    upcoming: list[datetime] = Field(
        ..., description="the next due times (UTC); a paused one's if it were resumed now"
    )
    runs: list[ScheduleRunOut] = Field(..., description="its latest runs, newest first")


class SchedulePage(Schema):
    count: int
    limit: int
    offset: int
    items: list[ScheduleOut]


# --- bulk actions -----------------------------------------------------------------------------

if TYPE_CHECKING:
    StateName = str  # (a Literal built at run time is no type to a checker)
    BulkActionName = str
else:
    StateName = Literal[tuple(FlowState.values)]
    BulkActionName = Literal[tuple(BULK_ACTIONS)]
FlowIdIn = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]


class BulkFilterIn(InputSchema):
    """The flows of `GET /api/flows` (and of the dashboard) for the same filter; at least
    one criterion."""

    state: StateName | None = None
    routine: int | None = Field(default=None, strict=True, ge=1, le=MAX_ID)
    owner: Text | None = Field(
        default=None, min_length=1, max_length=150, description="username (operators)"
    )
    search: Text | None = Field(
        default=None,
        max_length=200,
        description="in the routine's name and the wait reason, the owner's username, #id",
    )


SELECTION = f"select the flows by `ids` or by `filter`, one of the two: {MAX_BULK_FLOWS:,} at most"


class BulkPreviewIn(InputSchema):
    action: BulkActionName
    ids: list[FlowIdIn] | None = Field(
        default=None, min_length=1, max_length=MAX_BULK_FLOWS, description=SELECTION
    )
    filter: BulkFilterIn | None = Field(default=None, description=SELECTION)
    reason: Text = Field(default="", max_length=500, description="(not needed to preview)")


class BulkIn(BulkPreviewIn):
    reason: Text = Field(
        ..., min_length=1, max_length=500, description="why: kept with each flow's event"
    )


class RefusalOut(Schema):
    reason: str = Field(..., description='why: "killed flows cannot be skipped", ...')
    count: int
    flows: list[int] = Field(..., description="the first flows refused for it (at most 20)")


class BulkPreviewOut(Schema):
    action: str
    total: int = Field(..., description="the flows selected")
    applies: int = Field(..., description="how many of them the action applies to now")
    affected: dict[str, int] = Field(
        ..., description="per state, how many flows in it the action applies to"
    )
    refused_count: int
    refused: list[RefusalOut] = Field(..., description="the flows it refuses, by reason")
    selection: dict[str, Any]


class BulkOut(Schema):
    id: int
    action: str
    reason: str
    selection: dict[str, Any] = Field(..., description="what was asked: ids or a filter")
    state: str = Field(..., description="`queued`, `running`, `done` or `failed`")
    total: int
    processed: int = Field(..., description="flows acted on (or refused) so far")
    succeeded: int
    refused_count: int
    refused: list[RefusalOut]
    error: str
    created: datetime
    finished: datetime | None


class BulkPage(Schema):
    count: int
    limit: int
    offset: int
    items: list[BulkOut]
