"""Shared pieces of the studio's views: access to records, page-or-partial rendering, the
mapping of engine errors to HTTP answers, and diagrams."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django_htmx.http import reswap, retarget

from engine import api, routines
from engine.core.flows import script as scripts
from engine.core.graph.extract import routine_graph
from engine.core.graph.model import Graph
from engine.diagram import DiagramUnavailable, render_graph
from engine.models import Flow, Routine
from engine.status import FINISHED, FlowState

visible_routines = routines.visible_routines


def get_routine(user: Any, pk: int) -> Routine:
    """A routine `user` may see; 404 otherwise (a foreign one is not revealed)."""
    routine = visible_routines(user).filter(pk=pk).first()
    if routine is None:
        raise Http404("no such routine")
    return routine


def get_flow(user: Any, pk: int) -> Flow:
    """A flow `user` may see; 404 otherwise (a foreign one is not revealed)."""
    flow = api.visible_flows(user).filter(pk=pk).first()
    if flow is None:
        raise Http404("no such flow")
    return flow


def page_or_partial(
    request: HttpRequest,
    page: str,
    partial: str,
    context: dict[str, Any],
    status: int = 200,
) -> HttpResponse:
    """One view serves the page and its partial: htmx requests get the partial only."""
    template = partial if request.htmx and not request.htmx.boosted else page
    return render(request, template, context, status=status)


def error_status(exc: Exception) -> tuple[int, str]:
    """HTTP status and message for an error raised by an engine action on user request."""
    if isinstance(exc, api.StaleFlowError):
        return 409, f"This flow changed since you loaded the page; reload it and try again. ({exc})"
    if isinstance(exc, api.FlowStateError):
        return 409, str(exc)
    if isinstance(exc, PermissionDenied):
        return 403, str(exc) or "you may not do this"
    if isinstance(exc, ObjectDoesNotExist):
        return 404, "no such record"
    return 400, str(exc)


ENGINE_ERRORS = (
    api.StaleFlowError,
    api.FlowStateError,
    PermissionDenied,
    ValueError,
    ObjectDoesNotExist,
)


def error_fragment(request: HttpRequest, exc: Exception, target: str) -> HttpResponse:
    """The error as an htmx fragment swapped into `target` (whatever the request targeted)."""
    status, message = error_status(exc)
    context = {"message": message, "status": status, "stale": status == 409}
    response = render(request, "studio/partials/_error.html", context, status=status)
    return reswap(retarget(response, target), "innerHTML")


def diagram(graph: Graph) -> dict[str, str]:
    """{"svg": ...} or {"error": ...} for a template's diagram area."""
    try:
        return {"svg": render_graph(graph)}
    except DiagramUnavailable as exc:
        return {"error": str(exc)}


def _blocking(script: str) -> bool:
    cls = scripts.registry().get(script)
    return cls.blocking if cls is not None else True


def step_states(flow: Flow) -> list[str | None]:
    """The status each step of `flow` is drawn with."""
    states: list[str | None] = []
    for index in range(flow.length):
        if index < flow.position or (flow.state == FlowState.COMPLETE and index == flow.position):
            states.append("complete")
        elif index == flow.position:
            states.append(str(flow.state))
        else:
            states.append(None)
    return states


def flow_graph(flow: Flow) -> Graph:
    steps = [
        (s.get("name") or s["script"], s["script"], _blocking(s["script"])) for s in flow.steps
    ]
    current = None if flow.state in FINISHED and flow.state != FlowState.FAILED else flow.position
    return routine_graph(steps, current, step_states(flow), title=flow.routine.name)


def steps_graph(title: str, steps: list[tuple[str, str]]) -> Graph:
    """A routine's diagram from (label, script) pairs (the builder's preview)."""
    known = scripts.registry()
    labelled = [(label or getattr(known.get(s), "label", s), s, _blocking(s)) for label, s in steps]
    return routine_graph(labelled, title=title)


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
