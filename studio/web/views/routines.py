"""Routines: the list, the builder (palette, steps, preview, save) and starting a flow."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, push_url

from engine import api
from studio.web import pages
from studio.web.forms import (
    RoutineForm,
    StartFlowForm,
    drafts_from_post,
    drafts_from_routine,
    save_routine,
    validate_drafts,
)
from studio.web.http import ENGINE_ERRORS, HtmxHttpRequest, error_status, page_or_partial


@login_required
def routine_list(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "studio/routine_list.html", pages.routine_list(request.user))


@login_required
@require_http_methods(["GET", "POST"])
def routine_builder(request: HtmxHttpRequest, pk: int | None = None) -> HttpResponse:
    """Compose a routine. Every button posts the whole form (so it works without JS); htmx
    swaps the builder in place. `op=save` validates everything and saves atomically."""
    routine = pages.get_routine(request.user, pk) if pk is not None else None
    if routine is not None and not api.can_edit_routine(request.user, routine):
        raise PermissionDenied("only its owner or staff may edit this routine")
    if request.method == "GET":
        initial = {"name": routine.name, "description": routine.description} if routine else {}
        drafts = drafts_from_routine(routine) if routine else []
        context = pages.builder(routine, RoutineForm(initial=initial), drafts)
        return render(request, "studio/routine_builder.html", context)
    form = RoutineForm(request.POST)
    drafts = drafts_from_post(request.POST)
    op = request.POST.get("op", "")
    status = 200
    extra: dict[str, Any] = {}
    if op != "save":
        drafts = pages.apply_op(op, drafts)
        validate_drafts(drafts)
    else:
        valid = form.is_valid() & validate_drafts(drafts)
        sent_version = request.POST.get("routine_version") or None
        version = api.parse_id(sent_version)
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
            except api.StaleRoutineError as exc:
                extra["steps_error"] = str(exc)
                status = 409
            except (ValueError, PermissionDenied) as exc:
                extra["steps_error"] = str(exc)
            else:
                url = reverse("studio:routine_edit", args=[saved.pk])
                if not request.htmx:
                    return redirect(url)
                form = RoutineForm(initial={"name": saved.name, "description": saved.description})
                context = pages.builder(
                    saved, form, drafts_from_routine(saved), saved_version=saved.version
                )
                response = render(request, "studio/partials/_routine_builder.html", context)
                return push_url(response, url)
        status = status if status != 200 else 400
    context = pages.builder(routine, form, drafts, **extra)
    return page_or_partial(
        request,
        "studio/routine_builder.html",
        "studio/partials/_routine_builder.html",
        context,
        status=status,
    )


@login_required
@require_POST
def routine_preview(request: HtmxHttpRequest) -> HttpResponse:
    """The builder's diagram for the steps as they are in the form now."""
    context = pages.routine_preview(request.POST.get("name", ""), drafts_from_post(request.POST))
    return render(request, "studio/partials/_routine_preview.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def start_flow(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Start a flow of a routine, with optional initial data (a JSON object)."""
    routine = pages.get_routine(request.user, pk)
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
                # To the new flow's page (the routines page starts another); htmx follows
                # HX-Redirect with a full page load.
                messages.success(request, f"Flow #{flow.pk} started.")
                url = reverse("studio:flow_detail", args=[flow.pk])
                return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    return page_or_partial(
        request, "studio/start_flow.html", "studio/partials/_start_form.html", context, status
    )
