"""The palette: registered Task scripts and registered LTMs (read-only)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router

from engine import LTM
from engine import api as engine_api
from studio.api.schemas import LtmOut, ScriptOut

router = Router(tags=["scripts"])


@router.get("/scripts", response=list[ScriptOut], summary="Registered Task scripts")
def list_scripts(request: HttpRequest) -> list[dict[str, Any]]:
    """Every script a routine step may name, in name order, with the JSON Schema of the
    input its waiting step takes (`input_schema`)."""
    known = engine_api.scripts()
    return [
        {**known[name], "input_schema": engine_api.script_schema(name)} for name in sorted(known)
    ]


def describe_ltm(cls: type[LTM]) -> dict[str, Any]:
    """An LTM class as the palette shows it: its states and every transition label of its
    tree."""
    labels = {
        transition.label
        for each in engine_api.ltm_classes(cls)
        for transition in each.definition().transitions
    }
    return {
        "name": cls.name,
        "doc": (cls.__doc__ or "").strip(),
        "states": list(cls.definition().children),
        "labels": sorted(labels),
    }


@router.get("/ltms", response=list[LtmOut], summary="Registered LTMs")
def list_ltms(request: HttpRequest) -> list[dict[str, Any]]:
    """Every LTM a run may be started from, in name order."""
    known = engine_api.ltm_roots()
    return [describe_ltm(known[name]) for name in sorted(known)]
