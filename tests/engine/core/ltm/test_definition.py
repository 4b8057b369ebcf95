"""Checking LTM definitions (engine.core.ltm.definition): names, what belongs to the engine,
`init` and `transitions`, unreachable states, forward references. No Django involved."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from engine.core.ltm.definition import InvalidDefinition, LTMDefinitionWarning
from engine.core.ltm.node import LTM
from tests import ltm_catalog as catalog


def test_names_default_to_the_snake_cased_class_name() -> None:
    class MyLTM2(LTM):
        pass

    class HTTPServerState(LTM):
        pass

    assert MyLTM2.name == "my_ltm2"
    assert HTTPServerState.name == "http_server_state"


@pytest.mark.parametrize("name", ["BadName", "1abc", "has-dash", "x.y", "", "x_{Bad}", "x_{"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidDefinition, match="Culprit: name"):
        type("Culprit", (LTM,), {"name": name})


@pytest.mark.parametrize("method", ["execute", "records", "apply_records"])
def test_a_state_may_not_define_what_the_engine_calls(method: str) -> None:
    with pytest.raises(InvalidDefinition, match=f"Culprit: {method} belong to the engine"):
        type("Culprit", (LTM,), {method: lambda self: None})


def test_placeholders_are_allowed_in_names() -> None:
    assert catalog.Work.placeholders == ("n",)
    with pytest.raises(TypeError, match="not a root"):
        catalog.Work()


def test_duplicate_child_names_are_refused() -> None:
    class First(LTM):
        name = "same"

    class Second(LTM):
        name = "same"

    with pytest.raises(InvalidDefinition, match="Machine: two child states are named 'same'"):

        class Machine(LTM):
            init = [First]
            transitions = [{"from": First, "label": "next", "to": Second}]


@pytest.mark.parametrize("where", ["from", "to", "init"])
def test_entries_that_are_not_ltm_classes_are_refused(where: str) -> None:
    transition: dict[str, Any] = {"from": catalog.Waiting, "label": "go", "to": catalog.Done}
    attrs: dict[str, Any] = {"init": [catalog.Waiting], "transitions": [transition]}
    if where == "init":
        attrs["init"] = [catalog.Waiting, "done"]
    else:
        transition[where] = [catalog.Waiting, object]
    with pytest.raises(InvalidDefinition, match=f"Bad: .*{where}.* is not an LTM subclass"):
        type("Bad", (LTM,), attrs)


@pytest.mark.parametrize(
    ("transition", "message"),
    [
        ({"from": catalog.Waiting, "to": catalog.Done}, "has no 'label'"),
        ({"from": catalog.Waiting, "label": "", "to": catalog.Done}, "has no 'label'"),
        ({"from": catalog.Waiting, "label": "go"}, "has no 'to'"),
        ({"from": (), "label": "go", "to": catalog.Done}, "has no 'from'"),
        ({"from": catalog.Waiting, "label": "go", "to": catalog.Done, "when": 1}, "unknown"),
        ("go", "is not a dict"),
    ],
)
def test_malformed_transitions_are_refused(transition: Any, message: str) -> None:
    with pytest.raises(InvalidDefinition, match=f"Bad: .*{message}"):
        type("Bad", (LTM,), {"init": [catalog.Waiting], "transitions": [transition]})


def test_parameterised_init_states_are_refused() -> None:
    with pytest.raises(InvalidDefinition, match="init state 'work_{n}' is parameterised"):
        type("Bad", (LTM,), {"init": [catalog.Work]})


def test_unreachable_states_are_warned_about() -> None:
    with pytest.warns(LTMDefinitionWarning, match=r"Lonely: states \['done'\] can never be"):

        class Lonely(LTM):
            init = [catalog.Waiting]
            transitions = [{"from": catalog.Done, "label": "back", "to": catalog.Waiting}]


def test_the_catalog_defines_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class Clean(LTM):
            init = [catalog.Waiting]
            transitions = [{"from": catalog.Waiting, "label": "go", "to": catalog.Done}]

    assert Clean.definition().is_machine


def test_lazy_definitions_are_checked_on_first_use() -> None:
    class Later(LTM):
        @staticmethod
        def transitions() -> list[Any]:
            return [{"from": catalog.Waiting, "to": catalog.Done}]

    with pytest.raises(InvalidDefinition, match="Later: .*has no 'label'"):
        Later()


def test_a_machine_cannot_contain_itself() -> None:
    class Looping(LTM):
        @staticmethod
        def init() -> list[Any]:
            return [Looping]

    with pytest.raises(InvalidDefinition, match="contains itself"):
        Looping()
