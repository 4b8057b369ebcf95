"""What a script returns, raises or waits with is recorded on every database, even text or
values PostgreSQL refuses (NUL characters, lone surrogates, NaN, deep nesting): the flow goes
on or fails with the script's own words, escaped, and never stalls on a database error."""

from __future__ import annotations

import pytest

from engine import api
from engine.models import Flow, FlowEvent
from tests.catalog import NastyOutput

pytestmark = pytest.mark.bothmodes


def run(routine, user, how: str) -> Flow:
    flow = api.start_flow(routine({"script": "t_nasty", "params": {"how": how}}), user)
    return Flow.objects.get(pk=flow.pk)


@pytest.mark.django_db(transaction=True)
def test_a_result_with_nul_and_a_surrogate_is_kept_exactly(routine, user):
    flow = run(routine, user, "return")
    assert flow.state == "complete"
    assert flow.results == [{"text": NastyOutput.TEXT, "input": None}]  # pickled, not refused
    event = FlowEvent.objects.get(flow=flow, kind="step.completed")
    assert "\\x00" in event.data["result"]  # shown as its repr


@pytest.mark.django_db(transaction=True)
def test_nan_and_a_value_nested_too_deeply_are_stored(routine, user):
    nan = run(routine, user, "nan")
    assert nan.state == "complete" and nan.results[0]["x"] != nan.results[0]["x"]
    deep = run(routine, user, "deep")
    assert deep.state == "complete" and deep.results[0] is not None


@pytest.mark.django_db(transaction=True)
def test_an_error_with_nul_fails_the_flow_with_the_message_escaped(routine, user):
    flow = run(routine, user, "raise")
    assert flow.state == "failed"
    assert flow.error == "ValueError: a\\x00b\\ud800c"
    assert "\x00" not in flow.traceback and "ValueError" in flow.traceback
    assert FlowEvent.objects.get(flow=flow, kind="flow.failed").message == flow.error


@pytest.mark.django_db(transaction=True)
def test_a_long_wait_reason_with_nul_is_cut_and_escaped_and_the_flow_still_waits(routine, user):
    flow = run(routine, user, "wait")
    assert flow.state == "waiting"
    assert len(flow.wait_reason) == 500 and flow.wait_reason.startswith("a\\x00b\\ud800c")
    api.push_input(flow, {"ok": True}, user)
    flow.refresh_from_db()
    assert flow.state == "complete" and flow.results[0]["input"] == {"ok": True}


@pytest.mark.django_db(transaction=True)
def test_an_ltm_state_that_raises_with_nul_fails_its_run_with_the_message_escaped(user):
    run_id = api.start_ltm("nul_raiser", user)
    root = api.load_ltm(run_id)
    assert root.run.state == "failed"
    assert root.run.error.endswith("ValueError: a\\x00b")
