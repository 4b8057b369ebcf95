"""Routine versions: a routine's versions page (any two side by side), and moving a flow onto
another version of its routine (a confirmation with a preview, then the move)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from engine import api
from engine.models import Flow
from studio.web import pages, versions
from studio.web.http import (
    ENGINE_ERRORS,
    HtmxHttpRequest,
    error_fragment,
    error_status,
    page_or_partial,
)

CONFIRM_PAGE = "studio/version_move.html"
CONFIRM = "studio/partials/_version_move.html"


@login_required
@require_GET
def routine_versions(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """A routine's versions, and the two chosen (`?a=&b=`) side by side."""
    routine = pages.get_routine(request.user, pk)
    context, status = versions.routine_versions(routine, request.GET)
    context["may_edit"] = api.can_edit_routine(request.user, routine)
    return page_or_partial(
        request,
        "studio/routine_versions.html",
        "studio/partials/_version_compare.html",
        context,
        status=status,
    )


def _confirmation(request: HtmxHttpRequest, context: dict[str, Any], status: int) -> HttpResponse:
    """The confirmation: into the flow page's confirmation area for htmx, else its page."""
    if request.htmx:
        response = render(request, CONFIRM, context, status=status)
        return reswap(retarget(response, "#flow-confirm"), "innerHTML")
    return render(request, CONFIRM_PAGE, context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def change_version(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET: the confirmation of a version move (for the flow version the page showed,
    `?version=`; a version `?to=`). POST `op=preview`: the same for what the form holds now;
    else the move itself, through `engine.api.change_version`, for the flow version, target
    version, step and reason posted."""
    flow = pages.get_flow(request.user, pk)  # owners and operators; 404 for anyone else
    data = request.GET if request.method == "GET" else request.POST
    if request.method == "GET" or data.get("op") == "preview":
        reason = data.get("reason", "")[:500] if request.method == "POST" else ""
        context, status = versions.version_move(flow, data, reason=reason)
        return _confirmation(request, context, status)
    context, status = versions.version_move(flow, data)
    if status != 200:
        return _confirmation(request, context, status)
    numbers = [version.number for version in context["versions"]]
    form = versions.VersionMoveForm(data, versions=numbers, steps=context["steps"])
    error: Exception | None = None
    if form.is_valid():
        cleaned = form.cleaned_data
        try:
            moved = api.change_version(
                flow,
                cleaned["to"],
                request.user,
                position=cleaned["position"],
                reason=cleaned["reason"],
                version=cleaned["version"],
            )
        except ENGINE_ERRORS as exc:
            error = exc
        else:
            return _moved(request, moved, cleaned["position"])
    if error is not None and request.htmx:
        return error_fragment(request, error, "#flow-confirm-errors")
    status, message = error_status(error) if error else (400, "")
    context, _ = versions.version_move(flow, data, form=form, error=message, stale=status == 409)
    return _confirmation(request, context, status)


def _moved(request: HtmxHttpRequest, flow: Flow, position: int) -> HttpResponse:
    """The flow's page again (its header names the version: a full load, with htmx too)."""
    step = flow.steps[position] if 0 <= position < flow.length else {}
    messages.success(
        request,
        f"Flow #{flow.pk} moved onto version {flow.routine_version} and went on at step "
        f"{position + 1} ({step.get('name') or step.get('script')}).",
    )
    url = reverse("studio:flow_detail", args=[flow.pk])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
