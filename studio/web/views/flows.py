"""Flows: the dashboard (filters, search, pagination), "waiting for me" (each row answerable
in place), a flow's page with its live area (status, assignees and deadline, results,
timeline, input form), and the user's notifications."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from engine import api
from engine.models import Flow
from studio.web import pages
from studio.web.forms import FieldsInputForm, JSONInputForm, posted_input
from studio.web.http import (
    ENGINE_ERRORS,
    HtmxHttpRequest,
    error_fragment,
    error_status,
    page_or_partial,
)


@login_required
@require_GET
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    context = pages.dashboard(request.user, request.GET)
    return page_or_partial(
        request, "studio/dashboard.html", "studio/partials/_flow_table.html", context
    )


WAITING_LIST = "studio/partials/_waiting_list.html"


@login_required
@require_GET
def waiting_for_me(request: HtmxHttpRequest) -> HttpResponse:
    """Every flow waiting for this user to answer (as owner or assignee), soonest deadline
    first, each answerable in place."""
    context = pages.waiting(request.user, request.GET)
    return page_or_partial(request, "studio/waiting.html", WAITING_LIST, context)


@login_required
@require_GET
def notifications(request: HtmxHttpRequest) -> HttpResponse:
    """The user's notifications, newest first."""
    context = pages.notifications(request.user, request.GET)
    return page_or_partial(
        request,
        "studio/notifications.html",
        "studio/partials/_notification_list.html",
        context,
    )


@login_required
@require_GET
def flow_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    flow = pages.get_seen_flow(request.user, pk)
    context = pages.flow_live(request.user, flow)
    return page_or_partial(request, "studio/flow_detail.html", pages.FLOW_LIVE, context)


@login_required
@require_GET
def flow_live(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The live area for polling: 204 (nothing to swap) while the flow has not changed."""
    flow = pages.get_seen_flow(request.user, pk)
    if request.GET.get("version") == str(flow.version):
        return HttpResponse(status=204)
    return render(request, pages.FLOW_LIVE, pages.flow_live(request.user, flow))


@login_required
@require_POST
def push_input(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Answer a waiting flow, from its page or from "Waiting for me" (`from=waiting`): with
    its script's form (typed fields; Approve / Reject for a decision), its `input_fields` or
    JSON. The engine validates what is pushed (`engine.api.push_input`); the `version` the
    page showed guards against answering a flow that changed meanwhile."""
    flow = pages.get_seen_flow(request.user, pk)
    on_list = request.POST.get("from") == "waiting"
    form = pages.input_form_for(flow, request.POST)
    form_class = api.input_form_of(flow)
    version = api.parse_id(request.POST.get("version"))
    error: Exception | None = None
    if version is None:
        error = ValueError("The form has no valid flow version; reload the page and try again.")
    elif form_class is not None or form.is_valid():
        value = _input_value(form, form_class, request.POST)
        try:
            api.push_input(flow, value, request.user, version=version)
        except ValidationError as exc:  # the step's form refused it: its field errors
            _show_errors(form, exc)
        except ENGINE_ERRORS as exc:
            error = exc
        else:
            return _answered(request, flow, on_list, value)
    status, message = error_status(error) if error else (400, "")
    if on_list:
        return _waiting_row_again(request, flow, form, message, status)
    if error is not None and request.htmx:
        return error_fragment(request, error, "#flow-input-errors")
    context = pages.flow_live(request.user, flow, input_form=form, input_error=message)
    if request.htmx:
        response = render(request, "studio/partials/_flow_input.html", context, status=status)
        return reswap(retarget(response, "#flow-input"), "outerHTML")
    return render(request, "studio/flow_detail.html", context, status=status)


def _input_value(form: forms.Form, form_class: Any, data: Any) -> Any:
    if form_class is not None:
        return posted_input(form_class, data)
    if isinstance(form, FieldsInputForm):
        return form.input_value()
    return form.cleaned_data["input"] if isinstance(form, JSONInputForm) else None


def _show_errors(form: forms.Form, exc: ValidationError) -> None:
    """The engine's field errors on the bound form (which finds the same ones itself: the
    engine validated with the same form class), and any it does not."""
    found = form.errors  # (validates the bound form)
    for field, errors in exc.message_dict.items():
        name = field if field in form.fields else None
        if (name or "__all__") not in found:
            form.add_error(name, errors)


def _answered(request: HtmxHttpRequest, flow: Flow, on_list: bool, value: Any) -> HttpResponse:
    """The answer went in: "Waiting for me" shows its list again (the answered flow gone)
    with a note of what was done; the flow's page shows the flow moving on, or, to an
    assignee who no longer sees it, that the answer was recorded."""
    decision = value.get("decision") if isinstance(value, dict) else None
    done = {"approve": "You approved", "reject": "You rejected"}.get(str(decision))
    note = f"{done} flow #{flow.pk}." if done else f"Your answer to flow #{flow.pk} was sent."
    flow.refresh_from_db()
    if on_list:
        if not request.htmx:
            messages.success(request, note)
            return redirect("studio:waiting")
        context = {**pages.waiting(request.user, _list_query(request)), "note": note}
        response = render(request, "studio/partials/_waiting_answered.html", context)
        return reswap(retarget(response, "#waiting-list"), "outerHTML")
    if api.can_see_flow(request.user, flow):
        if not request.htmx:
            return redirect("studio:flow_detail", pk=flow.pk)
        return render(request, pages.FLOW_LIVE, pages.flow_live(request.user, flow))
    if not request.htmx:
        messages.success(request, note)
        return redirect("studio:waiting")
    return render(request, "studio/partials/_flow_answered.html", {"flow": flow, "note": note})


def _list_query(request: HtmxHttpRequest) -> QueryDict:
    """The filters and page of the "Waiting for me" list the answer came from."""
    return QueryDict(request.POST.get("list", "")[:2000])


def _waiting_row_again(
    request: HtmxHttpRequest, flow: Flow, form: forms.Form, message: str, status: int
) -> HttpResponse:
    """A refused answer from "Waiting for me": its row again, with the errors."""
    row = pages.waiting_row(flow, form, message)
    if request.htmx:
        response = render(request, "studio/partials/_waiting_row.html", {"row": row}, status=status)
        return reswap(retarget(response, f"#flow-{flow.pk}-row"), "outerHTML")
    context = pages.waiting(request.user, _list_query(request), answering={flow.pk: row})
    if flow.pk not in [r["flow"].pk for r in context["rows"]]:
        context["rows"].insert(0, row)  # (no longer listed, or on another page)
    return render(request, "studio/waiting.html", context, status=status)
