"""A full database pool is a 503 on the studio's pages too (the REST API answers it itself,
see studio/api/errors.py): a request that waited the pool's whole timeout for a connection is
told to come back (`Retry-After`), logged in one line, not answered 500 with a traceback."""

from __future__ import annotations

import logging

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from engine import api

logger = logging.getLogger("studio")


class DatabaseBusyMiddleware(MiddlewareMixin):
    # (Synchronous, as every middleware here runs: studio.asgi enters the whole chain once,
    # in the request's thread.)
    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError) or not api.is_pool_timeout(exception):
            return None
        logger.warning("no free database connection for %s %s", request.method, request.path)
        response = HttpResponse(
            api.busy_message(), status=503, content_type="text/plain; charset=utf-8"
        )
        response["Retry-After"] = "1"
        return response
