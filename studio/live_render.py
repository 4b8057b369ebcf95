"""What the live consumer reads from the database: permission checks, stored events, and the
HTML fragments it pushes — rendered from the same partial templates as the pages."""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string

from engine import api
from engine.models import Flow, FlowEvent


def parse_key(kind: str, key: Any) -> Any:
    if kind == "flow":
        try:
            return int(key)
        except (TypeError, ValueError):
            return None
    if kind == "ltm" and isinstance(key, str | int) and str(key):
        return str(key)
    return None


def sees_everything(user: Any) -> bool:
    return api.can_see_all(user)


def may_see(user: Any, kind: str, key: Any) -> bool:
    if kind == "flow":
        flow = Flow.objects.filter(pk=key).only("id", "owner_id").first()
        return flow is not None and api.can_operate(user, flow)
    visible = getattr(api, "visible_ltm_runs", None)
    return visible is not None and visible(user).filter(pk=key).exists()


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
    from engine.models import LtmEvent  # the LTM models

    rows = LtmEvent.objects.filter(run_id=key, seq__gt=since)
    if until is not None:
        rows = rows.filter(seq__lte=until)
    return [_ltm_event_dict(row) for row in rows.order_by("seq")]


def _ltm_event_dict(row: Any) -> dict[str, Any]:
    as_dict = getattr(row, "as_dict", None)
    if as_dict is not None:
        return {**as_dict(), "type": "ltm.event", "run": str(row.run_id)}
    return {"type": "ltm.event", "run": str(row.run_id), "seq": row.seq, "kind": row.kind}


# Fragment templates by stream kind: element id -> template. They are the pages' own partials.
FLOW_FRAGMENTS: dict[str, str] = {}
LTM_FRAGMENTS: dict[str, str] = {}
ROW_TEMPLATE = ""


def fragments(user: Any, kind: str, key: Any, event: dict[str, Any]) -> dict[str, str]:
    """The page fragments that show the stream's current state, by element id."""
    templates = FLOW_FRAGMENTS if kind == "flow" else LTM_FRAGMENTS
    if not templates:
        return {}
    context = flow_context(user, key) if kind == "flow" else ltm_context(user, key)
    return {
        element.format(id=key): render_to_string(template, context)
        for element, template in templates.items()
    }


def row(user: Any, flow_id: int) -> str:
    if not ROW_TEMPLATE:
        return ""
    flow = api.visible_flows(user).filter(pk=flow_id).first()
    return render_to_string(ROW_TEMPLATE, {"flow": flow, "user": user}) if flow else ""


def flow_context(user: Any, flow_id: int) -> dict[str, Any]:
    flow = api.visible_flows(user).get(pk=flow_id)
    return {"flow": flow, "user": user}


def ltm_context(user: Any, run_id: Any) -> dict[str, Any]:
    return {"run": api.load_ltm(run_id), "user": user}
