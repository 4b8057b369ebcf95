"""The registry of root LTM classes by name (engine.core.ltm.registry). No Django involved."""

from __future__ import annotations

import pytest

from engine.core.ltm.definition import InvalidDefinition
from engine.core.ltm.node import LTM
from engine.core.ltm.registry import ltm_registry, register, root_classes, unregister
from tests import ltm_catalog as catalog


def test_registry_of_root_machines() -> None:
    register(catalog.MyLtm)
    try:
        assert ltm_registry()["my_ltm"] is catalog.MyLtm
        assert register(catalog.MyLtm) is catalog.MyLtm
        with pytest.raises(InvalidDefinition, match="'my_ltm' is taken by MyLtm"):
            register(type("Other", (LTM,), {"name": "my_ltm"}))
    finally:
        unregister(catalog.MyLtm)
    assert "my_ltm" not in ltm_registry()

    @register
    class Registered(LTM):
        init = [catalog.Waiting]

    assert ltm_registry()["registered"] is Registered
    unregister(Registered)


def test_root_classes_are_the_ones_no_other_names_as_a_child() -> None:
    found = root_classes(
        [catalog.MyLtm, catalog.MyState, catalog.EndState, catalog.Deep, catalog.Level1]
    )
    assert found == [catalog.MyLtm, catalog.Deep]
