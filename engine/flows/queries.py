"""Which flows a list shows: ONE filter for the dashboard, "Waiting for me", the REST API's
listing and the bulk actions (a bulk action over "every flow matching this filter" acts on
exactly the flows the dashboard lists for it).

A filter narrows by state, routine, owner (a user id, or a username) and a search, which
matches the routine's name and the wait reason (any part, any case), the owner's username
(all of it, any case) and the flow's number (`17`); `#17` matches flow 17 only. It adds no
query of its own: every criterion is a condition of the one query that lists the flows.

What it costs over many flows (the lists read them newest first, `ORDER`, and count up to
`COUNT_LIMIT`): state, routine and owner each read an index in that order
(flow_state_recent, flow_routine_recent, flow_owner_recent), and `#17` one row. A search of
text reads the flows newest first until it has a page (and the count until it has
COUNT_LIMIT + 1): fast when the text is common, but text that few or no flows match reads
every visible flow (no index finds "any part" of a wait reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
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


def narrow(flows: QuerySet[Flow], flow_filter: FlowFilter) -> QuerySet[Flow]:
    """`flows` narrowed by `flow_filter` (no query is run)."""
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
        # The routines and users a search names are looked up in their own (small) tables, in
        # subqueries of the one query: no join for each flow.
        routines = Routine.objects.filter(name__icontains=query).values("pk")
        users = get_user_model().objects.filter(username__iexact=query).values("pk")
        match = Q(routine_id__in=routines) | Q(wait_reason__icontains=query)
        match |= Q(owner_id__in=users)
        if (number := parse_id(query.lstrip("#"))) is not None:
            match |= Q(pk=number)
        flows = flows.filter(match)
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


def count_upto(flows: QuerySet[Flow], limit: int | None = None) -> tuple[int, bool]:
    """How many flows `flows` has, counting no further than `limit` (COUNT_LIMIT): `(n,
    False)` exactly, or `(limit, True)` when there are more. One query that reads at most
    `limit + 1` rows (`SELECT count(*) FROM (SELECT ... LIMIT limit + 1)`)."""
    limit = COUNT_LIMIT if limit is None else limit
    counted = flows.order_by().values("pk")[: limit + 1].count()
    return (limit, True) if counted > limit else (counted, False)


def filter_flows(user: Any, filters: FlowFilter | Mapping[str, Any]) -> QuerySet[Flow]:
    """The flows `user` may see (`visible_flows`) that match `filters` (a `FlowFilter`, or
    its JSON: see `filter_from_json`). Unordered: the caller orders and pages."""
    return narrow(visible_flows(user), filter_from_json(filters))
