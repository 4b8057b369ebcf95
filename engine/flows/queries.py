"""Which flows a list shows: ONE filter for the dashboard, "Waiting for me", the REST API's
listing and the bulk actions (a bulk action over "every flow matching this filter" acts on
exactly the flows the dashboard lists for it).

A filter narrows by state, routine, owner (a user id, or a username) and a search, which
matches the routine's name and the wait reason (any part, any case), the owner's username
(all of it, any case) and the flow's number (`17` or `#17`). It adds no query of its own:
every criterion is a condition of the one query that lists the flows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet

from engine.flows.models import Flow
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
    if query:
        match = Q(routine__name__icontains=query) | Q(wait_reason__icontains=query)
        match |= Q(owner__username__iexact=query)
        if (number := parse_id(query.lstrip("#"))) is not None:
            match |= Q(pk=number)
        flows = flows.filter(match)
    return flows


def filter_flows(user: Any, filters: FlowFilter | Mapping[str, Any]) -> QuerySet[Flow]:
    """The flows `user` may see (`visible_flows`) that match `filters` (a `FlowFilter`, or
    its JSON: see `filter_from_json`). Unordered: the caller orders and pages."""
    return narrow(visible_flows(user), filter_from_json(filters))
