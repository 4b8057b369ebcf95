"""The pure core: importable without Django; script registry and outcome interpretation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine import Task, done, kill, result, wait
from engine.core.flows import outcome as core
from engine.core.flows.script import ScriptDefinitionError, describe, get_script, registry
from tests.conftest import ROOT


def test_public_api_imports_without_django():
    code = (
        "import sys; from engine import Task, result, wait, kill, done;"
        "import engine.core.flows.outcome, engine.core.flows.script, engine.core.flows.signals;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('django','huey','channels')];"
        "assert not bad, bad"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=str(ROOT),
    )


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


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (5, core.Outcome(core.Kind.ADVANCE, value=5)),
        ((1, 2), core.Outcome(core.Kind.ADVANCE, value=(1, 2))),
        (result(), core.Outcome(core.Kind.ADVANCE, value=None)),
        (result(7), core.Outcome(core.Kind.ADVANCE, value=7)),
        (result(a=1), core.Outcome(core.Kind.ADVANCE, value={"a": 1})),
        ((True, result(3)), core.Outcome(core.Kind.ADVANCE, value=3)),
        (
            (True, wait(reason="login_required")),
            core.Outcome(core.Kind.WAIT, reason="login_required"),
        ),
        (kill(reason="x"), core.Outcome(core.Kind.KILL, reason="x")),
        ((True, kill(reason="Smoke")), core.Outcome(core.Kind.KILL, reason="Smoke")),
        (done(), core.Outcome(core.Kind.DONE, value=None)),
        (done(n=1), core.Outcome(core.Kind.DONE, value={"n": 1})),
        (
            (False, "name 'x' is not defined"),
            core.Outcome(core.Kind.FAIL, reason="name 'x' is not defined"),
        ),
        ((False, result(error="e")), core.Outcome(core.Kind.FAIL, reason="{'error': 'e'}")),
    ],
)
def test_interpret(returned, expected):
    assert core.interpret(returned) == expected


def test_exception_becomes_failure_with_traceback():
    def perform():
        raise KeyError("k")

    outcome = core.perform_script(perform)
    assert outcome.kind is core.Kind.FAIL and outcome.reason == "KeyError: 'k'"
    assert "Traceback" in outcome.traceback


def test_result_refuses_value_and_fields_together():
    with pytest.raises(TypeError):
        result(1, a=2)


@pytest.mark.parametrize(
    ("position", "kind", "state", "new_position", "stored"),
    [
        (0, core.Kind.ADVANCE, "running", 1, True),
        (2, core.Kind.ADVANCE, "complete", 2, True),
        (1, core.Kind.DONE, "complete", 1, True),
        (1, core.Kind.WAIT, "waiting", 1, False),
        (1, core.Kind.KILL, "killed", 1, False),
        (1, core.Kind.FAIL, "failed", 1, False),
    ],
)
def test_decide(position, kind, state, new_position, stored):
    decision = core.decide(position, 3, core.Outcome(kind))
    assert (decision.state, decision.position, decision.store_result) == (
        state,
        new_position,
        stored,
    )
