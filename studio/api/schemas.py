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
from typing import Annotated, Any

from ninja import Field, Schema
from pydantic import AfterValidator, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

from engine.api import ensure_json

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


class StepIn(InputSchema):
    script: Text = Field(..., min_length=1, max_length=100, description="a registered script")
    label: Text = Field(default="", max_length=200)
    params: JsonObject = Field(default_factory=dict)


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


class MoveIn(InputSchema):
    position: int = Field(
        ..., strict=True, ge=0, le=1_000_000, description="0-based step to run from"
    )
    reason: Text = Field(default="", max_length=500)
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
        "`kill`, `resume` the flow's state admits (an assignee who is not the owner: `input`)",
    )
    events: list[EventOut]
    events_truncated: bool


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
    count: int
    limit: int
    offset: int
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
