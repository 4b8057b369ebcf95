"""The API object (studio/api/urls.py): its OpenAPI schema and interactive docs."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


def test_openapi_schema_and_docs_are_served(c):
    schema = c.get("/api/openapi.json").json()
    assert schema["info"]["title"] == "Flow Studio API"
    assert "/api/flows/{flow_id}/input" in schema["paths"]
    docs = c.get("/api/docs")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
