"""Test settings: the project's settings with their own runtime directory and Huey in
immediate mode (integration tests switch it off and start a real consumer process)."""

import os
from pathlib import Path

os.environ.setdefault(
    "FLOWSTUDIO_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test")
)
os.environ.setdefault("HUEY_IMMEDIATE", "1")
os.environ.setdefault("FLOWSTUDIO_SCRIPT_MODULES", "tests.catalog")

from studio.settings import *  # noqa: E402,F403
