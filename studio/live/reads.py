"""What the live consumer reads: the values a client sends (stream keys, sequence numbers,
dashboard rows), and from the database who may watch what, the stored events and what a
dashboard lacks."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.db.models import Q

from engine import api
from engine.models import BulkAction, Flow, FlowEvent, LtmEvent, LtmRun
from studio.web.pages import HIDDEN_EVENT_KEYS, viewer_role

MAX_ID = api.MAX_ID  # the largest database integer: ids and sequence numbers beyond are no one's


def count(value: Any, least: int = 0) -> int | None:
    """`value` if it is a JSON integer in [least, MAX_ID] (not a bool, a float, a string)."""
    if isinstance(value, int) and not isinstance(value, bool) and least <= value <= MAX_ID:
        return value
    return None


def parse_key(kind: str, key: Any) -> Any:
    """A stream's key from a client: a flow's id (a positive integer) or an LTM run's id (a
    UUID string); None for anything else."""
    if kind == "flow":
        return count(key, least=1)
    if kind == "ltm" and isinstance(key, str) and len(key) <= 64:
        try:
            return str(uuid.UUID(key))
        except ValueError:
            return None
    return None


MAX_ROWS = 500  # dashboard rows a client may report at once (a page shows 50)
_ROW_ID = re.compile(r"[1-9][0-9]{0,18}")


def parse_rows(rows: Any) -> dict[int, int] | None:
    """The dashboard rows a client shows, `{"<flow id>": <seq of the row>}`; None if that is
    not what `rows` is (or it is more than MAX_ROWS of them)."""
    if rows is None:
        return {}
    if not isinstance(rows, dict) or len(rows) > MAX_ROWS:
        return None
    shown: dict[int, int] = {}
    for key, seq in rows.items():
        flow = count(int(key), least=1) if _ROW_ID.fullmatch(key) else None
        seq = count(seq)
        if flow is None or seq is None:
            return None
        shown[flow] = seq
    return shown


def sees_everything(user: Any) -> bool:
    return api.can_see_all(user)


def may_see(user: Any, kind: str, key: Any) -> bool:
    """Whether `user` may watch the stream: a flow whose page they may see (its owner,
    operators, the assignees of its wait while it waits for them), an LTM run of theirs."""
    if kind == "flow":
        return flow_role(user, key) is not None
    return api.visible_ltm_runs(user).filter(pk=key).exists()


def flow_role(user: Any, key: Any) -> tuple[Any, ...] | None:
    """What `user` is to the flow's page (`studio.web.pages.viewer_role`); None when they may
    not see it (`engine.api.can_see_flow`), exactly as its page answers 404."""
    flow = Flow.objects.filter(pk=key).only("id", "owner_id", "state").first()
    if flow is None or not api.can_see_flow(user, flow):
        return None
    return viewer_role(user, flow)


def limited_event(event: dict[str, Any]) -> dict[str, Any]:
    """An event as an assignee's socket gets it: without the results and inputs its data
    holds (as the REST API hides them; their page shows what their step lets them see)."""
    data = event.get("data")
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in HIDDEN_EVENT_KEYS}
    return {**event, "data": data}


def unread(user: Any) -> int:
    return api.unread_count(user)


def events_since(kind: str, key: Any, since: int, until: int | None = None) -> list[dict[str, Any]]:
    if kind == "flow":
        rows = FlowEvent.objects.filter(flow_id=key, seq__gt=since)
        if until is not None:
            rows = rows.filter(seq__lte=until)
        flow = Flow.objects.only("owner_id").get(pk=key)
        return [
            {**row.as_dict(), "type": "flow.event", "owner": flow.owner_id}
            for row in rows.order_by("seq")
        ]
    ltm_rows = LtmEvent.objects.filter(run_id=key, seq__gt=since)
    if until is not None:
        ltm_rows = ltm_rows.filter(seq__lte=until)
    return [{**row.as_dict(), "type": "ltm.event"} for row in ltm_rows.order_by("seq")]


def latest_seqs(streams: list[tuple[str, Any]]) -> dict[tuple[str, Any], int]:
    """The last stored sequence number of each stream (two queries at most)."""
    flows = [key for kind, key in streams if kind == "flow"]
    runs = [key for kind, key in streams if kind == "ltm"]
    latest: dict[tuple[str, Any], int] = {}
    for pk, seq in Flow.objects.filter(pk__in=flows).values_list("pk", "seq"):
        latest[("flow", pk)] = seq
    if runs:
        for run_pk, seq in LtmRun.objects.filter(pk__in=runs).values_list("pk", "seq"):
            latest[("ltm", str(run_pk))] = seq
    return latest


def newer_rows(known: dict[int, int]) -> list[dict[str, Any]]:
    """The last stored event of each dashboard row whose flow moved past the sequence number
    `known` has for it (a row whose last message was lost)."""
    seqs = Flow.objects.filter(pk__in=list(known)).values_list("pk", "seq")
    return last_events([(pk, seq) for pk, seq in seqs if seq > known[pk]])


def last_events(flows: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """The events of these (flow, seq) pairs — each the last of its flow — in this order."""
    if not flows:
        return []
    last = Q()
    for pk, seq in flows:
        last |= Q(flow_id=pk, seq=seq)
    found = {row.flow_id: row.as_dict() for row in FlowEvent.objects.filter(last)}
    return [found[pk] for pk, _ in flows if pk in found]


def dashboard_lacks(
    user: Any, shown: dict[int, int], after: int | None, newest: int = 50
) -> tuple[list[dict[str, Any]], dict[int, bool]]:
    """What a dashboard lacks that shows the rows `shown` (flow id: the seq its row shows)
    and, if it adds new flows as they come, every flow up to id `after`: the last event of
    each shown row of `user`'s that moved since, then of the `newest` flows after `after`
    (oldest first, so that each new row goes on top of the one before). Also, for each shown
    row `user` may see, whether its flow has finished."""
    visible = api.visible_flows(user).select_related(None)
    rows = list(visible.filter(pk__in=list(shown)).values_list("pk", "seq", "state"))
    finished = {pk: state in api.FINISHED for pk, seq, state in rows}
    moved = [(pk, seq) for pk, seq, _ in rows if seq > shown[pk]]
    if after is not None:
        new = visible.filter(pk__gt=after, seq__gt=0).order_by("-pk").values_list("pk", "seq")
        moved += [(pk, seq) for pk, seq in reversed(new[:newest]) if pk not in shown]
    return last_events(moved), finished


BULK_RUNNING = (BulkAction.QUEUED, BulkAction.RUNNING)


def bulk_progress(user: Any, keys: list[int]) -> dict[int, tuple[int, str]]:
    """How far each of these bulk actions of `user`'s got, (processed, state); another
    user's and missing ones are left out."""
    rows = api.visible_bulk_actions(user).filter(pk__in=keys)
    return {
        pk: (processed, state)
        for pk, processed, state in rows.values_list("pk", "processed", "state")
    }
