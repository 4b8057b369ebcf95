"""The Task base class and the script registry (engine.core.flows.script): names checked when
a class is defined, lookups, and the palette's description of a script. No Django involved."""

from __future__ import annotations

import pytest

from engine import Task
from engine.core.flows.script import ScriptDefinitionError, describe, get_script, registry


def test_bad_script_name_is_refused_naming_the_class():
    with pytest.raises(ScriptDefinitionError, match=r"BadName.*\^\[a-z\]"):

        class BadName(Task):
            name = "Bad-Name"


def test_missing_name_is_refused():
    with pytest.raises(ScriptDefinitionError, match="Nameless"):

        class Nameless(Task):
            pass


def test_duplicate_name_names_both_classes():
    with pytest.raises(ScriptDefinitionError, match=r"Second.*already taken by .*catalog\.Echo"):

        class Second(Task):
            name = "t_echo"


def test_abstract_base_is_not_registered():
    class Base(Task):
        abstract = True

    assert "Base" not in str(registry())


def test_registry_and_palette_description():
    cls = get_script("t_wait")
    info = describe(cls)
    assert info["name"] == "t_wait" and info["blocking"] is True
    assert info["input_fields"] == ["answer"]
    assert "until input arrives" in info["doc"]
    assert describe(get_script("t_offloaded"))["blocking"] is False
    assert describe(get_script("t_checked"))["checks_while_waiting"] is True
    with pytest.raises(LookupError, match="no Task script is registered as 'nope'"):
        get_script("nope")
