"""LTM pages: the registered LTMs with their diagrams, starting a run, and a run's page
(diagram coloured by status, global and per-state state, event log, controls)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from engine import api
from studio.web import pages
from studio.web.forms import FireTransitionForm, KillLtmForm, StartLtmForm
from studio.web.http import ENGINE_ERRORS, HtmxHttpRequest, error_fragment, error_status


@login_required
@require_GET
def ltm_list(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "studio/ltm_list.html", pages.ltm_list(request.user))


@login_required
@require_GET
def ltm_detail(request: HtmxHttpRequest, name: str) -> HttpResponse:
    return render(request, "studio/ltm_detail.html", pages.ltm_detail(request.user, name))


@login_required
@require_POST
def ltm_start(request: HtmxHttpRequest, name: str) -> HttpResponse:
    name = pages.require_ltm(name)
    form = StartLtmForm(request.POST)
    if not form.is_valid():
        message = "; ".join(map(str, form.errors.get("payload", ["invalid payload"])))
        context = {"message": f"Payload: {message}", "status": 400}
        return render(request, "studio/partials/_error.html", context, status=400)
    try:
        run_id = api.start_ltm(name, request.user, form.cleaned_data["payload"])
    except ENGINE_ERRORS as exc:
        status, message = error_status(exc)
        context = {"message": message, "status": status}
        return render(request, "studio/partials/_error.html", context, status=status)
    return redirect("studio:ltm_run", pk=run_id)


@login_required
@require_GET
def run_detail(request: HtmxHttpRequest, pk: Any) -> HttpResponse:
    run = pages.get_run(request.user, pk)
    if request.htmx and request.GET.get("version") == str(run.version):
        return HttpResponse(status=204)
    template = pages.LTM_RUN_LIVE if request.htmx else "studio/ltm_run.html"
    return render(request, template, pages.ltm_run_live(run))


@login_required
@require_POST
def run_act(request: HtmxHttpRequest, pk: Any, action: str) -> HttpResponse:
    """fire (a transition by label with a JSON payload), retry (a failed state), kill."""
    run = pages.get_run(request.user, pk)
    if action not in {"fire", "retry", "kill"}:
        raise Http404("no such action")
    form = FireTransitionForm(request.POST) if action == "fire" else None
    kill_form = KillLtmForm(request.POST) if action == "kill" else None
    error: Exception | None = None
    if kill_form is not None and not kill_form.is_valid():
        error = ValueError("Reason: " + " ".join(map(str, kill_form.errors["reason"])))
    elif form is None or form.is_valid():
        try:
            if form is not None:  # fire
                data = form.cleaned_data
                api.fire_transition(run.pk, data["label"], request.user, payload=data["payload"])
            elif kill_form is not None:
                reason = kill_form.cleaned_data["reason"]
                api.kill_ltm(run.pk, request.user, reason=reason)
            else:  # retry
                api.retry_ltm(run.pk, request.user)
        except ENGINE_ERRORS as exc:
            error = exc
        else:
            if not request.htmx:
                return redirect("studio:ltm_run", pk=run.pk)
            run.refresh_from_db()
            return render(request, pages.LTM_RUN_LIVE, pages.ltm_run_live(run))
    if error is not None and request.htmx:
        return error_fragment(request, error, "#ltm-errors")
    status, message = error_status(error) if error else (400, "")
    context = pages.ltm_run_live(run, fire_form=form, error=message)
    template = pages.LTM_RUN_LIVE if request.htmx else "studio/ltm_run.html"
    return render(request, template, context, status=status)
