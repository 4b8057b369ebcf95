"""Running a flow (engine.flows.runner) with Huey in immediate mode: each outcome of a step,
results, re-checks of a waiting step, offloaded steps; and what a script returns, raises or
waits with is recorded on every database."""

from __future__ import annotations

import pytest

from engine import api
from engine.models import Flow, FlowEvent
from tests.catalog import NastyOutput

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


def kinds(flow):
    return list(FlowEvent.objects.filter(flow=flow).values_list("kind", flat=True))


def test_results_are_stored_and_flow_completes(routine, user):
    flow = api.start_flow(routine("t_echo", "t_result_fields", "t_result_none", "t_tuple_ok"), user)
    assert flow.state == "complete"
    assert flow.results == [
        {"position": 0, "params": {}, "seen": 0},
        {"a": 1, "b": "two"},
        None,
        30,
    ]
    assert flow.position == 3
    assert flow.finished is not None
    assert kinds(flow) == [
        "flow.created",
        "flow.running",
        "step.completed",
        "step.completed",
        "step.completed",
        "step.completed",
        "flow.complete",
    ]
    seqs = list(FlowEvent.objects.filter(flow=flow).values_list("seq", flat=True))
    assert seqs == list(range(1, 8))


def test_task_sees_earlier_results_params_and_data(user):
    routine = api.create_routine(
        "params",
        ["t_echo", {"script": "t_echo", "params": {"x": 1}, "label": "second"}],
        owner=user,
    )
    flow = api.start_flow(routine, user, data={"k": "v"})
    assert flow.results[1] == {"position": 1, "params": {"x": 1}, "seen": 1}
    assert flow.steps[1]["name"] == "second"
    assert flow.data == {"k": "v"}


def test_check_resumes_a_waiting_flow(routine, user, tmp_path):
    flag = tmp_path / "flag"
    flow = api.start_flow(routine("t_checked", "t_echo"), user, data={"flag_file": str(flag)})
    assert flow.state == "waiting"
    assert api.recheck_waiting() == 0
    flow.refresh_from_db()
    assert flow.state == "waiting"
    flag.write_text("go")
    assert api.recheck_waiting() == 1
    flow.refresh_from_db()
    assert flow.state == "complete"
    assert flow.results[0] == "picked up"


def test_kill_signal_ends_flow_and_later_steps_never_run(routine, user):
    flow = api.start_flow(routine("t_echo", "t_kill", "t_echo"), user)
    assert flow.state == "killed"
    assert flow.error == "Smoke signals preferred."
    assert flow.position == 1
    assert flow.results == [{"position": 0, "params": {}, "seen": 0}, None, None]


def test_done_completes_early(routine, user):
    flow = api.start_flow(routine("t_done", "t_echo"), user)
    assert flow.state == "complete"
    assert flow.results == ["early", None]


def test_success_false_fails_flow_with_value_as_error(routine, user):
    flow = api.start_flow(routine("t_fail", "t_echo"), user)
    assert flow.state == "failed"
    assert flow.error == "it broke"
    assert flow.results == [None, None]


def test_uncaught_exception_fails_flow_with_traceback(routine, user):
    flow = api.start_flow(routine("t_raise"), user)
    assert flow.state == "failed"
    assert flow.error == "RuntimeError: boom"
    assert "Traceback" in flow.traceback and "boom" in flow.traceback


def test_non_blocking_step_is_offloaded_and_resumes(routine, user):
    flow = api.start_flow(routine("t_echo", "t_offloaded", "t_echo"), user)
    assert flow.state == "complete"
    assert flow.results[1] == {"offloaded": 1}
    completed = FlowEvent.objects.get(flow=flow, kind="step.completed", data__step=0)
    assert completed.data["offloaded"]["step"] == 1 and completed.data["offloaded"]["job"]
    assert flow.job_id == ""


def test_first_step_offloaded_by_the_claim(routine, user):
    flow = api.start_flow(routine("t_offloaded", "t_offloaded"), user)
    assert flow.state == "complete"
    assert flow.results == [{"offloaded": 0}, {"offloaded": 1}]
    assert kinds(flow)[:3] == ["flow.created", "flow.running", "step.offloaded"]


def test_a_worker_claims_a_queued_flow_and_runs_it_with_one_write_a_step(queued):
    """On PostgreSQL the claim reads the flow (one statement where a read and a write were
    two); elsewhere the flow is read, then claimed. Either way one write a step."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from engine.flows import runner

    flow = queued("t_echo", "t_echo", "t_echo")
    with CaptureQueriesContext(connection) as captured:
        runner.run_flow(flow.pk)
    flow.refresh_from_db()
    assert flow.state == "complete" and flow.results == [
        {"position": n, "params": {}, "seen": n} for n in range(3)
    ]
    assert kinds(flow) == ["flow.created", "flow.running"] + ["step.completed"] * 3 + [
        "flow.complete"
    ]
    statements = [q["sql"] for q in captured]
    if connection.vendor == "postgresql":
        assert len(statements) == 4, statements  # the claim, a write a step
        assert "set_config('synchronous_commit', 'off', true)" in statements[0]
    reads = [s for s in statements if s.startswith("SELECT")]
    assert len(reads) == (0 if connection.vendor == "postgresql" else 1), statements


def test_a_queued_first_step_with_a_time_limit_has_its_deadline_written_before_it_runs(queued):
    from engine.flows import runner

    flow = queued("t_sees_deadline", "t_sees_deadline")
    runner.run_flow(flow.pk)
    flow.refresh_from_db()
    assert flow.state == "complete"
    for result in flow.results:
        assert result["deadline"] is not None, flow.results  # (each attempt's own deadline)


def test_a_queued_first_step_offloaded_is_queued_once_claimed(queued):
    from engine.flows import runner

    flow = queued("t_offloaded", "t_echo")
    runner.run_flow(flow.pk)  # (immediate mode: the offloaded job runs when queued)
    flow.refresh_from_db()
    assert flow.state == "complete"
    assert flow.results[0] == {"offloaded": 0}
    assert kinds(flow)[:3] == ["flow.created", "flow.running", "step.offloaded"]
    assert Flow.objects.filter(pk=flow.pk, job_id="").exists()


def test_steps_run_on_leave_the_flows_indexed_columns_alone_while_recent_enough(user):
    """A blocking step that leaves its flow RUNNING keeps the row's `updated` and its lease
    while they were written less than a second ago: five of the flow's indexes hold
    `updated`, one the lease, and each step rewrote them all."""
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from engine import config
    from tests import catalog

    lease = timedelta(seconds=config.seconds("LEASE_SECONDS"))
    assert lease == timedelta(seconds=60)
    routine = api.create_routine(
        "row seen",
        [
            {"script": "t_row_seen", "params": {"then": 0.5}},
            {"script": "t_row_seen", "params": {"then": 0.4}},
            {"script": "t_row_seen", "params": {"then": 0.2}},
            {"script": "t_row_seen", "params": {"then": 0.3}},
            {"script": "t_row_seen", "params": {"then": 5}},
            {"script": "t_row_seen"},
        ],
        owner=user,
    )
    began = timezone.now().replace(microsecond=0) + timedelta(days=1)
    with time_machine.travel(began, tick=False) as clock:
        catalog.clock = clock
        try:
            flow = api.start_flow(routine, user)
        finally:
            catalog.clock = None
    assert flow.state == "complete"
    seen = [
        (
            timezone.datetime.fromisoformat(r["updated"]),
            timezone.datetime.fromisoformat(r["lease_until"]),
        )
        for r in flow.results
    ]
    # (the clock stands still but for the steps' shifts)
    claimed, later, last = (began + timedelta(seconds=t) for t in (0, 1.1, 6.4))
    assert seen == [
        (claimed, claimed + lease),  # as the claim wrote them
        (claimed, claimed + lease),  # 0.5 s on: both left alone
        (claimed, claimed + lease),  # 0.9 s on: still
        (later, later + lease),  # 1.1 s on: both written
        (later, later + lease),  # 0.3 s after that: left alone
        (last, last + lease),  # 5 s after that: both written
    ]
    stored = Flow.objects.get(pk=flow.pk)
    assert stored.updated == last  # the flow's end: its time
    assert stored.lease_until is None
    assert stored.updated == FlowEvent.objects.filter(flow=flow).latest("seq").created


# -- what a script returns, raises or waits with is recorded on every database, even text or
# values PostgreSQL refuses (NUL characters, lone surrogates, NaN, deep nesting): the flow goes
# on or fails with the script's own words, escaped, and never stalls on a database error.


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


def test_a_step_writes_its_own_result_row_whatever_the_flows_length(routine, user):
    """A step's write stores its result as a row of its own (FlowResult): the flow's row
    carries no results, so a step's write does not grow with the flow's length; moved back,
    a step's result replaces its row."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from engine.models import FlowResult

    with CaptureQueriesContext(connection) as captured:
        flow = api.start_flow(routine(*["t_echo"] * 30), user)
    assert flow.state == "complete"
    assert [result["position"] for result in flow.results] == list(range(30))
    writes = [q["sql"] for q in captured if "engine_flowresult" in q["sql"]]
    # (PostgreSQL: the result's insert rides in the step's one statement, `WITH f AS (UPDATE`)
    first = "WITH f AS (UPDATE" if connection.vendor == "postgresql" else "INSERT"
    assert len(writes) == 30 and all(sql.startswith(first) for sql in writes), writes[:2]
    updates = [q["sql"] for q in captured if q["sql"].startswith(("UPDATE", "WITH f AS (UPDATE"))]
    assert max(len(sql) for sql in updates) < 2000, "a step's write carried the results"
    assert FlowResult.objects.filter(flow=flow).count() == 30
    api.move_to(flow, 3, user, reason="again")
    flow.refresh_from_db()
    assert flow.state == "complete"
    assert [result["position"] for result in flow.results] == list(range(30))
    assert FlowResult.objects.filter(flow=flow).count() == 30  # replaced, not added
    assert Flow.objects.get(pk=flow.pk).stored_results == flow.stored_results
