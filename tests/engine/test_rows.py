"""Statements written once (engine.rows): what each reads, updates and inserts is what the
ORM reads, updates and inserts, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from engine.ltm.models import LtmEvent, LtmExecution, LtmInstance, LtmRun
from engine.rows import Table

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]
connection = connections["default"]  # (the connection itself: the proxy is not a key)

RUNS, EXECUTIONS, EVENTS, INSTANCES = (
    Table(LtmRun),
    Table(LtmExecution),
    Table(LtmEvent),
    Table(LtmInstance),
)


def _fields(obj):
    return {field.attname: getattr(obj, field.attname) for field in type(obj)._meta.concrete_fields}


@pytest.fixture
def run(user):
    return LtmRun.objects.create(
        name="r", owner=user, global_state={"a": [1, "b", None], "n": 1.5}, error="e"
    )


def test_a_row_by_key_is_the_row_the_orm_reads_with_its_related_object(run, user):
    orm = LtmRun.objects.select_related("owner").get(pk=run.pk)
    with CaptureQueriesContext(connection) as captured:
        got = RUNS.first(connection, related="owner", pk=run.pk)
        owner = got.owner
    assert len(captured) == 1  # the owner came with it
    assert _fields(got) == _fields(orm) and _fields(owner) == _fields(user)
    assert got._state.adding is False and got._state.db == "default"

    orphan = LtmRun.objects.create(name="from code")
    got = RUNS.first(connection, related="owner", pk=str(orphan.pk))  # (a key as text too)
    assert got.pk == orphan.pk and got.owner is None
    assert RUNS.first(connection, pk="00000000-0000-0000-0000-000000000000") is None


def test_rows_where_columns_equal_values_or_lie_in_a_list(run):
    for fqn in ("r", "r.a", "r.b"):
        LtmInstance.objects.create(run=run, fqn=fqn, name=fqn, declared_name=fqn, state={"x": fqn})
    got = INSTANCES.first(connection, run=run.pk, fqn="r.b")
    assert _fields(got) == _fields(LtmInstance.objects.get(run=run, fqn="r.b"))
    ids = list(LtmInstance.objects.filter(run=run).order_by("pk").values_list("pk", flat=True))
    assert sorted(INSTANCES.pks(connection, 10, run=run.pk, fqn=["r.a", "r.b"])) == ids[1:]
    assert len(INSTANCES.pks(connection, 2, run=run.pk)) == 2
    assert INSTANCES.pks(connection, 10, run=run.pk, fqn=[]) == []


def test_an_update_sets_values_bumps_counters_and_counts_what_it_changed(run):
    later = timezone.now() + timedelta(days=1)
    changes = {"state": "running", "global_state": {"k": [True]}, "finished": later, "error": ""}
    assert RUNS.update(connection, changes, bump=["version"], pk=run.pk, version=0) == 1
    assert RUNS.update(connection, {"error": "no"}, pk=run.pk, version=0) == 0  # lost the race
    stored = LtmRun.objects.get(pk=run.pk)
    assert (stored.state, stored.global_state, stored.finished, stored.error) == (
        "running",
        {"k": [True]},
        later,
        "",
    )
    assert stored.version == 1


def test_an_insert_stores_what_bulk_create_would_and_sets_the_keys(run, user):
    made = [
        LtmExecution(run=run, fqn=f"r.{n}", payload={"n": n}, dispatched_at=timezone.now())
        for n in range(3)
    ]
    EXECUTIONS.insert(connection, made)
    assert all(execution.pk for execution in made)
    for execution in made:
        stored = LtmExecution.objects.get(pk=execution.pk)
        assert _fields(stored) == _fields(execution)  # defaults and `created` filled in alike
        assert stored.created is not None and stored.status == "queued"

    event = LtmEvent(run=run, seq=1, kind="k", fqn="r", actor=user, state="running", data={"a": 1})
    EVENTS.insert(connection, [event])
    assert _fields(LtmEvent.objects.get(pk=event.pk)) == _fields(event)


def test_an_insert_unless_there_inserts_once_and_says_so(run):
    from engine.ltm.models import LtmAppend

    execution = LtmExecution.objects.create(run=run, fqn="r.a")
    APPENDS = Table(LtmAppend)

    def append(key: str) -> LtmAppend:
        return LtmAppend(execution=execution, fqn="r.a", call_index=0, target="r", key=key)

    assert APPENDS.insert_new(connection, append("first")) is True
    assert APPENDS.insert_new(connection, append("again")) is False  # (execution, fqn, call)
    assert list(LtmAppend.objects.values_list("key", flat=True)) == ["first"]


def test_a_json_document_goes_to_the_driver_as_its_text_and_is_stored_as_the_orm_stores_it(
    run,
):
    """Encoded once by the field's own encoder, on both databases (PostgreSQL's driver was
    given it to encode, through Django's wrapper, value by value); the column's type is
    the server's to infer, in an insert, an insert that selects its values and an update."""
    import json

    from django.core.serializers.json import DjangoJSONEncoder

    from engine.rows import db_value

    moment = timezone.now()
    document = {"a": [1, "b", None], "n": 1.5}
    data, change = LtmEvent._meta.get_field("data"), LtmEvent._meta.get_field("change")
    assert db_value(data, document, connection) == json.dumps(document)
    dated = json.dumps({"at": moment}, cls=DjangoJSONEncoder)  # (the field's encoder)
    assert db_value(change, {"at": moment}, connection) == dated

    first = LtmEvent(run=run, seq=1, kind="k", state="running", data=document)
    first.change = {"at": moment}
    EVENTS.insert(connection, [first])
    second = LtmEvent(run=run, seq=2, kind="k", state="running", data=[1, {"x": "y"}])
    assert EVENTS.insert_new(connection, second, if_exists=(RUNS, {"pk": run.pk}))
    assert EVENTS.update(connection, {"data": {"then": [True]}}, pk=first.pk) == 1
    stored = {event.seq: event for event in LtmEvent.objects.filter(run=run)}
    assert stored[1].data == {"then": [True]} and stored[1].change == json.loads(dated)
    assert stored[2].data == [1, {"x": "y"}] and stored[2].change is None
    # read back by the engine's statements as the ORM reads it
    assert EVENTS.first(connection, pk=first.pk).change == json.loads(dated)


sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the driver's own cursor is SQLite's"
)


@sqlite_only
def test_statements_go_to_the_driver_unless_someone_watches_them(run):
    from django.db import IntegrityError, transaction

    from engine.rows import Direct, cursor_for

    with cursor_for(connection) as cursor:
        assert isinstance(cursor, Direct)
        cursor.execute("SELECT name FROM engine_ltmrun WHERE id = %s", [run.pk.hex])
        assert cursor.fetchone() == ("r",)
    with CaptureQueriesContext(connection) as captured, cursor_for(connection) as cursor:
        assert not isinstance(cursor, Direct)  # a test counting queries sees every one
        cursor.execute("SELECT name FROM engine_ltmrun WHERE id = %s", [run.pk.hex])
    assert len(captured) == 1
    # Inside a caller's transaction, it is part of it.
    with pytest.raises(RuntimeError), transaction.atomic():
        assert RUNS.update(connection, {"name": "changed"}, pk=run.pk) == 1
        raise RuntimeError("the caller fails")
    assert LtmRun.objects.get(pk=run.pk).name == "r"
    # The driver's errors are Django's.
    with pytest.raises(IntegrityError), cursor_for(connection) as cursor:
        cursor.execute("INSERT INTO engine_ltmrun (id) VALUES (%s)", [run.pk.hex])
    assert Direct.sql("a = %s AND b LIKE '%%x'") == "a = ? AND b LIKE '%x'"


postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="prepared statements are PostgreSQL's: the scale-out pass (tests/test_scaleout.py) "
    "runs this on PostgreSQL",
)


def _prepared_here(fragment: str) -> list[str]:
    """The statements this connection keeps prepared on the server that contain `fragment`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s",
            [f"%{fragment}%"],
        )
        return [statement for (statement,) in cursor.fetchall()]


@postgresql_only
def test_statements_are_prepared_on_postgresql_unless_someone_watches_them(run):
    from django.db import IntegrityError, transaction

    from engine.rows import Prepared, cursor_for

    marker = "name AS prepared_marker"
    for _ in range(2):
        with cursor_for(connection) as cursor:
            assert isinstance(cursor, Prepared)
            cursor.execute(f"SELECT {marker} FROM engine_ltmrun WHERE id = %s", [run.pk])
            assert cursor.fetchone() == ("r",)
    # parsed and planned once, kept on the connection: the second time only ran it
    assert len(_prepared_here(marker)) == 1
    # The values are bound on the server, and rows come back as Django's cursor reads them.
    typed = "SELECT %s::jsonb, %s, %s, created FROM engine_ltmrun WHERE id = %s"
    values = ['{"a": [1]}', None, run.created, run.pk]
    with cursor_for(connection) as cursor:
        read = cursor.execute(typed, values).fetchone()
    with connection.cursor() as django_cursor:
        django_cursor.execute(typed, values)
        assert read == django_cursor.fetchone() == ('{"a": [1]}', None, run.created, run.created)
    with CaptureQueriesContext(connection) as captured, cursor_for(connection) as cursor:
        assert not isinstance(cursor, Prepared)  # a test counting queries sees every one
        cursor.execute("SELECT name AS watched_marker FROM engine_ltmrun WHERE id = %s", [run.pk])
    assert len(captured) == 1 and _prepared_here("watched_marker") == []
    # Inside a caller's transaction, it is part of it.
    with pytest.raises(RuntimeError), transaction.atomic():
        assert RUNS.update(connection, {"name": "changed"}, pk=run.pk) == 1
        raise RuntimeError("the caller fails")
    assert LtmRun.objects.get(pk=run.pk).name == "r"
    # The driver's errors are Django's, and the connection goes on.
    with pytest.raises(IntegrityError), cursor_for(connection) as cursor:
        cursor.execute("INSERT INTO engine_ltmrun (id) VALUES (%s)", [run.pk])
    assert RUNS.update(connection, {"name": "after"}, pk=run.pk) == 1
    assert LtmRun.objects.get(pk=run.pk).name == "after"


def test_database_prepared_0_prepares_nothing():
    """Behind a pooler that cannot keep a session's prepared statements, DATABASE_PREPARED=0
    gives psycopg no threshold (it prepares nothing then, even when asked) and the engine's
    statements go through Django's cursor."""
    import json
    import os
    import subprocess
    import sys

    def options(**env: str) -> dict:
        script = (
            "import json; from studio import settings; "
            "print(json.dumps(settings.DATABASES['default'].get('OPTIONS', {}), default=str))"
        )
        out = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "DATABASE_URL": "postgres://u@127.0.0.1:5432/any", **env},
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert options(DATABASE_PREPARED="")["prepare_threshold"] >= 2**31 - 1
    assert "prepare_threshold" not in options(DATABASE_PREPARED="0")

    from engine.rows import prepares

    class Off:
        vendor = "postgresql"
        settings_dict = {"OPTIONS": options(DATABASE_PREPARED="0")}

    assert prepares(Off()) is False


def test_an_update_returning_gives_the_row_as_the_orm_reads_it_after(run):
    when = timezone.now() + timedelta(minutes=1)
    got = RUNS.update_returning(connection, {"updated": when}, bump=["version", "seq"], pk=run.pk)
    orm = LtmRun.objects.get(pk=run.pk)
    assert (orm.version, orm.seq, orm.updated) == (run.version + 1, run.seq + 1, when)
    assert _fields(got) == _fields(orm)
    assert got._state.adding is False and got._state.db == "default"
    missing = "00000000-0000-0000-0000-000000000000"
    assert RUNS.update_returning(connection, {"updated": when}, pk=missing) is None


def test_the_newest_row_where_columns_equal_values(run):
    for fqn in ("r.a", "r.b", "r.c"):
        LtmExecution.objects.create(run=run, fqn=fqn, status="queued")
    LtmExecution.objects.create(run=run, fqn="r.d", status="done")
    assert EXECUTIONS.first(connection, last=True, run=run.pk, status="queued").fqn == "r.c"
    assert EXECUTIONS.first(connection, last=True, run=run.pk, status="claimed") is None


def test_rows_in_order_at_most_a_limit_with_their_related_objects(run, user):
    for seq, actor in ((1, user), (2, None), (3, user), (4, None)):
        LtmEvent.objects.create(run=run, seq=seq, kind="k", actor=actor, change={"seq": seq})
    orm = list(LtmEvent.objects.filter(run=run).select_related("actor").order_by("-seq")[:3])
    with CaptureQueriesContext(connection) as captured:
        got = EVENTS.rows(connection, related="actor", order=("-seq",), limit=3, run=run.pk)
        actors = [event.actor for event in got]
    assert len(captured) == 1  # the actors came with them
    assert [_fields(event) for event in got] == [_fields(event) for event in orm]
    assert actors == [None, user, None] and actors[1].username == user.username
    ascending = EVENTS.rows(connection, order=("kind", "seq"), run=run.pk)  # (no limit)
    assert [event.seq for event in ascending] == [1, 2, 3, 4]
    assert EVENTS.rows(connection, run=run.pk, seq=[]) == []


def test_one_value_of_a_row_is_what_the_orm_reads(run):
    execution = LtmExecution.objects.create(run=run, fqn="r.a", status="claimed", attempts=2)
    assert EXECUTIONS.value(connection, "status", pk=execution.pk) == "claimed"
    assert EXECUTIONS.value(connection, "run", pk=execution.pk) == run.pk  # (a UUID, converted)
    assert EXECUTIONS.value(connection, "lease_until", pk=execution.pk) is None
    assert EXECUTIONS.value(connection, "status", pk=execution.pk + 1) is None


@postgresql_only
def test_a_postgresql_connection_keeps_one_cursor_for_its_statements_one_after_another(
    run,
):
    """The driver's cursor is made once per connection, not per statement; a block inside
    one that holds it gets one of its own, and a connection made again gets a new one."""
    from engine.rows import cursor_for

    key = run.pk

    def name_with(cursor):
        cursor.execute("SELECT name FROM engine_ltmrun WHERE id = %s", [key])
        return cursor.fetchone()

    with cursor_for(connection) as first:
        kept = first.cursor
        assert name_with(first) == ("r",)
        with cursor_for(connection) as inner:  # (while the outer one holds its results)
            assert inner.cursor is not kept
            assert name_with(inner) == ("r",)
        first.execute("SELECT name FROM engine_ltmrun WHERE id = %s", [key])
    assert first.fetchone() == ("r",)  # the outer block's rows, not the inner one's
    with cursor_for(connection) as again:
        assert again.cursor is kept and name_with(again) == ("r",)
    assert RUNS.update(connection, {"name": "s"}, pk=run.pk) == 1  # (through the same one)
    with cursor_for(connection) as again:
        assert again.cursor is kept and name_with(again) == ("s",)
    connection.close()  # a new driver connection: a new cursor
    with cursor_for(connection) as renewed:
        assert renewed.cursor is not kept and name_with(renewed) == ("s",)
        kept = renewed.cursor
    from django.db import connection as proxy  # (what callers often pass: no key of its own)

    with cursor_for(proxy) as through_proxy:
        assert through_proxy.cursor is kept and name_with(through_proxy) == ("s",)


@postgresql_only
def test_a_long_statement_of_the_engine_is_converted_once_per_process(run, monkeypatch):
    """psycopg caches its conversion (`%s` to `$n`) of statements of up to 4,096 bytes and
    50 values only; the engine's are written once, and one of more (an execution's commit
    in one statement) is converted the first time only, and still answers right."""
    from psycopg import _queries

    from engine.rows import cursor_for

    converted: list[bytes] = []
    convert = _queries._query2pg_nocache

    def counted(query, encoding):
        converted.append(query)
        return convert(query, encoding)

    monkeypatch.setattr(_queries, "_query2pg_nocache", counted)
    values = list(range(60))  # (more values than psycopg caches)
    sql = "SELECT " + " + ".join(["%s::int"] * len(values)) + ", %s::text || '" + "x" * 5000 + "'"
    sums = []
    for shift in range(3):
        with cursor_for(connection) as cursor:
            cursor.execute(sql, [value + shift for value in values] + [str(shift)])
            sums.append(cursor.fetchone())
    assert [total for total, _ in sums] == [sum(values) + 60 * shift for shift in range(3)]
    assert [text[:2] for _, text in sums] == ["0x", "1x", "2x"]
    assert len([query for query in converted if b"x" * 5000 in query]) == 1


@sqlite_only
def test_a_sqlite_block_closes_its_cursor_even_with_rows_left_unread(run):
    """SQLite's cursor is not kept from one block to the next: a statement not stepped to its
    end keeps its connection's snapshot, and, once the connection is closed, its lock (a
    connection closed for good stays open until its statements are done)."""
    import sqlite3

    from engine.rows import cursor_for

    LtmRun.objects.create(name="second", owner=run.owner)
    with cursor_for(connection) as cursor:
        cursor.execute("SELECT name FROM engine_ltmrun ORDER BY name")
        assert cursor.fetchone() == ("r",)  # (the second row left unread)
    with pytest.raises(sqlite3.ProgrammingError):
        cursor.cursor.execute("SELECT 1")  # closed, its statement with it
    with cursor_for(connection) as again:
        assert again.cursor is not cursor.cursor
