"""Statements written once, for the engine's hot paths: a model's rows read, inserted and
updated by SQL that is built the first time a shape is used and reused after, with the values
sent and read through the same field conversions the ORM applies.

Compiling an ORM query cost more than running it on SQLite (an LTM execution spent 45 % of
its time in Django's query compiler for about 20 small statements). What is here covers the
simple shapes those paths use: rows by key or by equal columns, updates of given columns
(and counters bumped) where columns equal given values or lie in a list, inserts of model
instances. Anything else stays with the ORM.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX

# Each field (by id, with the field itself: an id is reused once its object is gone) with its
# Python types whose values go to the driver as they are (what the field's `get_db_prep_save`
# would return unchanged: text, integers and the ids of foreign keys, booleans), whether it
# holds a date and time, and for a JSON field an encoder of its class, made once. Others
# take `get_db_prep_save`.
_AS_IS: dict[int, tuple[Any, tuple[type, ...], bool, Any]] = {}
_TEXT = (str,)
_JSON_DOCUMENTS = (dict, list)


def _kinds(field: Any) -> tuple[Any, tuple[type, ...], bool, Any]:
    target = field.target_field if field.is_relation else field
    kinds: tuple[type, ...] = ()
    if isinstance(target, models.CharField | models.TextField):
        kinds = _TEXT
    elif isinstance(target, models.BooleanField):
        kinds = (bool,)
    elif isinstance(target, models.IntegerField):
        kinds = (int,)
    encoder = None
    if isinstance(target, models.JSONField):
        encoder = (target.encoder or json.JSONEncoder)()
    return field, kinds, isinstance(target, models.DateTimeField), encoder


def db_value(field: Any, value: Any, db: Any) -> Any:
    """`field.get_db_prep_save(value, db)`, without its layers where they change nothing:
    text, integers and booleans as they are; a date and time in UTC (as `timezone.now()`
    makes it) as SQLite's backend writes it (naive in UTC, as text) or as it is for
    PostgreSQL's driver; a JSON object or array as its text, made by one encoder of the
    field's class, made once (SQLite's backend sends `json.dumps(value, cls=encoder)`, a new
    encoder at every call; PostgreSQL's wraps the value for psycopg to encode, which cost
    2-4 % of an LTM execution's CPU). On PostgreSQL the text is sent without a type: the
    server reads it as the type of its column, or of its cast."""
    entry = _AS_IS.get(id(field))
    if entry is None or entry[0] is not field:
        entry = _AS_IS[id(field)] = _kinds(field)
    _, kinds, moment, encoder = entry
    if kinds and (value is None or type(value) in kinds):
        return value
    if kinds is _TEXT and isinstance(value, str):
        return value  # (a text choice, say: text fields send a str subclass as it is)
    if moment and value is None:
        return None
    if moment and type(value) is datetime and value.tzinfo is UTC and settings.USE_TZ:
        if db.vendor == "postgresql":
            return value
        if db.vendor == "sqlite" and db.timezone_name == "UTC":
            return str(value.replace(tzinfo=None))
    if (
        encoder is not None
        and type(value) in _JSON_DOCUMENTS
        and (db.vendor == "postgresql" or type(db.ops).adapt_json_value is _TEXT_JSON)
    ):
        return encoder.encode(value)
    return field.get_db_prep_save(value, db)


_TEXT_JSON = BaseDatabaseOperations.adapt_json_value  # (`json.dumps(value, cls=encoder)`)


def model_from_row(db: Any, model: Any, values: Any) -> Any:
    """A `model` instance from its concrete columns' values as the driver returned them (a
    statement written once selected them in field order), through the converters the ORM
    would apply: what the ORM builds from the same row, without compiling a query."""
    fields = model._meta.concrete_fields
    converted = convert(db, model._meta.db_table, fields, values)
    return model.from_db(db.alias, [field.attname for field in fields], converted)


def convert(db: Any, table: str, fields: Sequence[Any], values: Iterable[Any]) -> list[Any]:
    """The values of `fields` (columns of `table`) as the driver returned them, converted
    as the ORM converts them."""
    converted = []
    for (column, funcs), value in zip(converters(db, table, fields), values, strict=True):
        for converter in funcs:
            value = converter(value, column, db)
        converted.append(value)
    return converted


# Per connection (each thread has its own), per table and columns: each column with the
# functions that turn what the driver returns into the field's value, looked up once.
_CONVERTERS: weakref.WeakKeyDictionary[Any, dict[Any, list[tuple[Any, list[Any]]]]] = (
    weakref.WeakKeyDictionary()
)


def converters(db: Any, table: str, fields: Any) -> list[tuple[Any, list[Any]]]:
    """Each of `fields` (columns of `table`) with its converters on `db`, looked up once."""
    known = _CONVERTERS.get(db)
    if known is None:
        known = _CONVERTERS[db] = {}
    key = (table, tuple(fields))
    found = known.get(key)
    if found is None:
        found = []
        for field in fields:
            column = field.get_col(table)
            found.append((column, db.ops.get_db_converters(column) + field.get_db_converters(db)))
        known[key] = found
    return found


class Table:
    """The statements of one model, each shape written once per database vendor.

    A `where` maps field names (or "pk") to a value (`column = %s`) or to a list or tuple of
    values (`column IN (%s, ...)`, one shape per length)."""

    def __init__(self, model: type[models.Model]) -> None:
        self.model = model
        self.meta = model._meta
        self.fields = list(self.meta.concrete_fields)
        self._sql: dict[Any, Any] = {}

    def _field(self, name: str) -> Any:
        return self.meta.pk if name == "pk" else self.meta.get_field(name)

    def _where(self, db: Any, where: dict[str, Any]) -> tuple[tuple[Any, ...], list[Any]]:
        """The WHERE clause's shape (names, and list lengths) and its parameters."""
        shape: list[tuple[str, int | None]] = []
        params: list[Any] = []
        for name, value in where.items():
            field = self._field(name)
            if isinstance(value, list | tuple):
                shape.append((name, len(value)))
                params += [db_value(field, item, db) for item in value]
            else:
                shape.append((name, None))
                params.append(db_value(field, value, db))
        return tuple(shape), params

    def _clause(self, db: Any, shape: tuple[Any, ...], prefix: str = "") -> str:
        quote = db.ops.quote_name
        parts = []
        for name, length in shape:
            column = prefix + quote(self._field(name).column)
            if length is None:
                parts.append(f"{column} = %s")
            elif length == 0:
                parts.append("1 = 0")
            else:
                parts.append(f"{column} IN ({', '.join(['%s'] * length)})")
        return " AND ".join(parts) or "1 = 1"

    def first(
        self,
        db: Any,
        *,
        related: str | None = None,
        last: bool = False,
        lock: bool = False,
        **where: Any,
    ) -> Any:
        """The model instance of the first row where `where` holds (by key: the one), or
        None. `related`, a foreign key's name: the object it points to is read with it
        (`select_related`), None where the key is null. `last`: the one with the highest
        key. `lock`: the row is locked until the transaction ends (`FOR UPDATE`, where the
        database has it: SQLite's write transaction holds the whole database already)."""
        found = self._select(db, related, ("-pk",) if last else (), 1, lock, where)
        return found[0] if found else None

    def rows(
        self,
        db: Any,
        *,
        related: str | None = None,
        order: Sequence[str] = (),
        limit: int | None = None,
        **where: Any,
    ) -> list[Any]:
        """The model instances of the rows where `where` holds, in the order of the fields
        named in `order` ("-name": descending), at most `limit` of them; `related` as in
        `first`."""
        return self._select(db, related, tuple(order), limit, False, where)

    def _select(
        self,
        db: Any,
        related: str | None,
        order: tuple[str, ...],
        limit: int | None,
        lock: bool,
        where: dict[str, Any],
    ) -> list[Any]:
        shape, params = self._where(db, where)
        lock = lock and db.features.has_select_for_update_of
        key = (db.vendor, "select", related, order, limit is None, lock, shape)
        sql = self._sql.get(key)
        if sql is None:
            quote = db.ops.quote_name
            columns = [f"t.{quote(field.column)}" for field in self.fields]
            joins = ""
            if related is not None:
                foreign = self._field(related)
                other = foreign.related_model._meta
                columns += [f"j.{quote(field.column)}" for field in other.concrete_fields]
                joins = (
                    f" LEFT JOIN {quote(other.db_table)} j"
                    f" ON j.{quote(foreign.target_field.column)} = t.{quote(foreign.column)}"
                )
            ordering = ", ".join(
                f"t.{quote(self._field(name.lstrip('-')).column)}"
                + (" DESC" if name.startswith("-") else "")
                for name in order
            )
            sql = self._sql[key] = (
                f"SELECT {', '.join(columns)} FROM {quote(self.meta.db_table)} t{joins} "
                f"WHERE {self._clause(db, shape, 't.')}"
                f"{f' ORDER BY {ordering}' if ordering else ''}"
                f"{'' if limit is None else ' LIMIT %s'}"
                f"{' FOR UPDATE OF t' if lock else ''}"
            )
        with cursor_for(db) as cursor:
            cursor.execute(sql, params if limit is None else [*params, limit])
            found = cursor.fetchall()
        return [self._instance(db, row, related) for row in found]

    def _instance(self, db: Any, row: Any, related: str | None) -> Any:
        split = len(self.fields)
        found = model_from_row(db, self.model, row[:split])
        if related is not None:
            foreign = self._field(related)
            if getattr(found, foreign.attname) is None:
                foreign.set_cached_value(found, None)
            else:
                foreign.set_cached_value(
                    found, model_from_row(db, foreign.related_model, row[split:])
                )
        return found

    def _column_select(self, db: Any, field: Any, shape: tuple[Any, ...], limit: str) -> str:
        """`SELECT column FROM table WHERE ... LIMIT limit` (a number, or `%s`), written once
        per shape."""
        key = (db.vendor, "column", field.column, shape, limit)
        sql = self._sql.get(key)
        if sql is None:
            quote = db.ops.quote_name
            sql = self._sql[key] = (
                f"SELECT {quote(field.column)} FROM {quote(self.meta.db_table)} "
                f"WHERE {self._clause(db, shape)} LIMIT {limit}"
            )
        return str(sql)

    def value(self, db: Any, name: str, **where: Any) -> Any:
        """The value of field `name` in the first row where `where` holds (by key: the
        one), as the ORM reads it; None if there is no such row."""
        shape, params = self._where(db, where)
        field = self._field(name)
        sql = self._column_select(db, field, shape, "1")
        with cursor_for(db) as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        return None if row is None else convert(db, self.meta.db_table, [field], row)[0]

    def pks(self, db: Any, limit: int, **where: Any) -> list[Any]:
        """The keys of at most `limit` rows where `where` holds."""
        shape, params = self._where(db, where)
        sql = self._column_select(db, self.meta.pk, shape, "%s")
        with cursor_for(db) as cursor:
            cursor.execute(sql, [*params, limit])
            rows = cursor.fetchall()
        return [value for (value,) in rows]

    def update(
        self,
        db: Any,
        changes: dict[str, Any],
        *,
        bump: Sequence[str] = (),
        **where: Any,
    ) -> int:
        """`UPDATE ... SET` each of `changes`, and each field of `bump` plus one, where
        `where` holds; the number of rows updated."""
        return int(self._update(db, changes, bump, where, returning=False))

    def update_returning(
        self, db: Any, changes: dict[str, Any], *, bump: Sequence[str] = (), **where: Any
    ) -> Any:
        """`update`, returning the model instance of the row as updated (`RETURNING`: the
        row is not read again), or None if no row was; where `where` holds of one row at
        most. A database without `RETURNING` updates, then reads the row."""
        if not db.features.can_return_columns_from_insert:  # (SQLite before 3.35)
            return self.first(db, **where) if self.update(db, changes, bump=bump, **where) else None
        row = self._update(db, changes, bump, where, returning=True)
        return None if row is None else model_from_row(db, self.model, row)

    def _update(
        self,
        db: Any,
        changes: dict[str, Any],
        bump: Sequence[str],
        where: dict[str, Any],
        *,
        returning: bool,
    ) -> Any:
        """The UPDATE: the number of rows updated, or (`returning`) the first row updated,
        every column, or None."""
        shape, where_params = self._where(db, where)
        fields = [self._field(name) for name in changes]
        key = (db.vendor, "update", tuple(changes), tuple(bump), shape, returning)
        sql = self._sql.get(key)
        if sql is None:
            quote = db.ops.quote_name
            sets = [f"{quote(field.column)} = %s" for field in fields]
            sets += [
                f"{quote(self._field(name).column)} = {quote(self._field(name).column)} + 1"
                for name in bump
            ]
            columns = ", ".join(quote(field.column) for field in self.fields)
            sql = self._sql[key] = (
                f"UPDATE {quote(self.meta.db_table)} SET {', '.join(sets)} "
                f"WHERE {self._clause(db, shape)}" + (f" RETURNING {columns}" if returning else "")
            )
        params = [
            db_value(field, value, db)
            for field, value in zip(fields, changes.values(), strict=True)
        ]
        with cursor_for(db) as cursor:
            cursor.execute(sql, params + where_params)
            return cursor.fetchone() if returning else cursor.rowcount

    def insert(self, db: Any, objs: Sequence[models.Model]) -> None:
        """Insert the rows of `objs` (as `bulk_create` would: defaults and `auto_now_add`
        filled in, keys made by the database set on each)."""
        if not objs:
            return
        pk = self.meta.pk
        made_by_db = _made_by_db(pk)
        if made_by_db and not db.features.can_return_rows_from_bulk_insert:
            self.model._default_manager.using(db.alias).bulk_create(objs)
            return
        made = self._insert(db, objs, returning=made_by_db, unless_there=False)
        for index, obj in enumerate(objs):
            if made_by_db:
                (value,) = convert(db, self.meta.db_table, [pk], made[index])
                setattr(obj, pk.attname, value)
            obj._state.adding = False
            obj._state.db = db.alias

    def insert_new(
        self, db: Any, obj: models.Model, if_exists: tuple[Table, dict[str, Any]] | None = None
    ) -> bool:
        """Insert the row of `obj` unless a unique constraint says it is there already
        (`ON CONFLICT DO NOTHING`; SQLite's `INSERT OR IGNORE`): whether it was inserted.
        A key the database makes is not set on `obj`. `if_exists`, another table and a
        `where` of it: only if a row of that table holds it, checked in the same statement
        (`INSERT ... SELECT ... WHERE EXISTS`: one round trip where a read and an insert
        took two; the statement sees what was committed when it began)."""
        if if_exists is None:
            return bool(self._insert(db, [obj], returning=True, unless_there=True))
        sql, params = self.insert_new_sql(db, obj, if_exists)
        with cursor_for(db) as cursor:
            cursor.execute(sql, params)
            return bool(cursor.fetchall())

    def insert_new_sql(
        self, db: Any, obj: models.Model, if_exists: tuple[Table, dict[str, Any]]
    ) -> tuple[str, list[Any]]:
        """The statement of `insert_new` with `if_exists` (`RETURNING` the key of the row
        inserted, if it was), and its parameters: for a caller that sends it as a part of
        a statement of its own (a data-modifying CTE, on PostgreSQL)."""
        other, where = if_exists
        shape, where_params = other._where(db, where)
        fields = self._insert_fields()
        key = (db.vendor, "insert if", other.meta.db_table, shape)
        sql = self._sql.get(key)
        if sql is None:
            quote = db.ops.quote_name
            ignore = db.vendor == "sqlite"
            sql = self._sql[key] = (
                f"INSERT{' OR IGNORE' if ignore else ''} INTO {quote(self.meta.db_table)} "
                f"({', '.join(quote(field.column) for field in fields)}) "
                f"SELECT {', '.join(['%s'] * len(fields))} WHERE EXISTS ("
                f"SELECT 1 FROM {quote(other.meta.db_table)} WHERE {other._clause(db, shape)})"
                + ("" if ignore else " ON CONFLICT DO NOTHING")
                + f" RETURNING {quote(self.meta.pk.column)}"
            )
        params = [db_value(field, field.pre_save(obj, True), db) for field in fields]
        return str(sql), [*params, *where_params]

    def _insert_fields(self) -> list[Any]:
        """The columns an insert names: all but a key the database makes."""
        pk = self.meta.pk
        return [field for field in self.fields if not (_made_by_db(pk) and field is pk)]

    def _insert(
        self, db: Any, objs: Sequence[models.Model], *, returning: bool, unless_there: bool
    ) -> list[Any]:
        """The INSERT; with `returning`, a row (the key) per row inserted."""
        pk = self.meta.pk
        fields = self._insert_fields()
        key = (db.vendor, "insert", len(objs), returning, unless_there)
        sql = self._sql.get(key)
        if sql is None:
            quote = db.ops.quote_name
            row = f"({', '.join(['%s'] * len(fields))})"
            ignore = unless_there and db.vendor == "sqlite"
            sql = self._sql[key] = (
                f"INSERT{' OR IGNORE' if ignore else ''} INTO {quote(self.meta.db_table)} "
                f"({', '.join(quote(field.column) for field in fields)}) "
                f"VALUES {', '.join([row] * len(objs))}"
                + (" ON CONFLICT DO NOTHING" if unless_there and not ignore else "")
                + (f" RETURNING {quote(pk.column)}" if returning else "")
            )
        params = [
            db_value(field, field.pre_save(obj, True), db) for obj in objs for field in fields
        ]
        with cursor_for(db) as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if returning else []


def _made_by_db(pk: Any) -> bool:
    return isinstance(pk, models.AutoField | models.BigAutoField | models.SmallAutoField)


class _DriverCursor:
    """What `Direct` and `Prepared` share: a driver's cursor's rows, count and close."""

    cursor: Any

    def fetchone(self) -> Any:
        return self.cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self.cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return int(self.cursor.rowcount)

    def close(self) -> None:
        self.cursor.close()


class Direct(_DriverCursor):
    """A cursor of SQLite's driver itself, sent the same SQL and the same values Django's
    cursor would send, without its layers (its wrappers converted each statement's
    placeholders again and timed it: about as much as SQLite's own work on a step's small
    statements). Each statement's placeholders are converted once per process, as Django's
    SQLite cursor converts them."""

    _qmark: dict[str, str] = {}

    def __init__(self, connection: Any) -> None:
        self.cursor = connection.cursor()

    @classmethod
    def sql(cls, query: str) -> str:
        found = cls._qmark.get(query)
        if found is None:
            found = cls._qmark[query] = FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")
        return found

    def execute(self, query: str, params: Sequence[Any] = ()) -> Direct:
        self.cursor.execute(self.sql(query), params)
        return self

    def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> Direct:
        self.cursor.executemany(self.sql(query), rows)
        return self

    @property
    def lastrowid(self) -> Any:
        return self.cursor.lastrowid


class Prepared(_DriverCursor):
    """A cursor of psycopg that binds its values on the server and has PostgreSQL keep each
    statement prepared on its connection (`prepare=True`): parsed and planned the first time,
    only bound and executed after. Django's cursor binds values on the client (psycopg's
    `ClientCursor`), so the server parsed and planned every statement again: a step's one
    statement cost 0.38-0.46 ms without its commit, prepared 0.16-0.18 ms. The SQL is the
    same (`%s` placeholders, casts where a value's type is not the column's); the values go
    through the connection's adapters as Django's do, and rows come back the same."""

    def __init__(self, db: Any) -> None:
        cursor_class, register_tzloader, timestamptz, text = _postgresql()
        self.cursor = cursor_class(db.connection)
        # (as Django's `create_cursor`: dates read in the connection's time zone)
        if db.timezone != db.connection.adapters.get_loader(timestamptz, text).timezone:
            register_tzloader(db.timezone, self.cursor)

    def execute(self, query: str, params: Sequence[Any] = ()) -> Prepared:
        self.cursor.execute(query, params, prepare=True)
        return self

    def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> Prepared:
        self.cursor.executemany(query, rows)  # (psycopg prepares the statement itself)
        return self


# The engine's statements as psycopg converted them (`%s` to `$n`, and their parts), by SQL
# and encoding: at most this many (their shapes are few; past it, converted each time).
_CONVERTED: dict[tuple[str, str], Any] = {}
_CONVERTED_MOST = 1024


@cache
def _written_once_query() -> type[Any]:
    """psycopg's query class for `Prepared`'s cursors: each statement converted once per
    process. psycopg caches its conversion of statements of up to 4,096 bytes and 50
    values only (to keep ORMs' ever-different bulk inserts out of its cache); the engine's
    statements are written once, yet one that writes an execution's commit in one (its
    data-modifying CTEs) is longer, and its conversion, a scan of the whole text in Python,
    cost about a tenth of an LTM execution's CPU time. A statement that is not text (a
    composed one, a template) is converted as psycopg does."""
    from psycopg import _queries  # (psycopg's own: its version is pinned)

    class WrittenOnce(_queries.PostgresQuery):
        __slots__ = ()

        def convert(self, query: Any, vars: Any) -> None:
            if vars is None or type(query) is not str:
                super().convert(query, vars)
                return
            encoding = self._tx.encoding
            found = _CONVERTED.get((query, encoding))
            if found is None:
                found = _queries._query2pg_nocache(query.encode(encoding), encoding)
                if len(_CONVERTED) < _CONVERTED_MOST:
                    _CONVERTED[query, encoding] = found
            self.query, self._want_formats, self._order, self._parts = found
            self.dump(vars)

    return WrittenOnce


@cache
def _postgresql() -> tuple[Any, Any, int, Any]:
    """What `Prepared` takes from Django's PostgreSQL backend and psycopg (imported once, and
    only where PostgreSQL is used): Django's server-binding cursor (its statements converted
    once: `_written_once_query`), its time zone loader, the `timestamptz` type's oid,
    psycopg's text format."""
    from django.db.backends.postgresql.base import (  # type: ignore[attr-defined]
        ServerBindingCursor,  # (Django's, for its `server_side_binding`; not in its stubs)
    )
    from django.db.backends.postgresql.psycopg_any import register_tzloader
    from psycopg import adapters
    from psycopg.pq import Format

    class EngineCursor(ServerBindingCursor):
        """Django's server-binding cursor, each statement converted once per process."""

        _query_cls = _written_once_query()

    return EngineCursor, register_tzloader, adapters.types["timestamptz"].oid, Format.TEXT


def prepares(db: Any) -> bool:
    """Whether `db` keeps the engine's statements prepared: PostgreSQL, unless turned off
    (`DATABASE_PREPARED=0`, for a pooler that cannot keep a session's prepared statements:
    PgBouncer before 1.21 in transaction mode). The settings give psycopg a
    `prepare_threshold` then: without one it prepares nothing, even when asked."""
    return (
        db.vendor == "postgresql"
        and db.settings_dict.get("OPTIONS", {}).get("prepare_threshold") is not None
    )


def watched(db: Any) -> bool:
    """Whether someone watches `db`'s statements (its query log: `DEBUG`, a test counting
    queries; an execute wrapper): then they go through Django's cursor, as any other."""
    return bool(db.queries_logged or db.execute_wrappers)


@contextmanager
def cursor_for(db: Any) -> Iterator[Any]:
    """A cursor for the statements written here, unless someone watches them (`watched`):
    on SQLite the driver's own (`Direct`: each statement cost Django's cursor wrappers about
    as much again as SQLite's own work; one per block), on PostgreSQL one that keeps them
    prepared (`Prepared`; the one the connection keeps, `_Kept`), inside whatever
    transaction the connection is in, its errors raised as Django's; otherwise Django's
    cursor."""
    if watched(db) or not (db.vendor == "sqlite" or prepares(db)):
        with db.cursor() as django_cursor:
            yield django_cursor
        return
    db.ensure_connection()
    db.validate_no_broken_transaction()
    if db.vendor != "sqlite":
        with db.wrap_database_errors, _kept_cursor(db) as kept:
            yield kept
        return
    with db.wrap_database_errors:
        own_cursor = Direct(db.connection)
        try:
            yield own_cursor
        finally:
            own_cursor.close()


class _Kept:
    """A PostgreSQL connection's cursor for the statements written here, kept from one
    statement to the next: making a driver's cursor for each cost psycopg a copy of its
    adapters' map and the time zone's loader, 2-4 % of an LTM execution's CPU time. `busy`
    while a block holds it (a block inside that one gets a cursor of its own). (psycopg's
    cursor holds nothing on the server between statements. SQLite's would: a statement not
    stepped to its end keeps its connection's snapshot, and its lock past a close; and its
    cursors cost little. There each block has a cursor of its own, closed after it.)"""

    __slots__ = ("busy", "connection", "cursor", "zone")

    def __init__(self, db: Any, cursor: Prepared) -> None:
        self.connection = db.connection
        self.zone = db.timezone
        self.cursor = cursor
        self.busy = False


# Per Django connection object to PostgreSQL (each thread has its own): the cursor it keeps.
_KEPT: weakref.WeakKeyDictionary[Any, _Kept] = weakref.WeakKeyDictionary()


@contextmanager
def _kept_cursor(db: Any) -> Iterator[Prepared]:
    """The cursor `db`'s connection (PostgreSQL) keeps (`_Kept`), made the first time; a
    cursor of its own for a block inside another that holds it. Kept for Django's connection
    object, which each thread has its own of (`_KEPT`); one made for an earlier driver
    connection (closed, or back in its pool) is made again, as one made for another time
    zone (`Prepared` reads dates in the connection's)."""
    if not isinstance(db, BaseDatabaseWrapper):  # (`django.db.connection`, a proxy: no key)
        db = connections[db.alias]
    kept = _KEPT.get(db)
    if kept is None or kept.connection is not db.connection or kept.zone is not db.timezone:
        kept = _KEPT[db] = _Kept(db, Prepared(db))
    if kept.busy:  # (a block inside one that holds the kept one)
        own = Prepared(db)
        try:
            yield own
        finally:
            own.close()
        return
    kept.busy = True
    try:
        yield kept.cursor
    finally:
        kept.busy = False


def can_go_direct(db: Any) -> bool:
    """Whether a write on `db` may be sent to the driver itself (`direct`): SQLite, outside
    any transaction, with nobody watching its statements (no query log: `DEBUG`, a test
    counting queries; no execute wrapper). Otherwise it goes through Django as any other."""
    return (
        db.vendor == "sqlite"
        and not db.in_atomic_block
        and not watched(db)
        and (db.get_autocommit())
    )


@contextmanager
def direct(db: Any) -> Iterator[Direct]:
    """One transaction on SQLite's driver (see `can_go_direct`, which the caller checks):
    `BEGIN` in the database's transaction mode, `COMMIT` when the block ends, `ROLLBACK` if
    it raises (a driver's error raised as Django's, as its cursor would). The caller does
    what Django's `on_commit` would do after the block (nothing registers with Django)."""
    db.ensure_connection()
    connection = db.connection
    mode = getattr(db, "transaction_mode", None)
    with db.wrap_database_errors:
        connection.execute(f"BEGIN {mode}" if mode else "BEGIN")
        statements = Direct(connection)
        try:
            yield statements
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            statements.close()
