"""LTM pages: the registered LTMs with their diagrams, starting a run, and a run's page
(diagram coloured by status, global and per-state state, event log, controls), with its
history: the run as it was after any event, rolled back to it or copied from it."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from engine import api
from engine.models import LtmRun
from studio.web import pages
from studio.web.forms import FireTransitionForm, KillLtmForm, RollbackLtmForm, StartLtmForm
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
    """The run's page; `?at=N` shows the run as it was after its event N (the history
    slider's form without JavaScript, and with htmx its past view alone)."""
    run = pages.get_run(request.user, pk)
    if "at" in request.GET:
        return _past(request, run, request.GET["at"])
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
                api.fire_transition(
                    run.pk,
                    data["label"],
                    request.user,
                    payload=data["payload"],
                    namespace=data["namespace"] or None,
                    params=data["params"],
                )
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


# --- the run's history (the time machine) ----------------------------------------------------


@login_required
@require_GET
def run_at(request: HtmxHttpRequest, pk: Any, seq: int) -> HttpResponse:
    """The run as it was after its event `seq`: the past view (htmx), or the run's page
    showing it."""
    return _past(request, pages.get_run(request.user, pk), seq)


@login_required
@require_http_methods(["GET", "POST"])
def run_travel(request: HtmxHttpRequest, pk: Any, seq: int, action: str) -> HttpResponse:
    """GET: the confirmation of a rollback to (or a copy from) event `seq`, for the last
    event the user's page showed (`?seen=`). POST: do it through `engine.api` — a rollback
    with the reason, the `expected_seq` the page showed and, while a state executes, the
    explicit discard of its outcome; a copy answers with the new run's page."""
    run = pages.get_run(request.user, pk)
    action = pages.travel(action)
    if request.method == "GET":
        if request.htmx:
            try:
                api.ltm_at(run.pk, seq, request.user)  # a seq of the run's history only
            except ENGINE_ERRORS as exc:
                return error_fragment(request, exc, "#ltm-history-confirm")
            confirm = pages.ltm_history_confirm(run, seq, action, seen=request.GET.get("seen"))
            context = {"run": run, "confirm": confirm}
            return render(request, pages.LTM_HISTORY_CONFIRM, context)
        return _past(request, run, seq, action=action, seen=request.GET.get("seen"))
    form = RollbackLtmForm(request.POST) if action == "rollback" else None
    if form is not None and not form.is_valid():
        return _past(request, run, seq, status=400, action=action, form=form)
    try:
        if form is not None:
            data = form.cleaned_data
            api.rollback_ltm(
                run.pk,
                seq,
                request.user,
                data["reason"],
                discard_running=data["discard_running"],
                expected_seq=data["expected_seq"],
            )
        else:
            copy_id = api.copy_ltm(run.pk, request.user, seq=seq)
    except ENGINE_ERRORS as exc:
        status, message = _travel_error(exc)
        run.refresh_from_db()
        return _past(
            request,
            run,
            seq,
            status=status,
            action=action,
            form=form,
            error=message,
            stale=isinstance(exc, api.StaleFlowError),
        )
    if form is None:  # a copy: its own page
        url = reverse("studio:ltm_run", args=[copy_id])
        return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    notice = f"Rolled back to event {seq}."
    if not request.htmx:
        messages.success(request, notice)
        return redirect("studio:ltm_run", pk=run.pk)
    run.refresh_from_db()
    context = pages.ltm_run_live(run, notice=notice)
    return render(request, pages.LTM_ROLLED_BACK, context)


def _travel_error(exc: Exception) -> tuple[int, str]:
    """`error_status`, in a run's words for a run that moved on since the user looked (the
    shared message speaks of a flow)."""
    status, message = error_status(exc)
    if isinstance(exc, api.StaleFlowError):
        message = str(exc)
    return status, message


def _past(
    request: HtmxHttpRequest, run: LtmRun, seq: Any, *, status: int = 200, **extra: Any
) -> HttpResponse:
    """The run as it was after event `seq` (with `extra`: the confirmation open): the past
    view alone for htmx (it replaces the page's `#ltm-past`), the run's page showing it
    otherwise. An engine error (a `seq` outside the run's history: 400 naming the range)
    shows in the past view's place, with its status."""
    try:
        past = pages.ltm_run_past(request.user, run, seq, **extra)
    except ENGINE_ERRORS as exc:
        status, message = error_status(exc)
        past = {"failed": message, "status": status, "of": run.seq}
    if request.htmx:
        return render(request, pages.LTM_RUN_PAST, {"run": run, "past": past}, status=status)
    context = pages.ltm_run_live(run, past=past)
    return render(request, "studio/ltm_run.html", context, status=status)
