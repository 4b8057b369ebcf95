"""Two writers never advance one flow twice."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from engine import api
from engine.api import FlowStateError
from engine.models import FlowEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


def test_concurrent_push_input_only_one_advances(routine, user):
    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    assert flow.state == "waiting"
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def push(n: int) -> None:
        try:
            barrier.wait()
            api.push_input(flow.pk, {"from": n}, user)
            outcome = "ok"
        except FlowStateError:
            outcome = "refused"
        except Exception as exc:  # anything else is a defect: record it to fail loudly
            outcome = f"error {type(exc).__name__}: {exc}"
        finally:
            connection.close()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=push, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(set(outcomes)) == ["ok", "refused"], outcomes
    assert outcomes.count("ok") == 1
    assert outcomes.count("refused") == 19
    flow.refresh_from_db()
    assert flow.state == "complete"
    assert FlowEvent.objects.filter(flow=flow, kind="input.pushed").count() == 1
    assert FlowEvent.objects.filter(flow=flow, kind="step.completed").count() == 2
