"""Writing a flow: compare-and-set on its version, with its events, in one transaction.

SQLite ignores row locks (`select_for_update` is a no-op there), so every write is an
`UPDATE ... WHERE id = ? AND version = ?` whose row count says whether this writer won.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from django.db import connections, router, transaction
from django.db.models import Field, Model
from django.utils import timezone

from engine import events as engine_events
from engine.flows import humans
from engine.flows.models import Flow, FlowEvent
from engine.flows.status import FlowState
from engine.liveness import worker_id

EventSpec = tuple[str, dict[str, Any]]  # (kind, {"message":..., "data":..., "actor":...})


def _column(meta: Any, name: str) -> Field[Any, Any]:
    """A concrete field (a column) of a model, by name."""
    return cast("Field[Any, Any]", meta.get_field(name))


def _owner_model() -> type[Model]:
    return cast("type[Model]", _FLOW.get_field("owner").related_model)


_FLOW = Flow._meta
_EVENT = FlowEvent._meta
_EVENT_FIELDS = ("flow", "seq", "kind", "actor", "state", "position", "message", "data", "created")


def write_flow(
    flow: Flow,
    changes: dict[str, Any],
    events: Iterable[EventSpec] = (),
    *,
    expect_state: str | Iterable[str] | None = None,
) -> bool:
    """Apply `changes` to `flow` if nobody wrote it since it was read (same version, and the
    expected state), appending `events` with the next sequence numbers, all in one
    transaction. On success the in-memory `flow` is updated and True returned; otherwise
    nothing is written and False returned. Events are published after the commit.

    This is the hot path of every step, so it speaks SQL directly: two statements, no query
    compilation (the ORM's compiler cost three times the statements' own time).

    The writing process takes charge of the flow (`worker`): if it dies while the flow is
    pending or running, the others hand the flow on as soon as its heartbeat stops."""
    specs = list(events)
    changes = {**changes, "worker": worker_id()}
    now = timezone.now()
    db = connections[router.db_for_write(Flow)]
    quote = db.ops.quote_name
    sets, params = [], []
    for name, value in changes.items():
        field = _column(_FLOW, name)
        sets.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, db))
    sets += ["version = version + 1", "seq = seq + %s", "updated = %s"]
    params += [len(specs), _column(_FLOW, "updated").get_db_prep_save(now, db)]
    where = "id = %s AND version = %s"
    params += [flow.pk, flow.version]
    if expect_state is not None:
        states = [expect_state] if isinstance(expect_state, str) else list(expect_state)
        where += f" AND state IN ({', '.join(['%s'] * len(states))})"
        params += [str(state) for state in states]
    update = f"UPDATE {quote(_FLOW.db_table)} SET {', '.join(sets)} WHERE {where}"
    with transaction.atomic(using=db.alias), db.cursor() as cursor:
        cursor.execute(update, params)
        if cursor.rowcount != 1:
            return False
        was_waiting = flow.state == FlowState.WAITING
        for name, value in changes.items():
            setattr(flow, name, value)
        flow.version += 1
        flow.updated = now
        rows = []
        for kind, spec in specs:
            flow.seq += 1
            rows.append(
                FlowEvent(
                    flow_id=flow.pk,
                    seq=flow.seq,
                    kind=kind,
                    actor=spec.get("actor"),
                    state=flow.state,
                    position=flow.position,
                    message=spec.get("message", ""),
                    data=spec.get("data", {}),
                    created=now,
                )
            )
        if rows:
            _insert_events(db, cursor, rows)
        if was_waiting and flow.state != FlowState.WAITING:
            humans.clear_wait(flow.pk)  # answered, timed out or overridden
        engine_events.publish_on_commit(_event_dict(flow, row) for row in rows)
    return True


def _insert_events(db: Any, cursor: Any, rows: list[FlowEvent]) -> None:
    fields = [_column(_EVENT, name) for name in _EVENT_FIELDS]
    columns = ", ".join(db.ops.quote_name(field.column) for field in fields)
    marks = ", ".join(["%s"] * len(fields))
    insert = f"INSERT INTO {db.ops.quote_name(_EVENT.db_table)} ({columns}) VALUES ({marks})"
    cursor.executemany(
        insert,
        [
            [field.get_db_prep_save(getattr(row, field.attname), db) for field in fields]
            for row in rows
        ],
    )


def _event_dict(flow: Flow, row: FlowEvent) -> dict[str, Any]:
    return row.feed(owner=flow.owner_id, version=flow.version)


# --- reading -----------------------------------------------------------------------------------


class _Loader:
    """`SELECT flow JOIN owner WHERE id = ?` written once and reused: loading a flow is done
    for every step, and compiling the equivalent ORM query cost more than running it."""

    def __init__(self) -> None:
        self.sql: dict[str, str] = {}

    def query(self, db: Any) -> str:
        if db.vendor not in self.sql:
            quote = db.ops.quote_name
            user_meta = _owner_model()._meta
            flow_cols = [f"f.{quote(field.column)}" for field in _FLOW.concrete_fields]
            user_cols = [f"u.{quote(field.column)}" for field in user_meta.concrete_fields]
            self.sql[db.vendor] = (
                f"SELECT {', '.join(flow_cols + user_cols)} FROM {quote(_FLOW.db_table)} f "
                f"JOIN {quote(user_meta.db_table)} u "
                f"ON u.{quote(user_meta.pk.column)} = f.{quote(_FLOW.get_field('owner').column)} "
                f"WHERE f.{quote(_FLOW.pk.column)} = %s"
            )
        return self.sql[db.vendor]

    @staticmethod
    def convert(db: Any, model: Any, values: list[Any]) -> Any:
        fields = model._meta.concrete_fields
        converted = []
        for field, value in zip(fields, values, strict=True):
            column = field.get_col(model._meta.db_table)
            for converter in db.ops.get_db_converters(column) + field.get_db_converters(db):
                value = converter(value, column, db)
            converted.append(value)
        return model.from_db(db.alias, [field.attname for field in fields], converted)


_loader = _Loader()


def load_flow(flow_id: int) -> Flow | None:
    """The flow with its owner, in one statement."""
    db = connections[router.db_for_read(Flow)]
    with db.cursor() as cursor:
        cursor.execute(_loader.query(db), [flow_id])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(_FLOW.concrete_fields)
    flow = _loader.convert(db, Flow, list(row[:split]))
    owner_model = _FLOW.get_field("owner").related_model
    flow.owner = _loader.convert(db, owner_model, list(row[split:]))
    return flow
