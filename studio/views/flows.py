"""Flows: the dashboard (filters, search, pagination), "waiting for me", and a flow's page
with its live area (status, results, timeline, input form)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from engine import api, jsonsafe
from engine.core.flows import script as scripts
from engine.models import Flow
from engine.status import ACTIVE, FlowState
from studio.forms import FieldsInputForm, JSONInputForm
from studio.views._helpers import (
    ENGINE_ERRORS,
    diagram,
    error_fragment,
    error_status,
    flow_graph,
    get_flow,
    page_or_partial,
    visible_routines,
)

PAGE_SIZE = 50
# The longest text a search can match (a wait reason); a longer query matches nothing.
LONGEST_SEARCHED = Flow._meta.get_field("wait_reason").max_length
# The dashboard never loads the big per-flow columns it does not show.
_LIST_DEFER = ("data", "stored_results", "traceback", "input", "error")


def _id(value: str | None) -> int | None:
    """An id filter from the query: None (no filter) unless it is a number; 0 or a number
    too large for any id is -1, which no row has (the filter then matches nothing)."""
    if not value or not (value.isascii() and value.isdigit()):
        return None
    return jsonsafe.parse_id(value) or -1


def filtered_flows(user: Any, params: Any) -> tuple[Any, dict[str, Any]]:
    """The flows `user` may see narrowed by the dashboard's query parameters."""
    flows = api.visible_flows(user).defer(*_LIST_DEFER)
    chosen = {
        "state": params.get("state", ""),
        "routine": _id(params.get("routine")),
        "owner": _id(params.get("owner")),
        "q": params.get("q", "").strip(),
    }
    if chosen["state"] in FlowState.values:
        flows = flows.filter(state=chosen["state"])
    if chosen["routine"] is not None:
        flows = flows.filter(routine_id=chosen["routine"])
    if chosen["owner"] is not None and api.can_see_all(user):
        flows = flows.filter(owner_id=chosen["owner"])
    if (query := chosen["q"]) and (len(query) > LONGEST_SEARCHED or jsonsafe.text_problem(query)):
        # Nothing stored is that long, or holds a NUL character or a lone surrogate.
        flows = flows.none()
    elif query:
        match = Q(routine__name__icontains=query) | Q(wait_reason__icontains=query)
        match |= Q(owner__username__iexact=query)
        if (number := jsonsafe.parse_id(query.lstrip("#"))) is not None:
            match |= Q(pk=number)
        flows = flows.filter(match)
    return flows.order_by("-updated", "-id"), chosen


def _dashboard(request: HttpRequest, flows: Any, chosen: dict[str, Any], **extra: Any):
    page = Paginator(flows, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page,
        "chosen": chosen,
        "query": query.urlencode(),
        "states": FlowState.choices,
        "routines": visible_routines(request.user).select_related(None).only("id", "name"),
        "owners": (
            get_user_model().objects.only("id", "username").order_by("username")[:200]
            if api.can_see_all(request.user)
            else []
        ),
        **extra,
    }
    return page_or_partial(
        request, "studio/dashboard.html", "studio/partials/_flow_table.html", context
    )


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    flows, chosen = filtered_flows(request.user, request.GET)
    return _dashboard(request, flows, chosen, title="Flows")


@login_required
@require_GET
def waiting_for_me(request: HttpRequest) -> HttpResponse:
    """Flows of this user that wait for input."""
    flows, chosen = filtered_flows(request.user, request.GET)
    flows = flows.filter(owner_id=request.user.pk, state=FlowState.WAITING)
    return _dashboard(request, flows, chosen, title="Waiting for me", waiting_view=True)


def input_form(flow: Flow, data: Any = None) -> FieldsInputForm | JSONInputForm:
    """The form that pushes input to `flow`'s waiting step: its script's `input_fields`, or
    one JSON textarea."""
    step = flow.current_step or {}
    cls = scripts.registry().get(step.get("script", ""))
    fields = list(cls.input_fields) if cls is not None else []
    if fields:
        return FieldsInputForm(data, fields=fields)
    return JSONInputForm(data)


def live_context(request: HttpRequest, flow: Flow, **extra: Any) -> dict[str, Any]:
    """What the flow page's live area needs."""
    events = flow.events.select_related("actor").order_by("-seq")[:200]
    results = api.results_for_display(flow)
    rows = [
        {"index": i, "step": step, "result": results[i], "done": i < len(flow.stored_results)}
        for i, step in enumerate(flow.steps)
    ]
    context = {
        "flow": flow,
        "rows": rows,
        "events": events,
        "polling": flow.state in ACTIVE,
        "is_staff": request.user.is_staff,
        "diagram": diagram(flow_graph(flow)),
        "input_form": extra.pop("input_form", None)
        or (input_form(flow) if flow.state == FlowState.WAITING else None),
        "actions": available_actions(flow),
    }
    context.update(extra)
    return context


def available_actions(flow: Flow) -> list[str]:
    """The overrides that fit the flow's state (the engine refuses the others anyway)."""
    state = flow.state
    actions = []
    if state != FlowState.RUNNING:
        actions.append("move")
    if state in {FlowState.FAILED, FlowState.KILLED}:
        actions.append("retry")
    if state in {FlowState.WAITING, FlowState.FAILED, FlowState.KILLED, FlowState.PENDING}:
        actions.append("skip")
    if state in ACTIVE or state == FlowState.FAILED:
        actions.append("kill")
    if state in {FlowState.WAITING, FlowState.KILLED, FlowState.FAILED}:
        actions.append("resume")
    return actions


@login_required
@require_GET
def flow_detail(request: HttpRequest, pk: int) -> HttpResponse:
    flow = get_flow(request.user, pk)
    return page_or_partial(
        request,
        "studio/flow_detail.html",
        "studio/partials/_flow_live.html",
        live_context(request, flow),
    )


@login_required
@require_GET
def flow_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The live area for polling: 204 (nothing to swap) while the flow has not changed."""
    flow = get_flow(request.user, pk)
    if request.GET.get("version") == str(flow.version):
        return HttpResponse(status=204)
    return render(request, "studio/partials/_flow_live.html", live_context(request, flow))


@login_required
@require_POST
def push_input(request: HttpRequest, pk: int) -> HttpResponse:
    """Push input to a waiting flow (the version rendered in the page guards it)."""
    flow = get_flow(request.user, pk)
    form = input_form(flow, request.POST)
    version = jsonsafe.parse_id(request.POST.get("version"))
    error: Exception | None = None
    if version is None:
        error = ValueError("The form has no valid flow version; reload the page and try again.")
    elif form.is_valid():
        value = (
            form.input_value() if isinstance(form, FieldsInputForm) else form.cleaned_data["input"]
        )
        try:
            api.push_input(flow, value, request.user, version=version)
        except ENGINE_ERRORS as exc:
            error = exc
        else:
            if not request.htmx:
                return redirect("studio:flow_detail", pk=flow.pk)
            flow.refresh_from_db()
            return render(request, "studio/partials/_flow_live.html", live_context(request, flow))
    if error is not None and request.htmx:
        return error_fragment(request, error, "#flow-input-errors")
    status, message = error_status(error) if error else (400, "")
    context = live_context(request, flow, input_form=form, input_error=message)
    if request.htmx:
        response = render(request, "studio/partials/_flow_input.html", context, status=status)
        return reswap(retarget(response, "#flow-input"), "outerHTML")
    return render(request, "studio/flow_detail.html", context, status=status)
