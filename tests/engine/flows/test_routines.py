"""Routines (engine.flows.routines): only registered Task scripts may be named."""

from __future__ import annotations

import pytest

from engine import api

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


def test_create_routine_refuses_unknown_scripts(user):
    for bad in ("os.system", "no_such_script", "engine.api.kill_flow"):
        with pytest.raises(ValueError, match="not a registered Task script"):
            api.create_routine("bad", ["t_echo", bad], owner=user)
