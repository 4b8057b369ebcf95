"""Schedules: the list with its create form, the confirmation of a pause, resume or delete and
the action itself, and the hint the form shows while a cron expression is typed. Every form
works without htmx (a full page, a redirect after success); with htmx the form and the
confirmation are swapped in place and a success reloads the list."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from engine import api
from studio.web import schedules
from studio.web.http import (
    ENGINE_ERRORS,
    HtmxHttpRequest,
    error_fragment,
    error_status,
    page_or_partial,
)

PAGE = "studio/schedules.html"
FORM = "studio/partials/_schedule_form.html"
CONFIRM_PAGE = "studio/schedule_confirm.html"
CONFIRM = "studio/partials/_schedule_confirm.html"
HINT = "studio/partials/_cron_hint.html"


def _to_list(request: HtmxHttpRequest, anchor: str = "") -> HttpResponse:
    """Back to the list after a change: a redirect, or for htmx a full load of the list (to
    the URL without the anchor: the page is there already, and a change of anchor alone
    would only scroll it)."""
    url = reverse("studio:schedules")
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url + anchor)


@login_required
@require_http_methods(["GET", "POST"])
def schedule_list(request: HtmxHttpRequest) -> HttpResponse:
    """The schedules the user may see, and the form that creates one (POST)."""
    if request.method == "GET":
        return render(request, PAGE, schedules.schedules(request.user, request.GET))
    form = schedules.ScheduleForm(request.POST, user=request.user)
    status = 400
    if form.is_valid():
        data = form.cleaned_data
        try:
            schedule = api.create_schedule(
                data["routine"],
                request.user,
                data["cron"],
                timezone=data["timezone"],
                data=data["data"],
                owner=data.get("owner"),
                name=data["name"],
            )
        except ENGINE_ERRORS as exc:
            status, message = error_status(exc)
            form.add_error(None, message)
        else:
            messages.success(request, f"Schedule #{schedule.pk} created.")
            return _to_list(request, f"#schedule-{schedule.pk}")
    context = schedules.schedules(request.user, request.GET, form=form)
    return page_or_partial(request, PAGE, FORM, context, status=status)


@login_required
@require_GET
def schedule_hint(request: HtmxHttpRequest) -> HttpResponse:
    """What the form says of the cron expression typed so far."""
    cron = request.GET.get("cron", "")[:1000]
    zone = request.GET.get("timezone", "")[:200].strip()
    return render(request, HINT, schedules.cron_hint(cron, zone))


@login_required
@require_GET
def schedule_confirm(request: HtmxHttpRequest, pk: int, action: str) -> HttpResponse:
    """The confirmation of a pause, resume or delete, with what it will do."""
    schedule = schedules.get_schedule(request.user, pk)
    context = schedules.confirm(schedule, schedules.action(action))
    return render(request, CONFIRM if request.htmx else CONFIRM_PAGE, context)


@login_required
@require_POST
def schedule_act(request: HtmxHttpRequest, pk: int, action: str) -> HttpResponse:
    """Carry out a confirmed pause, resume or delete through `engine.api`."""
    schedule = schedules.get_schedule(request.user, pk)
    action = schedules.action(action)
    try:
        if action == "pause":
            api.pause_schedule(schedule, request.user)
        elif action == "resume":
            api.resume_schedule(schedule, request.user)
        else:
            api.delete_schedule(schedule, request.user)
    except ENGINE_ERRORS as exc:
        if request.htmx:
            return error_fragment(request, exc, "#schedule-confirm-errors")
        status, message = error_status(exc)
        context = schedules.confirm(schedule, action, error=message)
        return render(request, CONFIRM_PAGE, context, status=status)
    done = {"pause": "paused", "resume": "resumed", "delete": "deleted"}[action]
    messages.success(request, f"Schedule #{pk} {done}.")
    return _to_list(request, "" if action == "delete" else f"#schedule-{pk}")
