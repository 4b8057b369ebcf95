"""Fuzzing the running API from its own OpenAPI schema (schemathesis): valid and invalid
requests for every operation, against a live server with objects in every state. No
request a client can send may cause a server error (5xx)."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from django.middleware.csrf import CSRF_ALLOWED_CHARS, CSRF_SECRET_LENGTH
from django.test import Client
from django.utils.crypto import get_random_string
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from engine import api
from engine.core.ltm.registry import ltm_registry
from studio.models import ApiToken
from tests.conftest import forget_rate_counts

EXAMPLES_PER_OPERATION = 50
MIN_REQUESTS = 2000
# LTMs of the test catalog that finish at once: others sleep or wait for files on purpose,
# and their payload (which the fuzzer writes) says for how long.
SAFE_LTMS = ["my_ltm", "broadcast", "failing_ltm", "fork_ltm", "deep"]
REQUESTS: Counter[str] = Counter()  # per operation, over the whole module
STATUSES: Counter[int] = Counter()
SERVER_ERRORS: list[str] = []


@pytest.fixture
def world(live_server, transactional_db, user, other_user, routine, settings):
    """A user with a token and a session, and flows in each state for the fuzzer to hit."""
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "API_RATE": "off"}
    forget_rate_counts()
    flows = [
        api.start_flow(routine("t_wait", "t_echo"), user),
        api.start_flow(routine("t_echo", "t_fail"), user),
        api.start_flow(routine("t_echo"), user),
        api.start_flow(routine("t_wait"), other_user),
    ]
    api.kill_flow(api.start_flow(routine("t_wait"), user), user, "for the fuzzer")
    runs = [api.start_ltm(name, user) for name in SAFE_LTMS[:3]]
    schedules = [
        api.create_schedule(flows[0].routine_id, user, "0 9 * * 1-5", timezone="Europe/Berlin"),
        api.pause_schedule(api.create_schedule(flows[2].routine_id, user, "@hourly"), user),
    ]
    browser = Client()
    browser.force_login(user)
    csrf = get_random_string(CSRF_SECRET_LENGTH, allowed_chars=CSRF_ALLOWED_CHARS)
    _, token = ApiToken.issue(user, "fuzz")
    return {
        "base_url": live_server.url,
        "headers": {"Authorization": f"Bearer {token}", "X-CSRFToken": csrf},
        "cookies": {"sessionid": browser.cookies["sessionid"].value, "csrftoken": csrf},
        "ids": {
            "flow_id": [flow.pk for flow in flows],
            "routine_id": [flow.routine_id for flow in flows],
            "token_id": list(ApiToken.objects.values_list("pk", flat=True)),
            "run_id": [str(run_id) for run_id in runs],
            "schedule_id": [schedule.pk for schedule in schedules],
        },
    }


# The schema as the app serves it. It is read at import time (pytest parametrizes from it
# while collecting, before any server runs); the requests then go to the live server.
schema = schemathesis.openapi.from_dict(Client().get("/api/openapi.json").json())


def aim(case, ids: dict[str, list]) -> None:
    """Point most generated ids at real objects, so that the fuzzer reaches past the 404,
    and let it start only LTMs that finish at once."""
    for name, value in list((case.path_parameters or {}).items()):
        if name in ids and isinstance(value, int | str):
            pick = hash(value)
            if pick % 4 != 0:
                case.path_parameters[name] = ids[name][pick % len(ids[name])]
    body = case.body
    if case.path == "/api/ltm-runs" and isinstance(body, dict) and isinstance(body.get("ltm"), str):
        if body["ltm"] in ltm_registry() and body["ltm"] not in SAFE_LTMS:
            body["ltm"] = SAFE_LTMS[0]
        elif hash(body["ltm"]) % 2:
            body["ltm"] = SAFE_LTMS[hash(body["ltm"]) % len(SAFE_LTMS)]


@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case, world):
    aim(case, world["ids"])
    response = case.call(
        base_url=world["base_url"], headers=world["headers"], cookies=world["cookies"]
    )
    label = case.operation.label
    REQUESTS[label] += 1
    STATUSES[response.status_code] += 1
    if response.status_code >= 500:
        SERVER_ERRORS.append(f"{response.status_code} {case.as_curl_command()}")
    assert response.status_code < 500, case.as_curl_command()


def test_fuzzing_summary():
    """Runs after the fuzzing above (file order): how many requests ran, and 0 errors."""
    total = sum(REQUESTS.values())
    if total == 0:
        pytest.skip("the fuzzing test was not selected in this run")
    print(f"\nfuzzed {total} requests over {len(REQUESTS)} operations; 5xx: {len(SERVER_ERRORS)}")
    print(f"responses by status: {dict(sorted(STATUSES.items()))}")
    for label, count in sorted(REQUESTS.items()):
        print(f"  {count:5d}  {label}")
    assert SERVER_ERRORS == []
    assert total >= MIN_REQUESTS
