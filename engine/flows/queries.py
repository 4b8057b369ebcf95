"""Which flows a list shows: ONE filter for the dashboard, "Waiting for me", the REST API's
listing and the bulk actions (a bulk action over "every flow matching this filter" acts on
exactly the flows the dashboard lists for it).

A filter narrows by state, routine, owner (a user id, or a username) and a search, which
matches the routine's name and the wait reason (any part, any case), the owner's username
(all of it, any case) and the flow's number (`17`); `#17` matches flow 17 only. Every
criterion is a condition of the one query that lists the flows; a search of text first looks
up the routines and users it names, in one query of their own (small) tables.

What it costs over many flows (the lists read them newest first, `ORDER`, and count up to
`COUNT_LIMIT`): state, routine and owner each read an index in that order
(flow_state_recent, flow_routine_recent, flow_owner_recent), and `#17` one row. A search's
wait reason is found by a trigram index of the flows that have one (migration 0008): on
PostgreSQL the partial GIN index flow_wait_reason_trgm, on SQLite the FTS5 table
engine_flow_search (text of 3 characters or more). The query of the flows names the
routines and users found, so that its planner knows how many flows each matches: few, and it
reads them by their indexes and sorts them; many, and it reads the flows in the list's order
until it has a page (SQLite, whose planner cannot tell, is told: see _SQLITE_COMMON).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import F, Q, QuerySet, Value
from django.db.models.expressions import Combinable, RawSQL
from django.db.models.functions import NullIf, Upper
from django.db.models.lookups import Contains, Exact, In
from django.utils import timezone

from engine.flows.models import Flow, Routine
from engine.flows.service import visible_flows
from engine.flows.status import FlowState
from engine.jsonsafe import MAX_ID, parse_id, text_problem

# The longest text a search can match (a wait reason); a longer search matches nothing.
LONGEST_SEARCHED: int = Flow._meta.get_field("wait_reason").max_length or 500
FILTER_KEYS = ("state", "routine", "owner", "search")
NOTHING = -1  # an id no row has: a filter naming it matches nothing


@dataclass(frozen=True)
class FlowFilter:
    """What a list is narrowed by. Empty values narrow nothing."""

    state: str = ""  # a FlowState value
    routine: int | None = None  # a routine's id
    owner: int | str | None = None  # a user's id, or their username
    search: str = ""

    @property
    def active(self) -> bool:
        """Whether it narrows anything."""
        return bool(self.state or self.routine is not None or self.owner is not None or self.search)

    def as_json(self) -> dict[str, Any]:
        """The criteria it has, as JSON (what a bulk action records of its selection)."""
        values = {
            "state": self.state,
            "routine": self.routine,
            "owner": self.owner,
            "search": self.search,
        }
        return {key: value for key, value in values.items() if value not in ("", None)}


def _lenient_id(value: Any) -> int | None:
    """An id from a query string: None (no filter) unless it is a number; 0 or a number too
    large for any id is NOTHING (the filter then matches nothing)."""
    if not isinstance(value, str) or not value or not (value.isascii() and value.isdigit()):
        return None
    return parse_id(value) or NOTHING


def parse_filter(params: Mapping[str, Any]) -> FlowFilter:
    """The filter of a list's query parameters (`state`, `routine`, `owner` (an id), and `q`
    for the search), read leniently as a page's query string is: an unknown state or an id
    that is not a number is ignored; an id no record can have matches nothing."""
    state = params.get("state") or ""
    search = params.get("q") or ""
    return FlowFilter(
        state=state if state in FlowState.values else "",
        routine=_lenient_id(params.get("routine")),
        owner=_lenient_id(params.get("owner")),
        search=search.strip() if isinstance(search, str) else "",
    )


def _strict_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise ValueError(f"filter.{what} must be a {what}'s id (a whole number, 1 or more)")
    return value


def filter_from_json(value: Any) -> FlowFilter:
    """A filter given as JSON (`{"state": "failed", "routine": 4, "owner": "alice" or 7,
    "search": "invoice"}`), read strictly: ValueError naming what is wrong (an unknown key or
    state, an id that is not a positive whole number, text no database stores)."""
    if isinstance(value, FlowFilter):
        return value
    if not isinstance(value, Mapping):
        raise ValueError('a filter is an object: {"state", "routine", "owner", "search"}')
    unknown = sorted(str(key) for key in value if key not in FILTER_KEYS)
    if unknown:
        raise ValueError(
            f"unknown filter key(s) {', '.join(unknown)}: a filter has {', '.join(FILTER_KEYS)}"
        )
    state = value.get("state") or ""
    if state and state not in FlowState.values:
        raise ValueError(f"filter.state must be one of {', '.join(FlowState.values)}")
    routine = value.get("routine")
    owner = value.get("owner")
    if owner is not None and not isinstance(owner, str):
        owner = _strict_id(owner, "owner")
    elif isinstance(owner, str) and (not owner or len(owner) > 150 or text_problem(owner)):
        raise ValueError("filter.owner must be a username (or a user's id)")
    search = value.get("search") or ""
    if not isinstance(search, str) or text_problem(search):
        raise ValueError("filter.search must be text")
    return FlowFilter(
        state=state,
        routine=None if routine is None else _strict_id(routine, "routine"),
        owner=owner,
        search=search.strip(),
    )


# PostgreSQL: the wait reason as the partial trigram index flow_wait_reason_trgm (migration
# 0008) holds it: upper case, NULL when empty. Matching it (`LIKE`, strict) implies its
# condition (`IS NOT NULL`), so the index serves the search; and its own statistics say how
# many flows a text matches, so the planner reads that index for rare text and the flows in
# the list's order for common text.
_PG_REASON = NullIf(Upper("wait_reason"), Value(""))
# SQLite: the flows whose wait reason holds a text, by the FTS5 trigram table that migration
# 0008 keeps (rowid = the flow's id): a phrase of the text's trigrams, any case. It folds case
# as Unicode does where SQLite's LIKE folds ASCII only, so the flow's own `icontains` beside it
# decides (and `%`, `_` and `\` are text to a phrase: no pattern to escape).
_SQLITE_TABLE = "engine_flow_search"
_SQLITE_SEARCH = f"SELECT rowid FROM {_SQLITE_TABLE} WHERE {_SQLITE_TABLE} MATCH %s"
_SQLITE_TRIGRAM = 3  # the shortest text its index finds
# SQLite's planner does not know how many flows a routine, a user or a text matches: from this
# many, a search reads the flows in the list's order (a page stops at its 51st match, a count
# at COUNT_LIMIT + 1); below it, it reads the matches by their indexes and sorts them.
_SQLITE_COMMON = 10_000
# More routines or users than this named by a search are matched by a subquery, not a list.
_LISTED = 1_000


@dataclass(frozen=True)
class _Named:
    """What a search's text names, found in one query before the query of the flows."""

    routines: list[int]  # the routines whose name holds it (any case)
    users: list[int]  # the users whose username it is (any case)
    common: bool  # SQLite: whether those and the wait reasons match _SQLITE_COMMON flows


def _phrase(query: str) -> str:
    return '"' + query.replace('"', '""') + '"'


def _named(flows: QuerySet[Flow], query: str) -> _Named:
    """The routines and users a search names, from their own (small) tables, and on SQLite
    whether the flows it matches are many (counted no further than _SQLITE_COMMON, by the
    indexes): one query."""
    database = flows.db
    routines = Routine.objects.using(database).filter(name__icontains=query).order_by()
    users = get_user_model().objects.using(database).filter(username__iexact=query).order_by()
    routine_sql, routine_params = routines.values("pk").query.sql_with_params()
    user_sql, user_params = users.values("pk").query.sql_with_params()
    sql = (
        f"SELECT 0, r.* FROM ({routine_sql} LIMIT {_LISTED + 1}) r "
        f"UNION ALL SELECT 1, u.* FROM ({user_sql} LIMIT {_LISTED + 1}) u"
    )
    params: list[Any] = [*routine_params, *user_params]
    sqlite = connections[database].vendor == "sqlite"
    if sqlite and len(query) >= _SQLITE_TRIGRAM:
        table = Flow._meta.db_table
        routine_id = Flow._meta.get_field("routine").column
        owner_id = Flow._meta.get_field("owner").column
        sql += (
            f" UNION ALL SELECT 2, count(*) FROM (SELECT 1 FROM {table} WHERE {routine_id} IN "
            f"({routine_sql}) UNION ALL SELECT 1 FROM {table} WHERE {owner_id} IN ({user_sql}) "
            f"UNION ALL SELECT 1 FROM {_SQLITE_TABLE} WHERE {_SQLITE_TABLE} MATCH %s "
            f"LIMIT {_SQLITE_COMMON})"
        )
        params += [*routine_params, *user_params, _phrase(query)]
    named = _Named([], [], common=sqlite and len(query) < _SQLITE_TRIGRAM)
    with connections[database].cursor() as cursor:
        cursor.execute(sql, params)
        for kind, value in cursor.fetchall():
            if kind == 2:
                named = _Named(named.routines, named.users, common=value >= _SQLITE_COMMON)
            else:
                (named.routines, named.users)[kind].append(value)
    return named


def _search(flows: QuerySet[Flow], query: str) -> Q:
    """The flows a search's text matches: its routines, its user, the wait reasons that hold
    it (any case: Django's `icontains`), and the flow it numbers."""
    named = _named(flows, query)
    vendor = connections[flows.db].vendor
    routine: Combinable = F("routine_id")
    owner: Combinable = F("owner_id")
    pk: Combinable = F("pk")
    if vendor == "sqlite" and named.common:
        # The flows in the list's order, no index of the routine, owner or id (`+ 0`): the
        # page stops at its 51st match, the count at COUNT_LIMIT + 1.
        routine, owner, pk = routine + 0, owner + 0, pk + 0
        reason = Q(wait_reason__icontains=query)
    elif vendor == "sqlite" and len(query) >= _SQLITE_TRIGRAM:
        reason = Q(pk__in=RawSQL(_SQLITE_SEARCH, (_phrase(query),)))
        reason &= Q(wait_reason__icontains=query)
    elif vendor == "postgresql":
        reason = Q(Contains(_PG_REASON, Upper(Value(query))))
    else:
        reason = Q(wait_reason__icontains=query)
    match = reason
    if len(named.routines) > _LISTED:  # (a text most routines' names hold)
        match |= Q(In(routine, Routine.objects.filter(name__icontains=query).values("pk")))
    elif named.routines:
        match |= Q(In(routine, named.routines))
    if len(named.users) > _LISTED:
        match |= Q(In(owner, get_user_model().objects.filter(username__iexact=query).values("pk")))
    elif named.users:
        match |= Q(In(owner, named.users))
    if (number := parse_id(query.lstrip("#"))) is not None:
        match |= Q(Exact(pk, number))
    return match


def narrow(flows: QuerySet[Flow], flow_filter: FlowFilter) -> QuerySet[Flow]:
    """`flows` narrowed by `flow_filter` (no query is run, but the one of a search of text:
    the routines and users it names)."""
    if flow_filter.state:
        flows = flows.filter(state=flow_filter.state)
    if flow_filter.routine is not None:
        flows = flows.filter(routine_id=flow_filter.routine)
    if isinstance(flow_filter.owner, str):
        flows = flows.filter(owner__username=flow_filter.owner)
    elif flow_filter.owner is not None:
        flows = flows.filter(owner_id=flow_filter.owner)
    query = flow_filter.search
    if query and (len(query) > LONGEST_SEARCHED or text_problem(query)):
        # Nothing stored is that long, or holds a NUL character or a lone surrogate.
        return flows.none()
    if query.startswith("#") and (number := parse_id(query[1:])) is not None:
        return flows.filter(pk=number)  # `#17`: that flow only (its primary key: no scan)
    if query:
        flows = flows.filter(_search(flows, query))
    return flows


# --- lists of many flows: newest first, a page after a cursor, a count that stops ------------

# The order of every list of flows (the index flow_recent and the filters' indexes follow it).
ORDER = ("-updated", "-id")
# A count stops there: past it a list says "10,000+" (a bulk action takes at most as many).
COUNT_LIMIT = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def cursor_of(flow: Flow) -> str:
    """A flow's place in the list (ORDER), as a page's link names it: `<updated in
    microseconds since 1970>-<id>`."""
    updated = flow.updated
    if timezone.is_naive(updated):
        updated = timezone.make_aware(updated, UTC)
    return f"{(updated - _EPOCH) // _MICROSECOND}-{flow.pk}"


def parse_cursor(text: Any) -> tuple[datetime, int] | None:
    """The place a cursor names; None for anything else (the list then starts at the top)."""
    if not isinstance(text, str) or text.count("-") != 1:
        return None
    moment, _, pk = text.partition("-")
    if not (moment.isascii() and moment.isdigit() and len(moment) <= 17):
        return None
    number = parse_id(pk)
    if number is None:
        return None
    updated = _EPOCH + int(moment) * _MICROSECOND
    return (updated if timezone.is_aware(timezone.now()) else updated.replace(tzinfo=None)), number


def _older_than(place: tuple[datetime, int]) -> Q:
    updated, pk = place
    # `updated <= u` alone bounds an index range; the OR then sorts out the ties.
    return Q(updated__lte=updated) & (Q(updated__lt=updated) | Q(pk__lt=pk))


def _newer_than(place: tuple[datetime, int]) -> Q:
    updated, pk = place
    return Q(updated__gte=updated) & (Q(updated__gt=updated) | Q(pk__gt=pk))


@dataclass(frozen=True)
class KeysetPage:
    """One page of a list in ORDER: its flows, and whether flows come before (newer) and
    after (older) it, with the cursors of the links to those pages."""

    flows: list[Flow]
    has_newer: bool
    has_older: bool

    @property
    def newer(self) -> str:
        return cursor_of(self.flows[0]) if self.flows and self.has_newer else ""

    @property
    def older(self) -> str:
        return cursor_of(self.flows[-1]) if self.flows and self.has_older else ""

    @property
    def first(self) -> bool:
        """Whether it is the top of the list (where new flows appear)."""
        return not self.has_newer


def keyset_page(
    flows: QuerySet[Flow], size: int, *, older: Any = None, newer: Any = None
) -> KeysetPage:
    """The page of `size` flows of `flows` just after the cursor `older` (the "Older" link)
    or just before `newer` ("Newer"), or the first page: one query (two for a "Newer" page
    that reaches the top: the first page then), never an OFFSET. A flow updated meanwhile
    moves to the top of the list: it is not shown again further down, and no other flow is
    skipped or shown twice."""
    after = parse_cursor(older)
    before = None if after is not None else parse_cursor(newer)
    if before is not None:
        rows = list(flows.filter(_newer_than(before)).order_by("updated", "id")[: size + 1])
        if len(rows) > size:
            return KeysetPage(rows[:size][::-1], has_newer=True, has_older=True)
        after = None  # at the top: the first page, full
    if after is not None:
        rows = list(flows.filter(_older_than(after)).order_by(*ORDER)[: size + 1])
        return KeysetPage(rows[:size], has_newer=True, has_older=len(rows) > size)
    rows = list(flows.order_by(*ORDER)[: size + 1])
    return KeysetPage(rows[:size], has_newer=False, has_older=len(rows) > size)


@dataclass(frozen=True)
class FlowCount:
    """How many flows a list has, as far as it was counted.

    - `count` flows exactly (`capped` false);
    - more than `count` (`capped`): the count stopped at its limit;
    - or no count at all (`estimate` set; `count` is then the limit and `capped` true, as
      for a count that stopped: more may match): counting would have read too many flows
      (`count_upto`), and the database's planner expects about `estimate`, from its
      statistics. An estimate can be wrong (statistics out of date, a text they misjudge),
      so it is said as one, never as a count."""

    count: int
    capped: bool = False
    estimate: int | None = None

    @property
    def text(self) -> str:
        """As a list says it: "1,234", "10,000+" or "about 52,000"."""
        if self.estimate is not None:
            return f"about {self.estimate:,}"
        return f"{self.count:,}{'+' if self.capped else ''}"

    @property
    def title(self) -> str:
        """What a count that is not exact means, said in full ("" for an exact one)."""
        if self.estimate is not None:
            return (
                "Estimated from the database's statistics: counting these flows would read "
                "too many, so they were not counted"
            )
        return f"More than {self.count:,}: the count stops there" if self.capped else ""


def count_upto(flows: QuerySet[Flow], limit: int | None = None) -> FlowCount:
    """How many flows `flows` has, counting no further than `limit` (COUNT_LIMIT): exactly,
    or `limit` and `capped` when there are more. The count is one query that reads at most
    `limit + 1` matching rows (`SELECT count(*) FROM (SELECT ... LIMIT limit + 1)`).

    On PostgreSQL its planner is asked first (`EXPLAIN`, which reads no row), and nothing is
    counted (the answer is the planner's `estimate`, to two significant figures, said as
    one) where:

    - it expects more than `_SURELY_MORE` times `limit` flows: a broad search counted
      10,001 matching rows one by one, most of its page's time;
    - or it would read the whole table to count (a sequential scan: a search too short for
      the trigram index) and the table holds more than `_SURELY_MORE` times `limit` flows:
      a search matching fewer than `limit` flows read every flow to count them (200,000
      flows: 70 ms). This is decided in the counting statement itself (no query more).

    An estimate errs where the statistics do (out of date, a text they misjudge); it is
    said as one, never as a count."""
    limit = COUNT_LIMIT if limit is None else limit
    matching = flows.order_by().values("pk")
    plan = _plan(matching)
    expected = 0.0 if plan is None else float(plan["Plan Rows"])
    if expected > _SURELY_MORE * limit:
        return FlowCount(limit, True, estimate=_two_figures(expected))
    if plan is not None and _reads_every_flow(plan):
        scanned = _count_unless_many_flows(matching, limit, _SURELY_MORE * limit)
        if scanned is None:
            return FlowCount(limit, True, estimate=_two_figures(expected))
        counted = scanned
    else:
        counted = matching[: limit + 1].count()
    return FlowCount(limit, True) if counted > limit else FlowCount(counted)


def count_listed(flows: QuerySet[Flow], page: KeysetPage, limit: int | None = None) -> FlowCount:
    """`count_upto(flows, limit)` for a list of which `page` is shown: where the page holds
    the whole list (no flow newer, none older), its length, with no query."""
    limit = COUNT_LIMIT if limit is None else limit
    if page.has_newer or page.has_older:
        return count_upto(flows, limit)
    return FlowCount(limit, True) if len(page.flows) > limit else FlowCount(len(page.flows))


def _two_figures(number: float) -> int:
    """`number` rounded to two significant figures (52,345 -> 52,000): a planner's estimate
    is no more precise than that."""
    whole = max(int(round(number)), 0)
    scale = 10 ** max(len(str(whole)) - 2, 0)
    return round(whole / scale) * scale


# How many times the limit PostgreSQL's planner must expect before a count is not made.
_SURELY_MORE = 3


def planned_rows(queryset: QuerySet[Any]) -> float:
    """How many rows the database's planner expects `queryset` to return, reading none
    (PostgreSQL's `EXPLAIN`); 0 where it does not tell (SQLite)."""
    plan = _plan(queryset)
    return 0 if plan is None else float(plan["Plan Rows"])


def _plan(queryset: QuerySet[Any]) -> dict[str, Any] | None:
    """PostgreSQL's plan of `queryset` (`EXPLAIN`, which reads no row): its top node, each
    node's `Plans` under it; None where there is none (SQLite, a query that cannot match)."""
    db = connections[queryset.db]
    if db.vendor != "postgresql":
        return None
    try:
        sql, params = queryset.query.sql_with_params()
    except EmptyResultSet:  # (`none()`: a search that nothing stored can match)
        return None
    with db.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str | bytes):
        plan = json.loads(plan)
    top: dict[str, Any] = plan[0]["Plan"]
    return top


def _reads_every_flow(plan: dict[str, Any]) -> bool:
    """Whether the plan reads the flows' table from end to end (a sequential scan, parallel
    or not): no index narrows what it reads, as for a search too short for the trigram
    index."""
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") == Flow._meta.db_table:
        return True
    return any(_reads_every_flow(node) for node in plan.get("Plans", ()))


def _count_unless_many_flows(matching: QuerySet[Any], limit: int, most: int) -> int | None:
    """`matching` counted up to `limit + 1`, in one statement that first looks at how many
    flows the table holds by its statistics (`pg_class.reltuples`): None, with nothing
    counted, where that is more than `most` (PostgreSQL only)."""
    db = connections[matching.db]
    sql, params = matching[: limit + 1].query.sql_with_params()
    statement = (
        "SELECT CASE WHEN (SELECT reltuples FROM pg_class WHERE oid = %s::regclass) > %s "
        f"THEN NULL ELSE (SELECT count(*) FROM ({sql}) AS matching) END"
    )
    with db.cursor() as cursor:
        cursor.execute(statement, [Flow._meta.db_table, most, *params])
        counted = cursor.fetchone()[0]
    return None if counted is None else int(counted)


def filter_flows(user: Any, filters: FlowFilter | Mapping[str, Any]) -> QuerySet[Flow]:
    """The flows `user` may see (`visible_flows`) that match `filters` (a `FlowFilter`, or
    its JSON: see `filter_from_json`). Unordered: the caller orders and pages."""
    return narrow(visible_flows(user), filter_from_json(filters))
