"""Bulk actions from the dashboard: the preview of the action over the selected flows (counts
per state, refusals and why), its confirmation, which starts it in the background, and its
progress — in place with htmx (and live over the websocket), or as pages of their own
without JavaScript — and the user's bulk actions."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from engine import api
from studio.web import bulk
from studio.web.http import HtmxHttpRequest, page_or_partial

PANEL = "#bulk-panel"


def _in_panel(response: HttpResponse) -> HttpResponse:
    """An htmx answer shown in the dashboard's bulk panel, whatever the request targeted."""
    return reswap(retarget(response, PANEL), "innerHTML")


@login_required
@require_POST
def bulk_preview(request: HtmxHttpRequest) -> HttpResponse:
    """What the action bar's bulk action would do to the selected flows (nothing is done)."""
    context, status = bulk.preview(request.user, bulk.BulkForm(request.POST))
    if request.htmx:
        return _in_panel(render(request, bulk.PREVIEW, context, status=status))
    return render(request, "studio/bulk_preview.html", context, status=status)


@login_required
@require_POST
def bulk_start(request: HtmxHttpRequest) -> HttpResponse:
    """Start the confirmed bulk action: its progress (htmx) or its page. Refused (no reason,
    nothing left to act on, ...), the preview again with the error (4xx), nothing started."""
    form = bulk.BulkForm(request.POST)
    error = ""
    status = 400
    if form.is_valid():
        data = form.cleaned_data
        try:
            started = api.start_bulk(request.user, data["action"], form.selection, data["reason"])
        except ValueError as exc:
            error = str(exc)
        except PermissionDenied as exc:
            error, status = str(exc) or "You may not do this.", 403
        else:
            if not request.htmx:
                return redirect("studio:bulk_detail", pk=started.pk)
            context = bulk.progress(request.user, bulk.get_bulk(request.user, started.pk))
            return _in_panel(render(request, bulk.PROGRESS, context))
    context, _ = bulk.preview(request.user, form, error=error)
    status = status if error else 400
    if request.htmx:
        return _in_panel(render(request, bulk.PREVIEW, context, status=status))
    return render(request, "studio/bulk_preview.html", context, status=status)


@login_required
@require_GET
def bulk_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """A bulk action's progress and summary: its page, or (htmx, polling while the socket
    is down) its progress alone. Another user's is a 404."""
    context = bulk.progress(request.user, bulk.get_bulk(request.user, pk))
    return page_or_partial(request, "studio/bulk_detail.html", bulk.PROGRESS, context)


@login_required
@require_GET
def bulk_list(request: HtmxHttpRequest) -> HttpResponse:
    """The user's bulk actions, newest first."""
    return render(request, "studio/bulk_list.html", bulk.bulk_list(request.user, request.GET))
