"""The HTML fragments the live consumer pushes: a flow page's and an LTM run page's live
areas and dashboard rows, rendered by `studio.web.pages` for the watching user from the pages'
own partial templates, exactly as the pages render them.

Every watcher of a stream in the same role gets the same fragment for the same event, so
renders are cached per (stream, seq, role): a hundred watchers cost one render (and one
graphviz run), not a hundred. A flow's page differs between viewers
(`studio.web.pages.viewer_role`): operators (staff or not: tracebacks), its owner (the
overrides; the form only when the wait is not assigned to others) and each assignee (the
form, results only if the step shows them, no overrides). An LTM run's role is staff or not.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from django.template.loader import render_to_string

from engine import api
from engine.models import Flow
from studio.web import bulk as bulk_pages
from studio.web import pages

_CACHE_SIZE = 512
_cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_cache_lock = threading.Lock()


def _cached(key: tuple[Any, ...], render: Any) -> Any:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = render()
    with _cache_lock:
        _cache[key] = value
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return value


def peek(kind: str, key: Any, seq: int, role: Any) -> dict[str, str] | None:
    """The cached fragments, without touching the database (safe in the event loop)."""
    with _cache_lock:
        return _cache.get((kind, key, seq, role))


def fragments(
    user: Any, kind: str, key: Any, event: dict[str, Any], role: Any = None
) -> dict[str, str]:
    """The page fragments that show the stream's current state, by element id, for a
    watcher in `role` (a flow's `pages.viewer_role`, an LTM run's staff or not; found
    here when not given)."""
    if role is None:
        role = bool(user.is_staff) if kind != "flow" else _role(user, key)
    if kind == "flow":
        return _cached(
            ("flow", key, event["seq"], role), lambda: _flow_fragments(user, key, event["seq"])
        )
    return _cached(("ltm", key, event["seq"], role), lambda: _ltm_fragments(user, key))


def _role(user: Any, flow_id: int) -> Any:
    flow = Flow.objects.filter(pk=flow_id).only("id", "owner_id").first()
    return None if flow is None else pages.viewer_role(user, flow)


def _flow_fragments(user: Any, flow_id: int, seq: int) -> dict[str, str]:
    flow = pages.seen_flow(user, flow_id)
    if flow is None:  # an assignee whose wait is over: the flow is no longer theirs to see
        return gone(flow_id, seq)
    return {"flow-live": render_to_string(pages.FLOW_LIVE, pages.flow_live(user, flow))}


def gone(flow_id: int, seq: int) -> dict[str, str]:
    """What a flow page shows once its viewer may no longer see the flow (an assignee, after
    the wait): that it no longer waits for them, and nothing of it."""
    context = {"flow_id": flow_id, "seq": seq}
    return {"flow-live": render_to_string("studio/partials/_flow_answered.html", context)}


def _ltm_fragments(user: Any, run_id: Any) -> dict[str, str]:
    run = pages.visible_run(user, run_id)
    if run is None:
        return {}
    return {"ltm-run-live": render_to_string(pages.LTM_RUN_LIVE, pages.ltm_run_live(run))}


def peek_row(flow_id: int, seq: int) -> str | None:
    with _cache_lock:
        return _cache.get(("row", flow_id, seq))


def row(flow_id: int, seq: int) -> str:
    """The dashboard row of a flow as of event `seq` (the same for everyone who sees it; the
    caller's group membership is the permission)."""
    return _cached(("row", flow_id, seq), lambda: _row(flow_id))


def _row(flow_id: int) -> str:
    context = pages.flow_row(flow_id)
    return "" if context is None else render_to_string(pages.FLOW_ROW, context)


def bulk(user: Any, pk: int) -> tuple[tuple[int, str], dict[str, str]] | None:
    """A bulk action's progress as its page shows it, for its user (None if it is not
    theirs, or gone): ((processed, state), {element id: fragment})."""
    found = api.visible_bulk_actions(user).defer("flow_ids").filter(pk=pk).first()
    if found is None:
        return None
    context = bulk_pages.progress(user, found)
    html = render_to_string(bulk_pages.PROGRESS, context)
    return (found.processed, found.state), {f"bulk-{pk}": html}
