"""What the studio's views share about HTTP: the request as django-htmx makes it, one view
serving a page and its partial, and the answer to an engine error (status, message, and the
htmx fragment that shows it where the user acted)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_htmx.http import reswap, retarget
from django_htmx.middleware import HtmxDetails

from engine import api

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class HtmxHttpRequest(HttpRequest):
    """A request that went through django-htmx's middleware, which sets `htmx` (falsy for
    a request not made by htmx). django-htmx ships no such class: its documentation has
    projects declare this one for type checkers."""

    htmx: HtmxDetails


class SignedInHttpRequest(HtmxHttpRequest):
    """The request of a view behind `login_required`: its user is signed in, never anonymous."""

    user: User


def page_or_partial(
    request: HtmxHttpRequest,
    page: str,
    partial: str,
    context: dict[str, Any],
    status: int = 200,
) -> HttpResponse:
    """One view serves the page and its partial: htmx requests get the partial only."""
    template = partial if request.htmx and not request.htmx.boosted else page
    return render(request, template, context, status=status)


def error_status(exc: Exception) -> tuple[int, str]:
    """HTTP status and message for an error raised by an engine action on user request."""
    if isinstance(exc, api.StaleFlowError):
        return 409, f"This flow changed since you loaded the page; reload it and try again. ({exc})"
    if isinstance(exc, api.FlowStateError):
        return 409, str(exc)
    if isinstance(exc, PermissionDenied):
        return 403, str(exc) or "you may not do this"
    if isinstance(exc, ObjectDoesNotExist):
        return 404, "no such record"
    return 400, str(exc)


ENGINE_ERRORS = (
    api.StaleFlowError,
    api.FlowStateError,
    PermissionDenied,
    ValueError,
    ObjectDoesNotExist,
)


def error_fragment(request: HtmxHttpRequest, exc: Exception, target: str) -> HttpResponse:
    """The error as an htmx fragment swapped into `target` (whatever the request targeted)."""
    status, message = error_status(exc)
    context = {"message": message, "status": status, "stale": status == 409}
    response = render(request, "studio/partials/_error.html", context, status=status)
    return reswap(retarget(response, target), "innerHTML")
