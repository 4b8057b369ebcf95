"""Routines: the list, the builder (palette, steps, preview, save) and starting a flow."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import push_url

from engine import api, jsonsafe, routines
from engine.core.flows import script as scripts
from engine.models import Routine
from studio.forms import (
    RoutineForm,
    StartFlowForm,
    StepDraft,
    drafts_from_post,
    drafts_from_routine,
    save_routine,
    validate_drafts,
)
from studio.views._helpers import (
    ENGINE_ERRORS,
    diagram,
    error_status,
    get_routine,
    page_or_partial,
    steps_graph,
    visible_routines,
)


def palette() -> list[dict[str, Any]]:
    """The registered Task scripts as the builder's palette shows them, by label."""
    infos = [scripts.describe(cls) for cls in scripts.registry().values()]
    return sorted(infos, key=lambda info: (info["label"].lower(), info["name"]))


@login_required
def routine_list(request: HttpRequest) -> HttpResponse:
    routines = visible_routines(request.user).prefetch_related("steps__task")
    return render(request, "studio/routine_list.html", {"routines": routines})


def _apply_op(op: str, drafts: list[StepDraft]) -> list[StepDraft]:
    """The builder's steps after one edit: `add:<script>`, `up:<key>`, `down:<key>`,
    `remove:<key>`. Anything else leaves them as they are."""
    verb, _, arg = op.partition(":")
    if verb == "add" and arg:
        return [*drafts, StepDraft(script=arg)]
    keys = [d.key for d in drafts]
    if arg not in keys:
        return drafts
    index = keys.index(arg)
    if verb == "remove":
        return drafts[:index] + drafts[index + 1 :]
    other = index - 1 if verb == "up" else index + 1 if verb == "down" else -1
    if 0 <= other < len(drafts):
        drafts = list(drafts)
        drafts[index], drafts[other] = drafts[other], drafts[index]
    return drafts


def _builder_context(
    routine: Routine | None, form: RoutineForm, drafts: list[StepDraft], **extra: Any
) -> dict[str, Any]:
    title = (form.data.get("name") if form.is_bound else form.initial.get("name")) or "new routine"
    preview = diagram(steps_graph(title, [(d.label, d.script) for d in drafts])) if drafts else {}
    return {
        "routine": routine,
        "form": form,
        "drafts": drafts,
        "palette": palette(),
        "preview": preview,
        "has_flows": bool(routine and routine.flows.exists()),
        **extra,
    }


@login_required
@require_http_methods(["GET", "POST"])
def routine_builder(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    """Compose a routine. Every button posts the whole form (so it works without JS); htmx
    swaps the builder in place. `op=save` validates everything and saves atomically."""
    routine = get_routine(request.user, pk) if pk is not None else None
    if routine is not None and not routines.can_edit_routine(request.user, routine):
        raise PermissionDenied("only its owner or staff may edit this routine")
    if request.method == "GET":
        initial = {"name": routine.name, "description": routine.description} if routine else {}
        drafts = drafts_from_routine(routine) if routine else []
        context = _builder_context(routine, RoutineForm(initial=initial), drafts)
        return render(request, "studio/routine_builder.html", context)
    form = RoutineForm(request.POST)
    drafts = drafts_from_post(request.POST)
    op = request.POST.get("op", "")
    status = 200
    extra: dict[str, Any] = {}
    if op != "save":
        drafts = _apply_op(op, drafts)
        validate_drafts(drafts)
    else:
        valid = form.is_valid() & validate_drafts(drafts)
        sent_version = request.POST.get("routine_version") or None
        version = jsonsafe.parse_id(sent_version)
        if not drafts:
            extra["steps_error"] = "Add at least one step from the palette."
        elif sent_version is not None and version is None:
            extra["steps_error"] = "The form's routine version is not valid; reload the page."
        elif valid:
            try:
                saved = save_routine(
                    routine,
                    form.cleaned_data["name"],
                    form.cleaned_data["description"],
                    drafts,
                    request.user,
                    version=version,
                )
            except routines.StaleRoutineError as exc:
                extra["steps_error"] = str(exc)
                status = 409
            except (ValueError, PermissionDenied) as exc:
                extra["steps_error"] = str(exc)
            else:
                url = reverse("studio:routine_edit", args=[saved.pk])
                if not request.htmx:
                    return redirect(url)
                form = RoutineForm(initial={"name": saved.name, "description": saved.description})
                context = _builder_context(
                    saved, form, drafts_from_routine(saved), saved_version=saved.version
                )
                response = render(request, "studio/partials/_routine_builder.html", context)
                return push_url(response, url)
        status = status if status != 200 else 400
    context = _builder_context(routine, form, drafts, **extra)
    return page_or_partial(
        request,
        "studio/routine_builder.html",
        "studio/partials/_routine_builder.html",
        context,
        status=status,
    )


@login_required
@require_POST
def routine_preview(request: HttpRequest) -> HttpResponse:
    """The builder's diagram for the steps as they are in the form now."""
    drafts = drafts_from_post(request.POST)
    title = request.POST.get("name") or "new routine"
    preview = diagram(steps_graph(title, [(d.label, d.script) for d in drafts])) if drafts else {}
    return render(request, "studio/partials/_routine_preview.html", {"preview": preview})


@login_required
@require_http_methods(["GET", "POST"])
def start_flow(request: HttpRequest, pk: int) -> HttpResponse:
    """Start a flow of a routine, with optional initial data (a JSON object)."""
    routine = get_routine(request.user, pk)
    form = StartFlowForm(request.POST or None)
    context: dict[str, Any] = {"routine": routine, "form": form}
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                flow = api.start_flow(routine, request.user, form.cleaned_data["initial_data"])
            except ENGINE_ERRORS as exc:
                status, context["error"] = error_status(exc)
            else:
                if not request.htmx:
                    return redirect("studio:flow_detail", pk=flow.pk)
                context.update(started=flow, form=StartFlowForm())
                status = 201
    return page_or_partial(
        request, "studio/start_flow.html", "studio/partials/_start_form.html", context, status
    )
