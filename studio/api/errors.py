"""What each failure means to an API client. Every error is JSON ``{"detail": ...}``:

  400  bad input (``errors`` lists the fields), including unknown scripts in a routine
  401  no or invalid credentials            403  authenticated but not allowed (or no CSRF)
  404  no such object, or not yours (the same answer, so nothing leaks)
  409  the object's state or version does not allow the call
  413  the body is larger than the configured limit
  429  too many requests (``Retry-After`` says when to come back)
  503  the database is busy, or no database connection became free in time; try again
       (``Retry-After``)
A failure the client did not cause is logged and answered with a plain 500.
"""

from __future__ import annotations

import logging
from typing import Any

import pydantic
from django.core.exceptions import (
    ObjectDoesNotExist,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
)
from django.db import OperationalError
from django.http import Http404, HttpRequest, HttpResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from engine import dbpool
from engine.core.errors import FlowStateError
from engine.core.ltm.definition import InvalidTransition
from engine.routines import RoutineStepError

logger = logging.getLogger("studio.api")

NOT_FOUND = "Not found"


def _field_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ninja's validation errors as plain JSON: where, what, which kind."""
    return [
        {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "")),
            "type": error.get("type", ""),
        }
        for error in errors
    ]


def _field_name(loc: list[Any]) -> str:
    """The field a client sent, as it wrote it: ``["body", "payload", "steps", 0, "script"]``
    -> ``steps.0.script``, ``["query", "limit"]`` -> ``limit`` (the request part and ninja's
    name of the body parameter are dropped)."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[2:]
    elif parts and parts[0] in {"query", "path", "header", "cookie", "form", "file"}:
        parts = parts[1:]
    return ".".join(str(part) for part in parts)


def _summary(errors: list[dict[str, Any]]) -> str:
    """``Invalid input: routine: Input should be a valid integer`` (one clause per field)."""
    clauses = []
    for error in errors:
        name = _field_name(error["loc"])
        clauses.append(f"{name}: {error['msg']}" if name else error["msg"])
    return "Invalid input: " + "; ".join(clauses) if clauses else "Invalid input"


def install(api: NinjaAPI) -> None:
    """Register the handlers on `api` (ninja picks the most specific class of an error)."""

    def reply(request: HttpRequest, status: int, detail: Any, **extra: Any) -> HttpResponse:
        return api.create_response(request, {"detail": detail, **extra}, status=status)

    @api.exception_handler(ValidationError)
    def invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        # Ninja answers 422 by default; this API says 400 for every kind of bad input, and
        # the detail names the fields (``errors`` has them one by one).
        errors = _field_errors(exc.errors)
        return reply(request, 400, _summary(errors), errors=errors)

    @api.exception_handler(RoutineStepError)
    def bad_step(request: HttpRequest, exc: RoutineStepError) -> HttpResponse:
        # The same place ninja names for a field of the body (parameter `payload`).
        loc = ["body", "payload", "steps", exc.index, exc.field]
        errors = [{"loc": loc, "msg": str(exc), "type": "value_error"}]
        return reply(request, 400, str(exc), errors=errors)

    @api.exception_handler(InvalidTransition)
    def bad_transition(request: HttpRequest, exc: InvalidTransition) -> HttpResponse:
        # The call itself is malformed (params that do not fit the targets' names).
        return reply(request, 400, str(exc))

    @api.exception_handler(ValueError)
    def bad_value(request: HttpRequest, exc: ValueError) -> HttpResponse:
        return reply(request, 400, str(exc) or "Invalid input")

    @api.exception_handler(pydantic.ValidationError)
    def bad_response(request: HttpRequest, exc: pydantic.ValidationError) -> HttpResponse:
        # Request data is validated into ninja's ValidationError above; a pydantic error
        # reaching here is a response the server built wrongly, not the client's fault.
        logger.exception("API response failed validation: %s", request.path)
        return reply(request, 500, "Internal server error")

    @api.exception_handler(SuspiciousOperation)
    def suspicious(request: HttpRequest, exc: SuspiciousOperation) -> HttpResponse:
        return reply(request, 400, "Bad request")

    @api.exception_handler(MultiPartParserError)
    def bad_form(request: HttpRequest, exc: MultiPartParserError) -> HttpResponse:
        # The CSRF check reads form bodies; a broken multipart body must not be a 500.
        return reply(request, 400, f"Malformed request body: {exc}")

    @api.exception_handler(UnreadablePostError)
    def unreadable(request: HttpRequest, exc: UnreadablePostError) -> HttpResponse:
        return reply(request, 400, "The request body could not be read")

    @api.exception_handler(RequestDataTooBig)
    def too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
        return reply(request, 413, "Request body too large")

    @api.exception_handler(AuthenticationError)
    def unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        response = reply(request, 401, "Authentication required: a Bearer token or a session")
        response["WWW-Authenticate"] = 'Bearer realm="flowstudio"'
        return response

    @api.exception_handler(HttpError)
    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        return reply(request, exc.status_code, str(exc))

    @api.exception_handler(PermissionDenied)
    def forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
        return reply(request, 403, str(exc) or "Forbidden")

    @api.exception_handler(ObjectDoesNotExist)
    def missing(request: HttpRequest, exc: ObjectDoesNotExist) -> HttpResponse:
        # Always the same words: a foreign object must look exactly like a missing one.
        return reply(request, 404, NOT_FOUND)

    @api.exception_handler(Http404)
    def missing_page(request: HttpRequest, exc: Http404) -> HttpResponse:
        return reply(request, 404, NOT_FOUND)

    @api.exception_handler(FlowStateError)
    def conflict(request: HttpRequest, exc: FlowStateError) -> HttpResponse:
        return reply(request, 409, str(exc))

    @api.exception_handler(OperationalError)
    def busy(request: HttpRequest, exc: OperationalError) -> HttpResponse:
        if dbpool.is_pool_timeout(exc):
            # Every connection of this process's pool stayed taken: one line, no traceback.
            logger.warning("API call found no free database connection: %s", request.path)
            response = reply(request, 503, dbpool.busy_message())
        else:
            logger.warning("API call hit a database error: %s", exc)
            response = reply(request, 503, "The database is busy; try again")
        response["Retry-After"] = "1"
        return response

    @api.exception_handler(Exception)
    def unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
        logger.exception("API call failed: %s %s", request.method, request.path)
        return reply(request, 500, "Internal server error")
