"""The API object and its URLs; the project mounts it at /api/."""

from ninja import NinjaAPI

from studio.api import (
    bulk,
    errors,
    events,
    flows,
    ltms,
    notifications,
    routines,
    schedules,
    scripts,
    tokens,
    versions,
)
from studio.api.auth import api_auth
from studio.api.throttling import UserRateThrottle

DESCRIPTION = """JSON API of Flow Studio.

Authenticate with a personal token (`Authorization: Bearer fs_...`, created under
`/api/tokens` from a signed-in session) or with the studio's session cookie plus the
`X-CSRFToken` header on unsafe methods. Errors are `{"detail": ...}` with 400 (bad input,
`errors` lists the fields), 401, 403, 404 (missing or not yours), 409 (state or version
conflict), 413 (body too large) and 429 (rate limit, see `Retry-After`).
"""

api = NinjaAPI(
    title="Flow Studio API",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api",
    auth=api_auth,
    throttle=[UserRateThrottle()],
)
errors.install(api)
api.add_router("", scripts.router)
api.add_router("", routines.router)
api.add_router("", flows.router)
api.add_router("", bulk.router)
api.add_router("", schedules.router)
api.add_router("", versions.router)
api.add_router("", events.router)
api.add_router("", notifications.router)
api.add_router("", ltms.router)
api.add_router("", tokens.router)
