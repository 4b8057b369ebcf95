"""The palette over the REST API (studio/api/scripts.py): registered Task scripts and LTMs."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


def test_scripts_lists_the_registry(c):
    scripts = {item["name"]: item for item in c.get("/api/scripts").json()}
    assert scripts["t_wait"]["input_fields"] == ["answer"]
    assert scripts["t_offloaded"]["blocking"] is False


def test_ltms_lists_registered_machines(c):
    from engine.core.ltm.registry import ltm_registry

    names = [item["name"] for item in c.get("/api/ltms").json()]
    assert names == sorted(ltm_registry())
