"""Manual overrides of a flow: a confirmation (with a preview of what will happen) and the
action itself, which passes the version the page showed so a stale page never acts twice."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from engine import api
from studio.web import pages
from studio.web.forms import OverrideForm
from studio.web.http import ENGINE_ERRORS, HtmxHttpRequest, error_fragment, error_status


@login_required
@require_GET
def confirm(request: HtmxHttpRequest, pk: int, action: str) -> HttpResponse:
    """The confirmation of an override, for the flow version the page showed (`?version=`)."""
    flow = pages.get_flow(request.user, pk)
    action = pages.override(action)
    context = pages.confirm(
        flow, action, version=request.GET.get("version"), position=request.GET.get("position")
    )
    template = "studio/partials/_confirm.html" if request.htmx else "studio/confirm.html"
    return render(request, template, context)


@login_required
@require_POST
def act(request: HtmxHttpRequest, pk: int, action: str) -> HttpResponse:
    """Carry out a confirmed override through `engine.api`."""
    flow = pages.get_flow(request.user, pk)
    action = pages.override(action)
    form = OverrideForm(request.POST, **pages.override_form_args(flow, action))
    error: Exception | None = None
    if form.is_valid():
        data = form.cleaned_data
        version, reason = data["version"], data.get("reason", "")
        user = request.user
        try:
            if action == "move":
                edits = form.edits()
                api.move_to(flow, data["position"], user, reason=reason, version=version, **edits)
            elif action == "retry":
                api.retry(flow, user, version=version, reason=reason, **form.edits())
            elif action == "skip":
                api.skip(flow, user, reason=reason, version=version)
            elif action == "kill":
                api.kill_flow(flow, user, reason=reason, version=version)
            elif action == "give_up":
                api.give_up(flow, user, reason=reason, version=version)
            else:
                api.resume(flow, user, version=version, reason=reason, **form.edits())
        except ENGINE_ERRORS as exc:
            error = exc
        else:
            if not request.htmx:
                return redirect("studio:flow_detail", pk=flow.pk)
            flow.refresh_from_db()
            context = pages.flow_live(request.user, flow, clear_confirm=True)
            return render(request, pages.FLOW_LIVE, context)
    if error is not None and request.htmx:
        return error_fragment(request, error, "#flow-confirm-errors")
    status, message = error_status(error) if error else (400, "")
    context = pages.confirm(flow, action, form, error=message, stale=status == 409)
    if request.htmx:
        response = render(request, "studio/partials/_confirm.html", context, status=status)
        return reswap(retarget(response, "#flow-confirm"), "innerHTML")
    return render(request, "studio/confirm.html", context, status=status)
