"""LTM pages: the registered LTMs with their diagrams, starting a run, and a run's page
(diagram coloured by status, global and per-state state, event log, controls)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from engine import api
from engine.core.graph.extract import ltm_graph
from engine.core.ltm.registry import ltm_registry
from studio.forms import FireTransitionForm, KillLtmForm, StartLtmForm
from studio.views._helpers import ENGINE_ERRORS, diagram, error_fragment, error_status


def service() -> Any:
    """The LTM service functions (`engine.api.start_ltm` and friends), or None while the
    engine has none."""
    return api if hasattr(api, "start_ltm") else None


def _ltm_class(name: str) -> Any:
    cls = ltm_registry().get(name)
    if cls is None:
        raise Http404("no such LTM")
    return cls


def _runs(user: Any) -> Any:
    svc = service()
    return svc.visible_ltm_runs(user) if svc else None


@login_required
@require_GET
def ltm_list(request: HttpRequest) -> HttpResponse:
    ltms = [
        {"name": name, "doc": (cls.__doc__ or "").strip(), "diagram": diagram(ltm_graph(cls))}
        for name, cls in sorted(ltm_registry().items())
    ]
    runs = _runs(request.user)
    context = {
        "ltms": ltms,
        "runs": runs[:20] if runs is not None else None,
        "service": service() is not None,
    }
    return render(request, "studio/ltm_list.html", context)


@login_required
@require_GET
def ltm_detail(request: HttpRequest, name: str) -> HttpResponse:
    cls = _ltm_class(name)
    runs = _runs(request.user)
    context = {
        "name": name,
        "doc": (cls.__doc__ or "").strip(),
        "diagram": diagram(ltm_graph(cls)),
        "runs": runs.filter(name=name)[:50] if runs is not None else None,
        "service": service() is not None,
    }
    return render(request, "studio/ltm_detail.html", context)


@login_required
@require_POST
def ltm_start(request: HttpRequest, name: str) -> HttpResponse:
    _ltm_class(name)
    svc = service()
    if svc is None:
        raise Http404("LTM runs are not available yet")
    form = StartLtmForm(request.POST)
    if not form.is_valid():
        message = "; ".join(form.errors.get("payload", ["invalid payload"]))
        context = {"message": f"Payload: {message}", "status": 400}
        return render(request, "studio/partials/_error.html", context, status=400)
    try:
        run_id = svc.start_ltm(name, request.user, form.cleaned_data["payload"])
    except ENGINE_ERRORS as exc:
        status, message = error_status(exc)
        context = {"message": message, "status": status}
        return render(request, "studio/partials/_error.html", context, status=status)
    return redirect("studio:ltm_run", pk=run_id)


def _get_run(user: Any, pk: Any) -> Any:
    runs = _runs(user)
    run = runs.filter(pk=pk).first() if runs is not None else None
    if run is None:
        raise Http404("no such LTM run")
    return run


def run_context(run: Any, **extra: Any) -> dict[str, Any]:
    svc = service()
    try:
        graph = diagram(svc.load_ltm(run.pk).graph())
    except Exception as exc:  # a run whose tree cannot be loaded still shows its records
        graph = {"error": f"the run's tree could not be loaded: {exc}"}
    return {
        "run": run,
        "diagram": graph,
        "instances": run.instances.order_by("fqn"),
        "events": run.events.select_related("actor").order_by("-seq")[:200],
        "fire_form": extra.pop("fire_form", None) or FireTransitionForm(),
        "polling": run.state in {"pending", "running"},
        **extra,
    }


@login_required
@require_GET
def run_detail(request: HttpRequest, pk: Any) -> HttpResponse:
    run = _get_run(request.user, pk)
    if request.htmx and request.GET.get("version") == str(run.version):
        return HttpResponse(status=204)
    template = "studio/partials/_ltm_run_live.html" if request.htmx else "studio/ltm_run.html"
    return render(request, template, run_context(run))


@login_required
@require_POST
def run_act(request: HttpRequest, pk: Any, action: str) -> HttpResponse:
    """fire (a transition by label with a JSON payload), retry (a failed state), kill."""
    run = _get_run(request.user, pk)
    svc = service()
    if action not in {"fire", "retry", "kill"}:
        raise Http404("no such action")
    form = FireTransitionForm(request.POST) if action == "fire" else None
    kill_form = KillLtmForm(request.POST) if action == "kill" else None
    error: Exception | None = None
    if kill_form is not None and not kill_form.is_valid():
        error = ValueError("Reason: " + " ".join(kill_form.errors["reason"]))
    elif form is None or form.is_valid():
        try:
            if action == "fire":
                data = form.cleaned_data
                svc.fire_transition(run.pk, data["label"], request.user, payload=data["payload"])
            elif action == "retry":
                svc.retry_ltm(run.pk, request.user)
            else:
                reason = kill_form.cleaned_data["reason"]
                svc.kill_ltm(run.pk, request.user, reason=reason)
        except ENGINE_ERRORS as exc:
            error = exc
        else:
            if not request.htmx:
                return redirect("studio:ltm_run", pk=run.pk)
            run.refresh_from_db()
            return render(request, "studio/partials/_ltm_run_live.html", run_context(run))
    if error is not None and request.htmx:
        return error_fragment(request, error, "#ltm-errors")
    status, message = error_status(error) if error else (400, "")
    context = run_context(run, fire_form=form, error=message)
    template = "studio/partials/_ltm_run_live.html" if request.htmx else "studio/ltm_run.html"
    return render(request, template, context, status=status)
