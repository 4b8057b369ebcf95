"""The REST API of Flow Studio (django-ninja): JSON under /api/, described by the OpenAPI
schema at /api/openapi.json, interactive docs at /api/docs. See docs/api.md.

Endpoints are thin: they check who may see an object, call `engine.api` (or
`engine.api`), and shape the answer; `studio.api.errors` says what each failure means.
"""
