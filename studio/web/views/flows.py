"""Flows: the dashboard (filters, search, pagination), "waiting for me", and a flow's page
with its live area (status, results, timeline, input form)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from engine import api
from studio.web import pages
from studio.web.forms import FieldsInputForm
from studio.web.http import (
    ENGINE_ERRORS,
    HtmxHttpRequest,
    error_fragment,
    error_status,
    page_or_partial,
)


def _dashboard(request: HtmxHttpRequest, waiting: bool) -> HttpResponse:
    context = pages.dashboard(request.user, request.GET, waiting=waiting)
    return page_or_partial(
        request, "studio/dashboard.html", "studio/partials/_flow_table.html", context
    )


@login_required
@require_GET
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    return _dashboard(request, waiting=False)


@login_required
@require_GET
def waiting_for_me(request: HtmxHttpRequest) -> HttpResponse:
    """Flows of this user that wait for input."""
    return _dashboard(request, waiting=True)


@login_required
@require_GET
def flow_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    flow = pages.get_flow(request.user, pk)
    context = pages.flow_live(request.user, flow)
    return page_or_partial(request, "studio/flow_detail.html", pages.FLOW_LIVE, context)


@login_required
@require_GET
def flow_live(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The live area for polling: 204 (nothing to swap) while the flow has not changed."""
    flow = pages.get_flow(request.user, pk)
    if request.GET.get("version") == str(flow.version):
        return HttpResponse(status=204)
    return render(request, pages.FLOW_LIVE, pages.flow_live(request.user, flow))


@login_required
@require_POST
def push_input(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Push input to a waiting flow (the version rendered in the page guards it)."""
    flow = pages.get_flow(request.user, pk)
    form = pages.input_form_for(flow, request.POST)
    version = api.parse_id(request.POST.get("version"))
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
            return render(request, pages.FLOW_LIVE, pages.flow_live(request.user, flow))
    if error is not None and request.htmx:
        return error_fragment(request, error, "#flow-input-errors")
    status, message = error_status(error) if error else (400, "")
    context = pages.flow_live(request.user, flow, input_form=form, input_error=message)
    if request.htmx:
        response = render(request, "studio/partials/_flow_input.html", context, status=status)
        return reswap(retarget(response, "#flow-input"), "outerHTML")
    return render(request, "studio/flow_detail.html", context, status=status)
