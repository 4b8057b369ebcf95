"""`manage.py check --deploy` with production settings: no warnings. Without them it does
warn, so the production switches are what makes it pass."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from tests.conftest import ROOT


def check_deploy(tmp_path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "FLOWSTUDIO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="studio.settings",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(60),
        DJANGO_ALLOWED_HOSTS="studio.example.com",
        FLOWSTUDIO_VAR_DIR=str(tmp_path),
        **extra,
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    run = check_deploy(tmp_path, DJANGO_SECURE="1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no issues (0 silenced)" in run.stdout


def test_check_deploy_warns_without_them(tmp_path):
    run = check_deploy(tmp_path)
    assert run.returncode != 0
    assert "security.W004" in run.stderr + run.stdout  # HSTS, among others
