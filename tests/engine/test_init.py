"""The public API of the engine for script and machine authors (`engine`, engine/__init__.py):
importable without Django, and every name it exports."""

from __future__ import annotations

import subprocess
import sys

import engine
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


def test_the_public_authoring_api() -> None:
    from engine.core.ltm.definition import InvalidTransition
    from engine.core.ltm.node import LTM

    assert engine.LTM is LTM and engine.InvalidTransition is InvalidTransition
    for name in engine.__all__:
        assert getattr(engine, name) is not None
    assert set(engine.__all__) >= {
        "Task",
        "result",
        "wait",
        "kill",
        "done",
        "LTM",
        "FlowStateError",
        "InvalidTransition",
    }
