"""The time machine on a real consumer process: a rollback while a state is executing is
refused until the operator confirms that its outcome is discarded; then the execution that
was queued at that point runs again on the consumer, and the discarded one's late outcome is
never written. A copy made while the original runs goes on by itself."""

from __future__ import annotations

import pytest

from engine import api
from engine.core.errors import FlowStateError
from engine.ltm.registry import discover
from engine.models import LtmEvent, LtmExecution, LtmRun
from tests.conftest import wait_until

pytestmark = pytest.mark.consumer

OVER = ("complete", "failed", "killed")


@pytest.fixture(autouse=True)
def catalog_roots():
    discover()  # another test module may have unregistered catalog roots


def over(run_id) -> bool:
    return LtmRun.objects.get(pk=run_id).state in OVER


def test_rollback_past_a_running_state_needs_confirmation_and_discards_its_outcome(
    consumer, user, tmp_path
):
    marker, release = tmp_path / "marker", tmp_path / "release"
    run_id = api.start_ltm("gate_ltm", user, {"marker": str(marker), "release": str(release)})
    assert wait_until(marker.exists, timeout=60), consumer.logs()[-3000:]
    gate_queued = (
        LtmEvent.objects.filter(run_id=run_id, fqn="gate_ltm.gate", kind="status")
        .filter(data__to="queued")
        .get()
        .seq
    )
    running = LtmExecution.objects.get(run_id=run_id, fqn="gate_ltm.gate", status="claimed")
    version = LtmRun.objects.get(pk=run_id).version

    with pytest.raises(FlowStateError, match="gate_ltm.gate is executing now"):
        api.rollback_ltm(run_id, gate_queued, user, "run the gate again")
    assert LtmRun.objects.get(pk=run_id).version == version

    marker.unlink()
    api.rollback_ltm(run_id, gate_queued, user, "run the gate again", discard_running=True)

    running.refresh_from_db()
    assert running.status == "stale"
    # The execution queued at that point runs again on the consumer (it writes the marker).
    assert wait_until(marker.exists, timeout=60), consumer.logs()[-3000:]
    release.write_text("go")
    assert wait_until(lambda: over(run_id), timeout=60), consumer.logs()[-3000:]

    view = api.load_ltm(run_id)
    assert view.run.state == "complete", view.run.error
    assert view.instances["gate_ltm.gate"].status == "completed"
    assert view.instances["gate_ltm.opened"].status == "active"
    gates = LtmExecution.objects.filter(run_id=run_id, fqn="gate_ltm.gate").order_by("pk")
    assert [g.status for g in gates] == ["stale", "done"]
    # One transition into `opened`: the discarded execution's outcome was never written.
    assert LtmEvent.objects.filter(run_id=run_id, kind="transition").count() == 1
    rollback = LtmEvent.objects.get(run_id=run_id, kind="rollback")
    assert rollback.data["discarded"] == ["gate_ltm.gate"]
    assert rollback.data["requeued"] == ["gate_ltm.gate"]


def test_a_copy_of_a_fork_in_flight_finishes_on_the_consumer(consumer, user):
    run_id = api.start_ltm("slow_fan_out", user, {"size": 4, "sleep": 0.3})

    def appended() -> int:
        return len(LtmRun.objects.get(pk=run_id).global_state.get("results", []))

    assert wait_until(lambda: appended() >= 1, timeout=60), consumer.logs()[-3000:]
    copy_id = api.copy_ltm(run_id, user)

    assert wait_until(lambda: over(run_id) and over(copy_id), timeout=120), consumer.logs()[-3000:]
    for each in (run_id, copy_id):
        view = api.load_ltm(each)
        assert view.run.state == "complete", view.run.error
        assert sorted(view.state["results"]) == [0, 1, 2, 3]  # each branch appended once
        assert view.state["joined"] == [0, 1, 2, 3]
