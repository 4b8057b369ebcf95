"""Writing a flow: compare-and-set on its version, with its events, in one transaction.

SQLite ignores row locks (`select_for_update` is a no-op there), so every write is an
`UPDATE ... WHERE id = ? AND version = ?` whose row count says whether this writer won.
"""

from __future__ import annotations

import copy
import marshal
from collections.abc import Iterable
from contextlib import nullcontext
from datetime import timedelta
from typing import Any, cast

from django.db import connections, router, transaction
from django.db.models import Field, Model
from django.utils import timezone

from engine import events as engine_events
from engine.flows import humans
from engine.flows.models import Flow, FlowEvent, FlowResult, Routine, RoutineStep, Task
from engine.flows.status import FlowState
from engine.jsonsafe import to_text
from engine.liveness import worker_id
from engine.rows import can_go_direct, convert, cursor_for, db_value, direct, model_from_row

# (kind, {"message":..., "data":..., "actor":...}); "state": the flow's state the event
# records, when not the one the write leaves (a creation that claims the flow as well)
EventSpec = tuple[str, dict[str, Any]]


def _column(meta: Any, name: str) -> Field[Any, Any]:
    """A concrete field (a column) of a model, by name."""
    return cast("Field[Any, Any]", meta.get_field(name))


def _owner_model() -> type[Model]:
    return cast("type[Model]", _FLOW.get_field("owner").related_model)


_FLOW = Flow._meta
_ROUTINE = Routine._meta
_EVENT = FlowEvent._meta
_STEP = RoutineStep._meta
_TASK = Task._meta
_EVENT_FIELDS = ("flow", "seq", "kind", "actor", "state", "position", "message", "data", "created")


def write_flow(
    flow: Flow,
    changes: dict[str, Any],
    events: Iterable[EventSpec] = (),
    *,
    expect_state: str | Iterable[str] | None = None,
    stepping: bool = False,
) -> bool:
    """Apply `changes` to `flow` if nobody wrote it since it was read (same version, and the
    expected state), appending `events` with the next sequence numbers, all in one
    transaction. On success the in-memory `flow` is updated and True returned; otherwise
    nothing is written and False returned. Events are published after the commit.

    `stepping` (a step of a blocking loop): a flow that stays in its state keeps its
    `updated` when that is less than `STEPPING_RESOLUTION` old. Every list of flows is ordered
    by `updated`, so five of the flow's indexes hold it: written at every step, each step
    rewrote them all. A list, or a page saying "updated 2 minutes ago", does not tell a
    second apart; the flow's events keep each step's exact time.

    This is the hot path of every step, so it speaks SQL directly: the flow's `UPDATE`, its
    events' `INSERT` and, for a step's result (`stored_results`: see `ItemAt`), that step's
    row; no query compilation (the ORM's compiler cost three times the statements' own time).

    The writing process takes charge of the flow (`worker`): if it dies while the flow is
    pending or running, the others hand the flow on as soon as its heartbeat stops."""
    specs = list(events)
    now = timezone.now()
    touch = not (
        stepping
        and changes.get("state", flow.state) == flow.state
        and flow.updated is not None
        and now - flow.updated < STEPPING_RESOLUTION
    )
    # A column it already holds is left out of the UPDATE (fewer values to send, fewer
    # indexes for SQLite to rewrite: it rewrites every index of a column that is SET).
    changes = {name: value for name, value in changes.items() if not _holds(flow, name, value)}
    changes["worker"] = worker_id()
    results = changes.pop("stored_results", None)
    db = connections[router.db_for_write(Flow)]
    states: list[str] = []
    if expect_state is not None:
        states = [expect_state] if isinstance(expect_state, str) else list(expect_state)
    expected = None if expect_state is None else len(states)
    update, fields = _flow_update(db, tuple(changes), expected, touch)
    params = [
        db_value(field, value, db) for field, value in zip(fields, changes.values(), strict=True)
    ]
    params.append(len(specs))
    if touch:
        params.append(db_value(_UPDATED, now, db))
    params += [flow.pk, flow.version]
    params += [str(state) for state in states]
    leaves_wait = flow.state == FlowState.WAITING and changes.get("state", flow.state) != (
        FlowState.WAITING
    )
    if db.vendor == "postgresql" and not isinstance(results, list):
        return _write_in_one_statement(
            db, flow, changes, specs, results, now, touch, update, params, clears_wait=leaves_wait
        )
    if not leaves_wait and not isinstance(results, list) and can_go_direct(db):
        return _write_direct(db, flow, changes, specs, results, now, touch, update, params)
    # (No savepoint inside a caller's transaction: an error here fails the caller's whole
    # transaction, which every caller lets go. A savepoint cost two more round trips.)
    with transaction.atomic(using=db.alias, savepoint=False), cursor_for(db) as cursor:
        cursor.execute(update, params)
        if cursor.rowcount != 1:
            return False
        if results is not None:
            _write_results(db, cursor, flow, results)
        was_waiting = flow.state == FlowState.WAITING
        for name, value in changes.items():
            setattr(flow, name, value)
        flow.version += 1
        if touch:
            flow.updated = now
        rows = _event_rows(flow, specs)
        if rows:
            _insert_events(db, cursor, rows, now)
        if was_waiting and flow.state != FlowState.WAITING:
            humans.clear_wait(flow.pk)  # answered, timed out or overridden
        engine_events.publish_on_commit(row.feed(flow, now) for row in rows)
    return True


# Columns that only this function writes, each write bumping the version: at the version its
# compare-and-set checks, the row holds what the flow in memory holds. (Not the lease, the
# worker, a step's deadline or a wait's reminder: renewals, hand-overs and reminders write
# those and leave the version alone.)
_VERSIONED = frozenset(
    {
        "state",
        "position",
        "wait_reason",
        "error",
        "traceback",
        "input",
        "has_input",
        "job_id",
        "started_position",
        "attempt",
        "visit_key",
    }
)


def _holds(flow: Flow, name: str, value: Any) -> bool:
    """Whether the flow's row holds `value` in the column `name` already: a versioned column
    whose value in memory would be stored as `value` is (None, or the same text, integer or
    boolean; anything else is written)."""
    if name not in _VERSIONED:
        return False
    held = getattr(flow, name)
    if value is None or held is None:
        return value is None and held is None
    if isinstance(value, str):
        return isinstance(held, str) and held == value
    kind = type(value)
    return kind in (int, bool) and type(held) is kind and held == value


class _AsRead:
    """What a write is about to change on the flow in memory, to put back if it does not
    commit."""

    def __init__(self, flow: Flow, changes: dict[str, Any]) -> None:
        self.flow = flow
        self.values = {name: getattr(flow, name) for name in changes}
        self.counters = (flow.version, flow.seq, flow.updated)

    def restore(self) -> None:
        for name, value in self.values.items():
            setattr(self.flow, name, value)
        self.flow.version, self.flow.seq, self.flow.updated = self.counters


def _write_direct(
    db: Any,
    flow: Flow,
    changes: dict[str, Any],
    specs: list[EventSpec],
    results: ItemAt | None,
    now: Any,
    touch: bool,
    update: str,
    params: list[Any],
) -> bool:
    """`write_flow` on SQLite outside any transaction (a step, a claim: the hot path), its
    statements sent to the driver itself in a transaction of their own (`engine.rows.direct`):
    the same statements, values and events as through Django, at about two thirds of the
    cost. Its events are published once it has committed. If it raises, nothing is written
    and the flow in memory is as it was read."""
    as_read = _AsRead(flow, changes)
    won = False
    try:
        with direct(db) as cursor:
            if cursor.execute(update, params).rowcount != 1:
                return False
            if results is not None:
                upsert = _result_sql(db)[0]
                cursor.execute(upsert, [flow.pk, results.index, results.json()])
            for name, value in changes.items():
                setattr(flow, name, value)
            flow.version += 1
            if touch:
                flow.updated = now
            rows = _event_rows(flow, specs)
            if rows:
                _insert_events(db, cursor, rows, now)
        won = True
    finally:
        if not won:
            as_read.restore()
    if results is not None:
        _remember_result(flow, results)
    engine_events.publish([row.feed(flow, now) for row in rows])
    return True


def _write_in_one_statement(
    db: Any,
    flow: Flow,
    changes: dict[str, Any],
    specs: list[EventSpec],
    results: ItemAt | None,
    now: Any,
    touch: bool,
    update: str,
    params: list[Any],
    *,
    clears_wait: bool = False,
) -> bool:
    """`write_flow` on PostgreSQL: the flow's `UPDATE`, its result row and its events in ONE
    statement (data-modifying CTEs: each insert selects from the update's RETURNING, so
    nothing is inserted when the compare-and-set loses). Outside a transaction it commits
    by itself: one round trip for a step, where BEGIN, three statements and COMMIT took
    five. Inside one (a caller's atomic block) it is part of it, with no savepoint.
    `clears_wait` (the flow stops waiting: answered, timed out, overridden): its
    notifications cleared and its assignees deleted in the same statement (`clear_wait`'s
    two statements, for the flow `f` updated)."""
    as_read = _AsRead(flow, changes)
    for name, value in changes.items():
        setattr(flow, name, value)
    flow.version += 1
    if touch:
        flow.updated = now
    rows = _event_rows(flow, specs)
    parts = [f"f AS ({update} RETURNING id)"]
    if results is not None:
        parts.append(f"r AS ({_result_sql(db)[3]})")
        params += [results.index, results.json()]
    insert, values = _event_statement(db, rows, now)
    for index, row_values in enumerate(values):
        parts.append(f"e{index} AS ({insert})")
        params += row_values
    answer = "SELECT count(*) FROM f"
    if clears_wait:
        ctes, values = humans.clear_wait_ctes(db)
        parts += ctes
        params += values
        answer = "SELECT (SELECT count(*) FROM f), ARRAY(SELECT * FROM n)"
    sql = f"WITH {', '.join(parts)} {answer}"
    won = False
    try:
        with (
            transaction.atomic(using=db.alias, savepoint=False)
            if db.in_atomic_block
            else nullcontext()
        ):
            with cursor_for(db) as cursor:
                cursor.execute(sql, params)
                answered = cursor.fetchone()
                won = answered[0] == 1
            if won:
                if clears_wait:
                    humans.wait_cleared(flow.pk, answered[1])
                engine_events.publish_on_commit(row.feed(flow, now) for row in rows)
    finally:
        if not won:  # nothing was written: the flow in memory is as it was read
            as_read.restore()
    if won and results is not None:
        _remember_result(flow, results)
    return won


def claims_at_once() -> bool:
    """Whether `claim_pending` may claim a flow: on PostgreSQL, outside a transaction."""
    db = connections[router.db_for_write(Flow)]
    return db.vendor == "postgresql" and not db.in_atomic_block


_CLAIMS: dict[tuple[str, tuple[str, ...], int], str] = {}


def claim_pending(flow_id: int, changes: dict[str, Any], events: list[EventSpec]) -> Flow | None:
    """Claim the flow `flow_id` if it is PENDING, whatever its version: apply `changes` (a
    claim: its state, lease...) with `events`, and return the flow as written, with its
    owner; None if it is not pending (claimed by another worker, moved on) or not there.

    On PostgreSQL, outside a transaction, ONE statement that commits by itself: the update
    (the row's lock makes it a compare-and-set on the state: of two claims, the second finds
    it no longer pending), the events numbered from the `seq` it returns, and the row read
    back with its owner. Where the runner read the flow and then wrote its claim, two round
    trips, it is one.

    The claim's commit does not wait for the server's disk (`synchronous_commit` off for
    that statement alone). A claim is a lease, not an outcome: the first step's commit, which
    does wait, flushes it with it; if the database crashes before, the claim is lost with
    the step it led to, the flow is PENDING as before, and it is queued again as orphaned
    work (`engine.orphans`), as after a worker's crash between the queue and the claim.

    Only where `claims_at_once()`; elsewhere (SQLite, whose statements are calls into this
    process, not round trips; a caller's transaction) the runner reads the flow and claims
    it with `write_flow`."""
    db = connections[router.db_for_write(Flow)]
    changes = dict(changes, worker=worker_id())
    now = timezone.now()
    key = (db.vendor, tuple(changes), len(events))
    sql = _CLAIMS.get(key)
    if sql is None:
        sql = _CLAIMS[key] = _claim_sql(db, tuple(changes), len(events))
    params = [db_value(_column(_FLOW, name), value, db) for name, value in changes.items()]
    params += [len(events), db_value(_UPDATED, now, db), flow_id, FlowState.PENDING]
    kind_field, actor_field, message_field, data_field, created_field = (
        _column(_EVENT, name) for name in ("kind", "actor", "message", "data", "created")
    )
    at = db_value(created_field, now, db)
    for number, (kind, spec) in enumerate(events):
        actor = spec.get("actor")
        params += [
            len(events) - 1 - number,
            db_value(kind_field, kind, db),
            db_value(actor_field, None if actor is None else actor.pk, db),
            db_value(message_field, spec.get("message", ""), db),
            db_value(data_field, spec.get("data", {}), db),
            at,
        ]
    with cursor_for(db) as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    flow = _flow_and_owner(db, row)
    flow.seq -= len(events)
    rows = _event_rows(flow, events)  # (numbered as the statement numbered them)
    engine_events.publish([row.feed(flow, now) for row in rows])
    return flow


def _claim_sql(db: Any, names: tuple[str, ...], count: int) -> str:
    """`claim_pending`'s statement for a claim setting `names` with `count` events."""
    quote = db.ops.quote_name
    sets = [f"{quote(_column(_FLOW, name).column)} = %s" for name in names]
    sets += ["version = version + 1", "seq = seq + %s", "updated = %s"]
    flow_columns = ", ".join(quote(field.column) for field in _FLOW.concrete_fields)
    parts = [
        "s AS (SELECT set_config('synchronous_commit', 'off', true))",
        f"f AS (UPDATE {quote(_FLOW.db_table)} SET {', '.join(sets)} "
        f"WHERE id = %s AND state = %s RETURNING {flow_columns})",
    ]
    fields = _event_sql(db)[2]
    columns = ", ".join(quote(field.column) for field in fields)
    state, position = (quote(_column(_EVENT, name).column) for name in ("state", "position"))
    for number in range(count):
        # (each event: the flow's new seq less the events after it; its state and position)
        parts.append(
            f"e{number} AS (INSERT INTO {quote(_EVENT.db_table)} ({columns}) "
            f"SELECT f.id, f.seq - %s, %s, %s, f.{state}, f.{position}, %s, %s::jsonb, %s "
            "FROM f)"
        )
    user_meta = _owner_model()._meta
    owner_columns = ", ".join(f"u.{quote(field.column)}" for field in user_meta.concrete_fields)
    owner = quote(_FLOW.get_field("owner").column)
    return (
        f"WITH {', '.join(parts)} SELECT f.*, {owner_columns} FROM f "
        f"JOIN {quote(user_meta.db_table)} u ON u.{quote(user_meta.pk.column)} = f.{owner} "
        "CROSS JOIN s"
    )


class ItemAt:
    """A change of one step's stored result (`stored` at `index`; None: no result), written as
    that step's `FlowResult` row alone. The other form of a `stored_results` change, a list,
    replaces every row of the flow."""

    __slots__ = ("index", "stored", "text")

    def __init__(self, index: int, stored: Any, text: str | None = None) -> None:
        """`text`: `stored` as JSON text, when the caller has it (`codec.encoded`)."""
        self.index, self.stored = index, stored
        self.text = None if stored is None else text

    def json(self) -> str | None:
        """What the step's row stores: the value's JSON text, or NULL for no result."""
        return self.text if self.text is not None else _json(self.stored)


_RESULT = FlowResult._meta
_RESULT_SQL: dict[str, tuple[str, str, str, str]] = {}


def _result_sql(db: Any) -> tuple[str, str, str, str]:
    """(upsert one step's row, delete a flow's rows, insert a row, upsert the row of the
    flow updated by the CTE `f`), written once per database."""
    found = _RESULT_SQL.get(db.vendor)
    if found is None:
        quote = db.ops.quote_name
        table = quote(_RESULT.db_table)
        flow, position, value = (
            quote(_column(_RESULT, name).column) for name in ("flow", "position", "value")
        )
        json_param = "%s::jsonb" if db.vendor == "postgresql" else "%s"
        insert = f"INSERT INTO {table} ({flow}, {position}, {value}) VALUES (%s, %s, {json_param})"
        conflict = f"ON CONFLICT ({flow}, {position}) DO UPDATE SET {value} = excluded.{value}"
        found = _RESULT_SQL[db.vendor] = (
            f"{insert} {conflict}",
            f"DELETE FROM {table} WHERE {flow} = %s",
            insert,
            # (PostgreSQL, in `_write_in_one_statement`: the row of the flow `f` updated)
            f"INSERT INTO {table} ({flow}, {position}, {value}) "
            f"SELECT f.id, %s, {json_param} FROM f {conflict}",
        )
    return found


def _json(value: Any) -> str | None:
    return None if value is None else to_text(value)


def _write_results(db: Any, cursor: Any, flow: Flow, results: ItemAt | list[Any]) -> None:
    """Write a `stored_results` change (in the flow's transaction) and keep the flow's
    in-memory list in step with it, if it has been read."""
    upsert, delete, insert, _ = _result_sql(db)
    if isinstance(results, ItemAt):
        cursor.execute(upsert, [flow.pk, results.index, results.json()])
        _remember_result(flow, results)
        return
    cursor.execute(delete, [flow.pk])
    if results:
        cursor.executemany(
            insert, [[flow.pk, index, _json(value)] for index, value in enumerate(results)]
        )
    flow.stored_results = results


def _remember_result(flow: Flow, result: ItemAt) -> None:
    """Keep the flow's in-memory results (if read) in step with a written `ItemAt`."""
    known: list[Any] | None = flow.__dict__.get("_stored_results")
    if known is not None:
        known.extend([None] * (result.index + 1 - len(known)))
        known[result.index] = result.stored


_UPDATED = _column(_FLOW, "updated")
# How old a running flow's `updated` and lease may get while its blocking steps run on in
# one state (`write_flow(stepping=True)`, the runner's lease): each is in indexes that every
# write of it rewrites.
STEPPING_RESOLUTION = timedelta(seconds=1)
_UPDATES: dict[tuple[Any, ...], tuple[str, list[Any]]] = {}


def _flow_update(
    db: Any, names: tuple[str, ...], states: int | None, touch: bool = True
) -> tuple[str, list[Any]]:
    """`UPDATE flow SET <names>, version, seq[, updated] WHERE id, version [AND state IN
    (<states>)]` and the fields of `names`, written once per shape of write."""
    key = (db.vendor, names, states, touch)
    found = _UPDATES.get(key)
    if found is None:
        quote = db.ops.quote_name
        fields = [_column(_FLOW, name) for name in names]
        sets = [f"{quote(field.column)} = %s" for field in fields]
        sets += ["version = version + 1", "seq = seq + %s"] + (["updated = %s"] if touch else [])
        where = "id = %s AND version = %s"
        if states is not None:
            where += f" AND state IN ({', '.join(['%s'] * states)})"
        update = f"UPDATE {quote(_FLOW.db_table)} SET {', '.join(sets)} WHERE {where}"
        found = _UPDATES[key] = (update, fields)
    return found


def create_flow(flow: Flow, events: Iterable[EventSpec] = ()) -> Flow:
    """Insert the new, unsaved `flow` with its first `events`, in one transaction: the write
    that begins its history, so it is at version 1 with `seq` = the number of its events,
    taken in charge by this process (as `write_flow` would leave it after its creation,
    without the second statement: a new row has nobody to lose a compare-and-set to).
    Events are published after the commit."""
    specs = list(events)
    db = connections[router.db_for_write(Flow)]
    flow.worker = worker_id()
    flow.version = 1
    flow.seq = 0
    flow.seq = len(specs)
    fields = [field for field in _FLOW.concrete_fields if field is not _FLOW.pk]
    # What `save()` would send (each field's pre-save value: `created` and `updated` now),
    # in a statement written once rather than compiled at every start.
    params = [db_value(field, field.pre_save(flow, True), db) for field in fields]
    if db.vendor == "postgresql":
        return _create_in_one_statement(db, flow, fields, params, specs)
    if can_go_direct(db):  # (`creating` left it outside a transaction: see there)
        try:
            with direct(db) as cursor:
                rows = _insert_new(db, cursor, flow, fields, params, specs)
        except BaseException:
            flow.pk, flow._state.adding = None, True  # (rolled back: still unsaved)
            raise
        engine_events.publish([row.feed(flow, flow.updated) for row in rows])
        return flow
    with transaction.atomic(using=db.alias, savepoint=False), cursor_for(db) as cursor:
        rows = _insert_new(db, cursor, flow, fields, params, specs)
        engine_events.publish_on_commit(row.feed(flow, flow.updated) for row in rows)
    return flow


def _insert_new(
    db: Any, cursor: Any, flow: Flow, fields: list[Any], params: list[Any], specs: list[EventSpec]
) -> list[_EventRow]:
    """`create_flow`'s statements on SQLite: the flow's `INSERT` and its events' (the caller
    holds the transaction); the event rows, to publish once it commits."""
    insert, returning = _flow_insert(db, fields)
    cursor.execute(insert, params)
    if returning is None:
        flow.pk = db.ops.last_insert_id(cursor, _FLOW.db_table, _FLOW.pk.column)
    else:
        flow.pk = db.ops.fetch_returned_insert_columns(cursor, returning)[0]
    flow._state.adding = False
    flow._state.db = db.alias
    flow.stored_results = []  # a new flow has no results: nothing to read
    flow.seq = 0
    rows = _event_rows(flow, specs)
    if rows:
        _insert_events(db, cursor, rows, flow.updated)
    return rows


def _create_in_one_statement(
    db: Any, flow: Flow, fields: list[Any], params: list[Any], specs: list[EventSpec]
) -> Flow:
    """`create_flow` on PostgreSQL: the flow's `INSERT` and its first events in ONE
    statement (each event's insert selects the new id from the flow's RETURNING). Outside a
    transaction it commits by itself (see `creating`)."""
    insert, _ = _flow_insert(db, fields)
    flow.seq = 0  # (the row's is len(specs), in `params`): the events are numbered 1..
    rows = _event_rows(flow, specs)
    parts = [f"f AS ({insert})"]
    event_insert, values = _event_statement(db, rows, flow.updated)
    for index, row_values in enumerate(values):
        parts.append(f"e{index} AS ({event_insert})")
        params += row_values
    with cursor_for(db) as cursor:
        cursor.execute(f"WITH {', '.join(parts)} SELECT id FROM f", params)
        flow.pk = cursor.fetchone()[0]
    flow._state.adding = False
    flow._state.db = db.alias
    flow.stored_results = []  # a new flow has no results: nothing to read
    for row in rows:
        row.flow_id = flow.pk
    engine_events.publish_on_commit(row.feed(flow, flow.updated) for row in rows)
    return flow


def creating(database: str | None = None) -> Any:
    """The transaction a flow's creation and what goes with it (its enqueue, on commit) need:
    none on PostgreSQL, where `create_flow` is one statement that commits by itself outside
    a transaction (inside a caller's, it is part of it), nor on SQLite outside one when its
    statements may go to the driver (`can_go_direct`: `create_flow` commits in a transaction
    of its own); otherwise `transaction.atomic()`. Either way the enqueue follows the commit."""
    db = connections[database or router.db_for_write(Flow)]
    if db.vendor == "postgresql" or can_go_direct(db):
        return nullcontext()
    return transaction.atomic(using=db.alias)


_INSERTS: dict[str, tuple[str, Any]] = {}


def _flow_insert(db: Any, fields: list[Any]) -> tuple[str, Any]:
    """`INSERT INTO flow (...) VALUES (...)`, returning the new id where the database can:
    (the statement, the params of its RETURNING clause or None)."""
    if db.vendor not in _INSERTS:
        quote = db.ops.quote_name
        columns = ", ".join(quote(field.column) for field in fields)
        marks = ", ".join(["%s"] * len(fields))
        insert = f"INSERT INTO {quote(_FLOW.db_table)} ({columns}) VALUES ({marks})"
        returning = None
        if db.features.can_return_columns_from_insert:
            clause, returning = db.ops.return_insert_columns([_FLOW.pk])
            insert = f"{insert} {clause}"
        _INSERTS[db.vendor] = (insert, returning)
    return _INSERTS[db.vendor]


class _EventRow:
    """An event row as a write inserts and publishes it: `FlowEvent`'s columns, without
    building the model (whose `__init__` cost more than the row's insert)."""

    __slots__ = ("flow_id", "seq", "kind", "actor_id", "state", "position", "message", "data")

    def __init__(self, flow: Flow, kind: str, spec: dict[str, Any]) -> None:
        actor = spec.get("actor")
        self.flow_id, self.seq, self.kind = flow.pk, flow.seq, kind
        self.actor_id = None if actor is None else actor.pk
        self.state, self.position = spec.get("state") or flow.state, flow.position
        self.message = spec.get("message", "")
        self.data = spec.get("data", {})

    def feed(self, flow: Flow, created: Any) -> dict[str, Any]:
        """What `FlowEvent.feed` makes of the same row (the live feed's dict)."""
        return {
            "flow": self.flow_id,
            "position": self.position,
            "message": self.message,
            "seq": self.seq,
            "kind": self.kind,
            "actor": self.actor_id,
            "state": self.state,
            "data": self.data,
            "created": created.isoformat(),
            "type": FlowEvent.feed_type,
            "owner": flow.owner_id,
            "version": flow.version,
        }


def _event_rows(flow: Flow, specs: list[EventSpec]) -> list[_EventRow]:
    """The event rows of a write, numbered on from `flow.seq` (which they advance)."""
    rows = []
    for kind, spec in specs:
        flow.seq += 1
        rows.append(_EventRow(flow, kind, spec))
    return rows


_EVENT_INSERTS: dict[str, tuple[str, str, list[Any]]] = {}


def _event_sql(db: Any) -> tuple[str, str, list[Any]]:
    """(insert event rows, insert one selecting the flow id from the CTE `f`), and their
    fields, written once per database."""
    found = _EVENT_INSERTS.get(db.vendor)
    if found is None:
        fields = [_column(_EVENT, name) for name in _EVENT_FIELDS]
        columns = ", ".join(db.ops.quote_name(field.column) for field in fields)
        marks = ", ".join(["%s"] * len(fields))
        table = db.ops.quote_name(_EVENT.db_table)
        found = _EVENT_INSERTS[db.vendor] = (
            f"INSERT INTO {table} ({columns}) VALUES ({marks})",
            f"INSERT INTO {table} ({columns}) SELECT f.id, {marks[4:]} FROM f",
            fields,
        )
    return found


# What `db_value` sends as it is for the event's integer and text columns (its id, its flow's
# and its actor's ids, seq, position, kind, state, message): every other value goes through
# `db_value`.
_PLAIN = frozenset({int, str, type(None)})


def _event_values(db: Any, fields: list[Any], rows: list[_EventRow], created: Any) -> list[Any]:
    """Each row's values in the order of `fields` (`_EVENT_FIELDS`), as `db_value` sends
    them: the integers, texts and nulls of its first seven columns as they are (a text
    choice too: a str), its data through `db_value`, and the write's time (`created`)."""
    at = db_value(fields[-1], created, db)
    data = fields[-2]
    values = []
    for row in rows:
        plain = [row.flow_id, row.seq, row.kind, row.actor_id, row.state, row.position, row.message]
        for index, value in enumerate(plain):
            if type(value) not in _PLAIN and not isinstance(value, str):
                plain[index] = db_value(fields[index], value, db)
        plain += (db_value(data, row.data, db), at)
        values.append(plain)
    return values


def _insert_events(db: Any, cursor: Any, rows: list[_EventRow], created: Any) -> None:
    insert, _, fields = _event_sql(db)
    values = _event_values(db, fields, rows, created)
    if len(values) == 1:  # (most writes: psycopg runs even one row of executemany in a pipeline)
        cursor.execute(insert, values[0])
    else:
        cursor.executemany(insert, values)


def _event_statement(db: Any, rows: list[_EventRow], created: Any) -> tuple[str, list[Any]]:
    """The insert of one event row selecting its flow from the CTE `f`, and each row's
    values but the flow id (`_write_in_one_statement`)."""
    _, insert, fields = _event_sql(db)
    return insert, [values[1:] for values in _event_values(db, fields, rows, created)]


# --- reading -----------------------------------------------------------------------------------


class _Loader:
    """`SELECT flow JOIN owner [JOIN routine] WHERE id = ?` written once and reused: loading a
    flow is done for every step and every request about one, and compiling the equivalent
    ORM query cost more than running it."""

    def __init__(self) -> None:
        self.sql: dict[tuple[str, bool], str] = {}

    def query(self, db: Any, with_routine: bool = False) -> str:
        key = (db.vendor, with_routine)
        if key not in self.sql:
            quote = db.ops.quote_name
            user_meta = _owner_model()._meta
            routine_meta = _ROUTINE
            columns = [f"f.{quote(field.column)}" for field in _FLOW.concrete_fields]
            columns += [f"u.{quote(field.column)}" for field in user_meta.concrete_fields]
            joins = (
                f"JOIN {quote(user_meta.db_table)} u "
                f"ON u.{quote(user_meta.pk.column)} = f.{quote(_FLOW.get_field('owner').column)}"
            )
            if with_routine:
                columns += [f"r.{quote(field.column)}" for field in routine_meta.concrete_fields]
                columns.append(humans.assignees_column(db, f"f.{quote(_FLOW.pk.column)}"))
                joins += (
                    f" JOIN {quote(routine_meta.db_table)} r ON r.{quote(routine_meta.pk.column)}"
                    f" = f.{quote(_FLOW.get_field('routine').column)}"
                )
            self.sql[key] = (
                f"SELECT {', '.join(columns)} FROM {quote(_FLOW.db_table)} f {joins} "
                f"WHERE f.{quote(_FLOW.pk.column)} = %s"
            )
        return self.sql[key]


_loader = _Loader()


def load_flow(flow_id: int, *, with_routine: bool = False) -> Flow | None:
    """The flow with its owner (and its routine and its wait's assignees: `with_routine`),
    in one statement: what `Flow.objects.select_related("owner", "routine")
    .filter(pk=flow_id).first()` reads, and `humans.assignees_of(flow)`."""
    db = connections[router.db_for_read(Flow)]
    low, high = db.ops.integer_field_range(_FLOW.pk.get_internal_type())
    if not low <= flow_id <= high:
        return None  # no flow has it (the ORM answers so too; the driver would refuse it)
    with cursor_for(db) as cursor:
        cursor.execute(_loader.query(db, with_routine), [flow_id])
        row = cursor.fetchone()
    if row is None:
        return None
    flow = _flow_and_owner(db, row)
    if with_routine:
        end = len(_FLOW.concrete_fields) + len(_owner_model()._meta.concrete_fields)
        flow.routine = model_from_row(db, Routine, list(row[end:-1]))
        humans.remember_assignees(flow, row[-1])
    return flow


def _flow_and_owner(db: Any, row: Any) -> Flow:
    """The flow and its owner from a row of the flow's columns then the owner's (each in
    field order), and maybe more after them."""
    split = len(_FLOW.concrete_fields)
    flow = model_from_row(db, Flow, list(row[:split]))
    owner_model = _owner_model()
    end = split + len(owner_model._meta.concrete_fields)
    flow.owner = model_from_row(db, owner_model, list(row[split:end]))
    return flow


class _Steps:
    """`SELECT step JOIN task WHERE routine = ? ORDER BY order, id` written once and reused:
    what `Routine.snapshot()` reads, without compiling the ORM query at every start."""

    _STEP_FIELDS = ("label", "params", "key", "overrides")
    _TASK_FIELDS = ("name", "script", "params")

    def __init__(self) -> None:
        self.sql: dict[str, str] = {}
        self._fields: list[tuple[str, Any]] = []

    def fields(self) -> list[tuple[str, Any]]:
        if not self._fields:
            self._fields = [("s", _column(_STEP, name)) for name in self._STEP_FIELDS] + [
                ("t", _column(_TASK, name)) for name in self._TASK_FIELDS
            ]
        return self._fields

    def query(self, db: Any) -> str:
        if db.vendor not in self.sql:
            quote = db.ops.quote_name
            columns = ", ".join(f"{alias}.{quote(field.column)}" for alias, field in self.fields())
            step_task = quote(_column(_STEP, "task").column)
            step_routine = quote(_column(_STEP, "routine").column)
            self.sql[db.vendor] = (
                f"SELECT {columns} FROM {quote(_STEP.db_table)} s "
                f"JOIN {quote(_TASK.db_table)} t ON t.{quote(_TASK.pk.column)} = s.{step_task} "
                f"WHERE s.{step_routine} = %s "
                f"ORDER BY s.{quote(_column(_STEP, 'order').column)}, s.{quote(_STEP.pk.column)}"
            )
        return self.sql[db.vendor]

    def convert(self, db: Any, row: Any) -> list[Any]:
        fields = [field for _, field in self.fields()]
        split = len(self._STEP_FIELDS)
        return convert(db, _STEP.db_table, fields[:split], row[:split]) + convert(
            db, _TASK.db_table, fields[split:], row[split:]
        )


_steps = _Steps()


# (Database, routine id) -> (its step rows as last read, the steps made of them). A start
# reads the rows (one statement) and makes steps of them only when they differ from those
# last read: the conversion (three JSON columns a row) cost three times the read.
_STEPS_MADE: dict[tuple[str, int], tuple[list[Any], list[dict[str, Any]]]] = {}
_STEPS_MADE_MAX = 512  # routines remembered (forgotten all at once beyond it)


def routine_steps(routine_id: int) -> list[dict[str, Any]]:
    """The routine's steps as a flow pins them (exactly `Routine.snapshot()`), in one
    statement; a new list every call (the caller may change it)."""
    db = connections[router.db_for_read(RoutineStep)]
    with cursor_for(db) as cursor:
        cursor.execute(_steps.query(db), [routine_id])
        rows = cursor.fetchall()
    made = _STEPS_MADE.get((db.alias, routine_id))
    if made is not None and made[0] == rows:
        return _copy_steps(made[1])
    steps = []
    for row in rows:
        label, params, key, overrides, task_name, script, task_params = _steps.convert(db, row)
        step: dict[str, Any] = {
            "name": label or task_name,
            "script": script,
            "params": {**task_params, **params},
        }
        if key:
            step["key"] = key
        if overrides:
            step["overrides"] = dict(overrides)
        steps.append(step)
    if len(_STEPS_MADE) >= _STEPS_MADE_MAX:
        _STEPS_MADE.clear()
    _STEPS_MADE[db.alias, routine_id] = (rows, _copy_steps(steps))
    return steps


def _copy_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A deep copy of steps made of JSON (by `marshal`, at C speed; a value of any other
    type, which JSON does not make, by `deepcopy`)."""
    try:
        copied: list[dict[str, Any]] = marshal.loads(marshal.dumps(steps))
    except ValueError:
        copied = copy.deepcopy(steps)
    return copied
