"""The search of a wait reason through its trigram index (migration 0008): any part, any case,
as Django's `icontains` on the database; the index following every change of a reason (on
SQLite an FTS5 table kept by triggers); and the query plan reading the index (SQLite:
engine_flow_search; PostgreSQL: flow_wait_reason_trgm)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.utils import timezone

from engine import api
from engine.flows import queries
from engine.models import Flow

# Also in the scale-out pass: there on PostgreSQL, where its own index serves the search.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]

REASONS = [
    "Approval of INVOICE 4242",
    "manager sign-off for order 17",
    "École d'été",
    "ÉCOLE D'ÉTÉ",
    "Straße",
    "100% done",
    "1000 done",
    "a_b c",
    "axb c",
    "back\\slash",
    'say "hi" now',
]
SEARCHES = [
    "invoice 42",
    "INVOICE",
    "nvOIce 4242",
    "Sign-Off",
    "école",
    "ÉCOLE",
    "été",
    "straße",
    "STRASSE",
    "0% d",
    "% d",
    "a_b",
    "_b c",
    "k\\s",
    '"hi"',
    'y "h',
    "no such thing",
    "of",
    "x",
]


@pytest.fixture
def flows(user, routine):
    """A flow waiting for each reason (written as they are created) and one finished."""
    r = routine("t_echo", name="Plain")
    steps = r.snapshot()
    made = Flow.objects.bulk_create(
        Flow(
            routine=r,
            routine_version=r.version,
            steps=steps,
            owner=user,
            state="waiting",
            wait_reason=reason,
        )
        for reason in REASONS
    )
    done = Flow.objects.create(
        routine=r, routine_version=r.version, steps=steps, owner=user, state="complete"
    )
    return {flow.wait_reason: flow.pk for flow in made} | {"": done.pk}


def found(user, text: str) -> set[int]:
    return set(api.filter_flows(user, {"search": text}).values_list("pk", flat=True))


def indexed(pk: int) -> list[str]:
    """What engine_flow_search holds of a flow (SQLite)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_reason FROM engine_flow_search WHERE rowid = %s", [pk])
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.parametrize("common", [False, True], ids=["by the index", "in the list's order"])
def test_a_search_matches_what_icontains_matches(user, flows, monkeypatch, common):
    if common:  # SQLite: as if the text were common (no index; the flows read in order)
        monkeypatch.setattr(queries, "_SQLITE_COMMON", 0)
    ids = set(flows.values())
    for text in SEARCHES:
        expected = set(
            Flow.objects.filter(wait_reason__icontains=text).values_list("pk", flat=True)
        )
        assert found(user, text) == expected & ids, text
    # What that is, where every database agrees (ASCII cases, `%`, `_`, `\` and `"` as text).
    assert found(user, "nvOIce 4242") == {flows["Approval of INVOICE 4242"]}
    assert found(user, "Sign-Off") == {flows["manager sign-off for order 17"]}
    assert found(user, "0% d") == {flows["100% done"]}  # not "1000 done"
    assert found(user, "a_b") == {flows["a_b c"]}  # not "axb c"
    assert found(user, "k\\s") == {flows["back\\slash"]}
    assert found(user, 'y "h') == {flows['say "hi" now']}
    assert found(user, "no such thing") == set()
    # Beyond ASCII, the case is the database's: SQLite's LIKE folds ASCII letters only (its
    # index folds more: the LIKE beside it decides), PostgreSQL's UPPER every letter.
    both = {flows["École d'été"], flows["ÉCOLE D'ÉTÉ"]}
    assert found(user, "ÉCOLE") == both
    assert found(user, "école") == (set() if _sqlite() else both)


def test_the_index_follows_each_change_of_a_reason(user, flows):
    pk = flows["Approval of INVOICE 4242"]
    Flow.objects.filter(pk=pk).update(wait_reason="Approval of credit note 77")
    assert pk not in found(user, "invoice 4242")
    assert found(user, "credit NOTE") == {pk}
    flow = Flow.objects.get(pk=pk)
    flow.wait_reason = "Countersign the lease"
    flow.save()
    assert found(user, "credit note") == set() and found(user, "the lease") == {pk}
    if _sqlite():
        assert indexed(pk) == ["Countersign the lease"]
    # The flow stops waiting: its reason is gone, and so is its row of the index.
    Flow.objects.filter(pk=pk).update(state="complete", wait_reason="", finished=timezone.now())
    assert found(user, "the lease") == set()
    if _sqlite():
        assert indexed(pk) == []
    # A write that leaves the reason as it is (every step's write sets it) changes nothing.
    other = flows["manager sign-off for order 17"]
    Flow.objects.filter(pk=other).update(wait_reason="manager sign-off for order 17", position=1)
    assert found(user, "sign-off") == {other}
    # A deleted flow leaves the index.
    Flow.objects.filter(pk=other).delete()
    assert found(user, "sign-off") == set()
    if _sqlite():
        assert indexed(other) == []
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT (SELECT count(*) FROM engine_flow_search), "
                "(SELECT count(*) FROM engine_flow WHERE wait_reason <> '')"
            )
            in_index, waiting = cursor.fetchone()
        assert in_index == waiting


@pytest.mark.parametrize("listed", [1000, 0], ids=["listed", "by a subquery"])
def test_the_other_matches_of_a_search_stay(user, other_user, routine, flows, monkeypatch, listed):
    """The routine's name (any part), the username (all of it) and the flow's number (the
    routines and users named as a list of ids, or by a subquery when they are many)."""
    monkeypatch.setattr(queries, "_LISTED", listed)
    invoices = routine("t_echo", name="Invoices of March")
    bobs = api.start_flow(invoices, other_user)
    operator = _operator(user)
    assert bobs.pk in found(operator, "OF MARCH")
    assert bobs.pk in found(operator, "BOB") and bobs.pk not in found(operator, "bo")
    assert found(operator, f"#{bobs.pk}") == {bobs.pk}
    assert bobs.pk in found(operator, str(bobs.pk))
    # a text that names a routine, a user and wait reasons matches all of them
    Flow.objects.filter(pk=bobs.pk).update(wait_reason="", state="complete")
    assert found(operator, "invoice") == {bobs.pk, flows["Approval of INVOICE 4242"]}


def test_the_sqlite_plan_reads_the_fts_table(user, flows):
    if not _sqlite():
        pytest.skip("the SQLite plan (this run is on PostgreSQL, whose test is the next one)")
    listed = api.filter_flows(user, {"search": "invoice 4242"})
    for query in (listed.order_by(*queries.ORDER)[:51], listed.order_by().values("pk")[:10001]):
        sql, params = query.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
        # The FTS5 table's own index (its MATCH: `M`), not a scan of every wait reason.
        assert "SCAN engine_flow_search VIRTUAL TABLE INDEX 0:M" in plan, plan


def test_the_postgresql_plan_reads_the_trigram_index(user, flows):
    if connection.vendor != "postgresql":
        pytest.skip(
            "runs on PostgreSQL: in the scale-out pass (tests/test_scaleout.py), which needs "
            "PostgreSQL at 127.0.0.1:5432 and is required under CI=true"
        )
    # An operator's: the search alone narrows the flows.
    matching = api.filter_flows(_operator(user), {"search": "invoice 4242"})
    listed = matching.order_by().values("pk")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a few rows: else a scan is cheaper
        plan = listed.explain()
    # The partial index: the search implies its condition (a reason that is not empty).
    assert "flow_wait_reason_trgm" in plan, plan
    assert list(listed) == [{"pk": flows["Approval of INVOICE 4242"]}]


def _sqlite() -> bool:
    return connection.vendor == "sqlite"


def _operator(user):
    user.user_permissions.add(Permission.objects.get(codename="operate_flow"))
    return type(user).objects.get(pk=user.pk)  # permissions are cached per instance
