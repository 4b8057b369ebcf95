"""Manual overrides of a flow: a confirmation (with a preview of what will happen) and the
action itself, which passes the version the page showed so a stale page never acts twice."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from engine import api
from engine.models import Flow
from studio.web.forms import OverrideForm
from studio.web.http import ENGINE_ERRORS, error_fragment, error_status, get_flow
from studio.web.views.flows import live_context

ACTIONS = {
    "move": "Move to a step",
    "retry": "Retry the current step",
    "skip": "Skip the current step",
    "kill": "Kill the flow",
    "resume": "Resume the flow",
}


def _step_name(flow: Flow, index: int) -> str:
    if 0 <= index < flow.length:
        step = flow.steps[index]
        return f"step {index + 1} ({step.get('name') or step.get('script')})"
    return f"step {index + 1}"


def preview(flow: Flow, action: str) -> str:
    """What the action will do to this flow, in words."""
    here = _step_name(flow, flow.position)
    subject = here[:1].upper() + here[1:]  # sentence-initial
    if action == "move":
        return (
            f"The flow is {flow.state} at {here}. It will run again from the step you pick, "
            "at once; work already done by other steps is not undone."
        )
    if action == "retry":
        return f"{subject} will be performed again (the flow is {flow.state})."
    if action == "skip":
        after = (
            "the flow completes"
            if flow.position + 1 >= flow.length
            else f"the flow goes on with {_step_name(flow, flow.position + 1)}"
        )
        return f"{subject} is skipped (its result becomes empty) and {after}."
    if action == "kill":
        return (
            f"The flow ends as KILLED at {here}; a step still running has its outcome "
            "discarded. You can resume or retry it later."
        )
    return f"{subject} will be performed again (a waiting step without new input)."


def _action(action: str) -> str:
    if action not in ACTIONS:
        raise Http404("no such action")
    return action


def _context(flow: Flow, action: str, form: OverrideForm, **extra: Any) -> dict[str, Any]:
    return {
        "flow": flow,
        "action": action,
        "title": ACTIONS[action],
        "preview": preview(flow, action),
        "form": form,
        "destructive": action in {"kill", "move"},
        **extra,
    }


@login_required
@require_GET
def confirm(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """The confirmation of an override, for the flow version the page showed (`?version=`)."""
    flow = get_flow(request.user, pk)
    action = _action(action)
    version = request.GET.get("version", str(flow.version))
    initial = {"version": version, "position": max(flow.position - 1, 0)}
    form = OverrideForm(initial=initial, action=action, steps=flow.steps)
    context = _context(flow, action, form)
    template = "studio/partials/_confirm.html" if request.htmx else "studio/confirm.html"
    return render(request, template, context)


@login_required
@require_POST
def act(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Carry out a confirmed override through `engine.api`."""
    flow = get_flow(request.user, pk)
    action = _action(action)
    form = OverrideForm(request.POST, action=action, steps=flow.steps)
    error: Exception | None = None
    if form.is_valid():
        data = form.cleaned_data
        version, reason = data["version"], data.get("reason", "")
        try:
            if action == "move":
                api.move_to(flow, data["position"], request.user, reason=reason, version=version)
            elif action == "retry":
                api.retry(flow, request.user, version=version)
            elif action == "skip":
                api.skip(flow, request.user, reason=reason, version=version)
            elif action == "kill":
                api.kill_flow(flow, request.user, reason=reason, version=version)
            else:
                api.resume(flow, request.user, version=version)
        except ENGINE_ERRORS as exc:
            error = exc
        else:
            if not request.htmx:
                return redirect("studio:flow_detail", pk=flow.pk)
            flow.refresh_from_db()
            context = live_context(request, flow, clear_confirm=True)
            return render(request, "studio/partials/_flow_live.html", context)
    if error is not None and request.htmx:
        return error_fragment(request, error, "#flow-confirm-errors")
    status, message = error_status(error) if error else (400, "")
    context = _context(flow, action, form, error=message, stale=status == 409)
    if request.htmx:
        response = render(request, "studio/partials/_confirm.html", context, status=status)
        return reswap(retarget(response, "#flow-confirm"), "innerHTML")
    return render(request, "studio/confirm.html", context, status=status)
