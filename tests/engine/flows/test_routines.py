"""Routines (engine.flows.routines): only registered Task scripts may be named."""

from __future__ import annotations

import pytest

from engine import api

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


def test_create_routine_refuses_unknown_scripts(user):
    for bad in ("os.system", "no_such_script", "engine.api.kill_flow"):
        with pytest.raises(ValueError, match="not a registered Task script"):
            api.create_routine("bad", ["t_echo", bad], owner=user)


def test_a_step_name_longer_than_its_column_is_refused_by_the_service_too(user):
    """The builder and the service apply the same rule: on PostgreSQL a 201-character step
    name was a database error through `create_routine`."""
    with pytest.raises(api.RoutineStepError) as refused:
        api.create_routine("r", ["t_echo", {"script": "t_echo", "label": "x" * 201}], owner=user)
    assert (refused.value.index, refused.value.field) == (1, "label")
    assert "longer than 200 characters" in str(refused.value)
    problems = api.step_problems(0, {"script": "nope", "label": "a\x00", "params": "x"})
    assert [p.field for p in problems] == ["script", "label", "params"]
