"""What a returned value means for a flow (engine.core.flows.outcome): `interpret`, a raised
exception as a failure, and the pure step function `decide`. No Django involved."""

from __future__ import annotations

import pytest

from engine import done, kill, result, wait
from engine.core.flows import outcome as core


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
