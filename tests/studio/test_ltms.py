"""The studio's demo machines (studio/ltms.py), run by the engine with Huey in immediate
mode."""

from __future__ import annotations

import pytest

from engine import api
from tests.engine.ltm.support import django_runtime  # noqa: F401  (autouse fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


def test_the_demo_order_process_forks_joins_ships_and_waits_for_confirmation(user):
    run_id = api.start_ltm("order_process", user, {"order": "A-1"})

    root = api.load_ltm(run_id)
    assert sorted(root.state["checks"]) == ["fraud", "payment", "stock"]
    assert root.state["tracking"] == "TRK-A-1"
    assert root.instances["order_process.ship"].status == "completed"
    assert root.instances["order_process.await_confirmation"].status == "active"

    api.fire_transition(run_id, "confirm", user, {"by": "courier"})

    root = api.load_ltm(run_id)
    assert root.state["delivered"] is True and root.state["confirmation"] == {"by": "courier"}


def test_the_demo_file_import_runs_one_state_per_file(user):
    run_id = api.start_ltm("file_import", user, {"files": [7, 8]})

    root = api.load_ltm(run_id)
    assert root.state["summary"] == "2 files imported"
    assert root.instances["file_import.import_7"].params == {"file_id": 7}
