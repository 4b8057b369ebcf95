"""The registry of root LTM classes by name (engine.core.ltm.registry). No Django involved."""

from __future__ import annotations

import pytest

from engine.core.ltm.definition import InvalidDefinition, LTMRedefinitionWarning
from engine.core.ltm.node import LTM
from engine.core.ltm.registry import ltm_registry, register, root_classes, unregister
from tests import ltm_catalog as catalog


def test_registry_of_root_machines() -> None:
    register(catalog.MyLtm)
    try:
        assert ltm_registry()["my_ltm"] is catalog.MyLtm
        assert register(catalog.MyLtm) is catalog.MyLtm
        with pytest.raises(InvalidDefinition, match="'my_ltm' is taken by tests.ltm_catalog.MyLtm"):
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


def _define(value: str) -> type[LTM]:
    """The same class statement each call: same module, same qualified name."""

    class Redefined(LTM):
        name = "redefined_root"
        marker = value

    return Redefined


def test_a_root_defined_again_under_the_same_name_replaces_the_earlier_one_with_a_warning():
    first = register(_define("first"))
    try:
        second = _define("second")
        with pytest.warns(RuntimeWarning, match="'redefined_root'.*already registered"):
            register(second)
        assert ltm_registry()["redefined_root"] is second
        with pytest.warns(LTMRedefinitionWarning):
            register(_define("third"))
        assert ltm_registry()["redefined_root"].marker == "third"  # type: ignore[attr-defined]
    finally:
        unregister(ltm_registry()["redefined_root"])
    assert first is not second


def test_another_class_claiming_a_taken_name_is_refused_naming_both():
    register(catalog.MyLtm)
    try:
        impostor = type("Impostor", (LTM,), {"name": "my_ltm", "__module__": "elsewhere"})
        with pytest.raises(InvalidDefinition) as refused:
            register(impostor)
        assert "elsewhere.Impostor" in str(refused.value)
        assert "tests.ltm_catalog.MyLtm" in str(refused.value)
        assert ltm_registry()["my_ltm"] is catalog.MyLtm
    finally:
        unregister(catalog.MyLtm)
