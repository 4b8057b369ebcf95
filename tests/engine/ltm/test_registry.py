"""Finding the project's root LTMs at start-up and plugging in the Django runtime
(engine.ltm.registry)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.engine.ltm.support import django_runtime  # noqa: F401  (autouse fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


def test_app_start_up_installs_the_django_runtime_and_registers_roots():
    code = (
        "import django; django.setup()\n"
        "from engine.core.ltm.registry import ltm_registry\n"
        "from engine.core.ltm.runtime import get_default_runtime\n"
        "print(type(get_default_runtime()).__name__)\n"
        "print(sorted(ltm_registry()))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    runtime, names = done.stdout.splitlines()
    assert runtime == "DjangoRuntime"
    for name in ("my_ltm", "fan_out", "deep", "broadcast", "order_process"):
        assert f"'{name}'" in names
    assert "'my_state'" not in names and "'level1'" not in names  # children are not roots
