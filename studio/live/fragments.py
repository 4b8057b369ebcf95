"""The HTML fragments the live consumer pushes: a flow page's and an LTM run page's live
areas and dashboard rows, rendered by `studio.web.pages` for the watching user from the pages'
own partial templates, exactly as the pages render them.

Every watcher of a stream gets the same fragment for the same event, so renders are cached
per (stream, seq, staff or not): a hundred watchers cost one render (and one graphviz run),
not a hundred.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from django.template.loader import render_to_string

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


def peek(user: Any, kind: str, key: Any, seq: int) -> dict[str, str] | None:
    """The cached fragments, without touching the database (safe in the event loop)."""
    with _cache_lock:
        return _cache.get((kind, key, seq, bool(user.is_staff)))


def fragments(user: Any, kind: str, key: Any, event: dict[str, Any]) -> dict[str, str]:
    """The page fragments that show the stream's current state, by element id."""
    staff = bool(user.is_staff)
    if kind == "flow":
        return _cached(("flow", key, event["seq"], staff), lambda: _flow_fragments(user, key))
    return _cached(("ltm", key, event["seq"], staff), lambda: _ltm_fragments(user, key))


def _flow_fragments(user: Any, flow_id: int) -> dict[str, str]:
    flow = pages.visible_flow(user, flow_id)
    if flow is None:
        return {}
    return {"flow-live": render_to_string(pages.FLOW_LIVE, pages.flow_live(user, flow))}


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
