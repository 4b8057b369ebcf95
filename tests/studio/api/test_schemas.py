"""Request shapes of the REST API (studio/api/schemas.py): integers in bodies are strict and
bounded."""

from __future__ import annotations

import pytest

from engine import api
from tests.studio.api.conftest import post, put

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


# Integers in bodies are strict: a JSON integer, never a boolean, a string or a float; and
# bounded, so that a number no database column holds is a 400 as well.
LOOSE_INTEGERS = [True, False, "1", "0", 1.0, 0.0, 2**63, -1]


def assert_refused(response, field: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert field in body["detail"], body
    assert [error["loc"][-1] for error in body["errors"]] == [field]


@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_start_flow_routine_must_be_a_strict_integer(c, routine):
    r = routine("t_echo")
    assert r.pk == 1  # so that true, "1" and 1.0 would name it if they were taken loosely
    for value in [*LOOSE_INTEGERS, str(r.pk), float(r.pk), 2**64]:
        assert_refused(post(c, "/api/flows", {"routine": value}), "routine")
    assert not r.flows.exists()
    assert post(c, "/api/flows", {"routine": r.pk}).status_code == 201


def test_move_position_must_be_a_strict_integer(c, routine, user):
    flow = api.start_flow(routine("t_echo", "t_wait", "t_wait"), user)
    flow.refresh_from_db()
    assert (flow.state, flow.position) == ("waiting", 1)
    version = flow.version
    for value in [*LOOSE_INTEGERS, "2", 2.0, 2**64]:
        response = post(c, f"/api/flows/{flow.pk}/move", {"position": value, "reason": "r"})
        assert_refused(response, "position")
    flow.refresh_from_db()
    assert (flow.position, flow.version) == (1, version)  # never moved
    moved = post(c, f"/api/flows/{flow.pk}/move", {"position": 2, "reason": "r"})
    assert (moved.status_code, moved.json()["position"]) == (200, 2)


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("input", {"data": {"answer": 1}}),
        ("move", {"position": 0}),
        ("retry", {}),
        ("skip", {}),
        ("kill", {}),
        ("resume", {}),
    ],
)
def test_flow_action_version_must_be_a_strict_integer(c, routine, user, action, body):
    flow = api.start_flow(routine("t_wait"), user)
    flow.refresh_from_db()
    version = flow.version
    # The flow's own version as a string or a float would match it if taken loosely.
    for value in [*LOOSE_INTEGERS, str(flow.version), float(flow.version), True]:
        response = post(c, f"/api/flows/{flow.pk}/{action}", {**body, "version": value})
        assert_refused(response, "version")
    flow.refresh_from_db()
    assert (flow.state, flow.version) == ("waiting", version)  # nothing happened


def test_routine_update_version_must_be_a_strict_integer(c, user):
    routine = api.create_routine("R", ["t_echo"], owner=user)
    body = {"name": "R2", "steps": [{"script": "t_wait"}]}
    for value in [*LOOSE_INTEGERS, "1", 1.0]:
        assert_refused(put(c, f"/api/routines/{routine.pk}", {**body, "version": value}), "version")
    routine.refresh_from_db()
    assert (routine.version, routine.name) == (1, "R")
    assert put(c, f"/api/routines/{routine.pk}", {**body, "version": 1}).status_code == 200
