"""Bulk actions (engine.flows.bulk) with Huey in immediate mode: a thousand flows in one
action with partial refusals, its progress and its audit; the preview; bad input refused
with nothing changed; the rights and states checked as each flow is acted on; and a bulk
action whose consumer died taken up where it stopped."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import AnonymousUser, Permission
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from engine import api, dispatch
from engine import events as engine_events
from engine.flows import bulk as bulk_module
from engine.models import AuditEntry, BulkAction, Flow, FlowEvent

# The tests whose outcome the database decides (races, constraints, writing nothing on
# bad input) also run in the scale-out pass; the others are the same logic on any database.
pytestmark = pytest.mark.django_db(transaction=True)


def make_flows(routine, owner, state: str, count: int) -> list[int]:
    """`count` flows of `routine` for `owner`, in `state`, written at once (no events)."""
    steps = routine.snapshot()
    ended = timezone.now() if state in api.FINISHED else None
    rows = [
        Flow(
            routine=routine,
            routine_version=routine.version,
            steps=steps,
            owner=owner,
            state=state,
            error="boom" if state in ("failed", "killed") else "",
            finished=ended,
        )
        for _ in range(count)
    ]
    return [flow.pk for flow in Flow.objects.bulk_create(rows)]


@pytest.fixture
def progress():
    """The bulk progress events published (after each commit)."""
    seen: list[dict] = []

    def sink(events: list[dict]) -> None:
        seen.extend(event for event in events if event.get("type") == "bulk")

    engine_events.connect(sink)
    yield seen
    engine_events.disconnect(sink)


@pytest.fixture
def held(monkeypatch):
    """The queue keeps bulk actions instead of running them (as a busy consumer's would):
    the test runs them. Other work runs at once, as ever."""
    queued: list[int] = []
    monkeypatch.setattr(dispatch, "run_bulk", queued.append)
    return queued


@pytest.mark.bothmodes
def test_a_thousand_flows_with_partial_refusals_progress_and_audit(
    user, other_user, routine, progress
):
    r = routine("t_echo")
    failed = make_flows(r, user, "failed", 400)
    killed = make_flows(r, user, "killed", 300)
    complete = make_flows(r, user, "complete", 250)
    bobs = make_flows(r, other_user, "failed", 50)
    ids = failed + complete + bobs + killed  # (an order of the user's choosing)

    preview = api.preview_bulk(user, "skip", {"ids": ids})
    assert (preview.total, preview.applies, preview.refused_count) == (1000, 700, 300)
    assert preview.affected == {"failed": 400, "killed": 300}
    assert {row["reason"]: row["count"] for row in api.refusals_out(preview.refused)} == {
        "complete flows cannot be skipped": 250,
        "you may not act on these flows": 50,
    }

    began = time.perf_counter()
    bulk = api.start_bulk(user, "skip", {"ids": ids}, "cleaning up after the outage")
    took = time.perf_counter() - began
    print(f"\nbulk skip over 1,000 flows (700 applied, 300 refused): {took:.2f} s")

    assert (bulk.state, bulk.total, bulk.processed, bulk.succeeded) == ("done", 1000, 1000, 700)
    assert bulk.flow_ids == ids and bulk.selection == {"ids": ids}
    assert bulk.finished is not None and bulk.lease_until is None
    refused = bulk.refused
    assert refused["complete flows cannot be skipped"]["count"] == 250
    assert refused["complete flows cannot be skipped"]["flows"] == complete[:20]
    assert refused["you may not act on these flows"] == {"count": 50, "flows": bobs[:20]}

    # Each flow acted on has the one event, naming the user, the reason and the bulk action.
    events = FlowEvent.objects.filter(kind="manual.skip")
    assert sorted(events.values_list("flow_id", flat=True)) == sorted(failed + killed)
    assert set(events.values_list("actor_id", "message")) == {
        (user.pk, "cleaning up after the outage")
    }
    assert {event.data["bulk"] for event in events} == {bulk.pk}
    assert Counter(Flow.objects.filter(pk__in=failed + killed).values_list("state", flat=True)) == {
        "complete": 700
    }
    assert set(Flow.objects.filter(pk__in=complete).values_list("version", flat=True)) == {0}
    assert set(Flow.objects.filter(pk__in=bobs).values_list("state", flat=True)) == {"failed"}

    # Progress after every chunk, to the end.
    assert [event["processed"] for event in progress] == [*range(50, 1001, 50), 1000]
    assert [event["state"] for event in progress][-2:] == ["running", "done"]
    assert progress[-1] == {
        "type": "bulk",
        "bulk": bulk.pk,
        "users": [user.pk],
        "action": "skip",
        "state": "done",
        "total": 1000,
        "processed": 1000,
        "succeeded": 700,
        "refused": 300,
    }

    started, finished = AuditEntry.objects.order_by("id")
    assert (started.kind, started.object_type, started.object_id) == (
        "bulk.started",
        "bulk_action",
        bulk.pk,
    )
    assert (started.actor, started.message) == (user, "cleaning up after the outage")
    assert started.data["total"] == 1000 and started.data["action"] == "skip"
    assert (finished.kind, finished.actor, finished.object_id) == ("bulk.finished", user, bulk.pk)
    assert finished.data == {
        "action": "skip",
        "total": 1000,
        "processed": 1000,
        "succeeded": 700,
        "refused": 300,
        "reasons": {"complete flows cannot be skipped": 250, "you may not act on these flows": 50},
    }


def test_retry_and_resume_carry_the_reason_and_the_bulk_id(user, routine):
    flaky = routine("t_flaky", "t_echo")
    flows = [api.start_flow(flaky, user) for _ in range(3)]
    assert {flow.state for flow in flows} == {"failed"}
    bulk = api.start_bulk(user, "retry", {"ids": [f.pk for f in flows]}, "the service is back")
    assert (bulk.state, bulk.succeeded) == ("done", 3)
    for flow in flows:
        flow.refresh_from_db()
        assert flow.state == "complete"  # performed again (at once, here)
        event = FlowEvent.objects.get(flow=flow, kind="manual.retry")
        assert (event.actor, event.message) == (user, "the service is back")
        assert event.data["bulk"] == bulk.pk

    waiting = [api.start_flow(routine("t_wait"), user) for _ in range(2)]
    bulk = api.start_bulk(user, "resume", {"ids": [f.pk for f in waiting]}, "nudge")
    assert (bulk.state, bulk.succeeded) == ("done", 2)
    for flow in waiting:
        event = FlowEvent.objects.get(flow=flow, kind="manual.resume")
        assert (event.actor, event.message, event.data["bulk"]) == (user, "nudge", bulk.pk)


def test_preview_by_filter_is_the_lists_filter(user, other_user, make_user, routine):
    mine = routine("t_echo", name="Invoices")
    other = routine("t_echo", name="Orders")
    make_flows(mine, user, "failed", 3)
    make_flows(mine, user, "complete", 2)
    make_flows(other, user, "failed", 4)
    bobs = make_flows(mine, other_user, "failed", 5)

    preview = api.preview_bulk(user, "retry", {"filter": {"routine": mine.pk}})
    assert (preview.total, preview.affected) == (5, {"failed": 3})
    assert api.refusals_out(preview.refused)[0]["reason"] == "complete flows cannot be retried"
    assert api.preview_bulk(user, "kill", {"filter": {"search": "invoices"}}).total == 5
    assert api.preview_bulk(user, "kill", {"filter": {"state": "failed"}}).affected == {"failed": 7}
    # exactly what the dashboard and the REST listing show for the same filter
    same = api.filter_flows(user, {"state": "failed", "routine": mine.pk})
    preview = api.preview_bulk(user, "kill", {"filter": {"state": "failed", "routine": mine.pk}})
    assert sorted(same.values_list("pk", flat=True)) == preview.flow_ids

    boss = make_user("boss", is_staff=True)
    everyone = api.preview_bulk(boss, "kill", {"filter": {"state": "failed"}})
    assert everyone.affected == {"failed": 12}
    by_name = api.preview_bulk(boss, "kill", {"filter": {"owner": "bob", "state": "failed"}})
    assert by_name.flow_ids == bobs
    assert api.preview_bulk(boss, "kill", {"filter": {"owner": other_user.pk}}).flow_ids == bobs
    # a missing id is an operator's "no such flow", anyone else's "you may not act on ..."
    assert list(api.preview_bulk(boss, "kill", {"ids": [bobs[0], 999_999]}).refused) == [
        "no such flow"
    ]
    assert api.preview_bulk(user, "kill", {"ids": [bobs[0], 999_999]}).refused == {
        "you may not act on these flows": {"count": 2, "flows": [bobs[0], 999_999]}
    }


@pytest.mark.bothmodes
@pytest.mark.django_db  # writes nothing: a rolled-back test is enough
@pytest.mark.parametrize(
    ("action", "selection", "reason", "message"),
    [
        ("explode", {"ids": [1]}, "why", "unknown bulk action 'explode'"),
        (None, {"ids": [1]}, "why", "unknown bulk action"),
        ("kill", {"ids": ["1"]}, "why", "ids must be a list of flow ids"),
        ("kill", {"ids": [True]}, "why", "ids must be a list of flow ids"),
        ("kill", {"ids": [0]}, "why", "ids must be a list of flow ids"),
        ("kill", {"ids": [-3]}, "why", "ids must be a list of flow ids"),
        ("kill", {"ids": [2**63]}, "why", "ids must be a list of flow ids"),
        ("kill", {"ids": 7}, "why", "ids must be a list of flow ids"),
        ("kill", {"ids": []}, "why", "no flows selected"),
        ("kill", {"ids": list(range(1, 10_002))}, "why", "at most 10,000"),
        ("kill", {}, "why", "nothing was selected"),
        ("kill", [1, 2], "why", "select flows by"),
        ("kill", {"ids": [1], "filter": {"state": "failed"}}, "why", "not both"),
        ("kill", {"ids": [1], "all": True}, "why", "unknown selection key"),
        ("kill", {"filter": {}}, "why", "a filter must narrow"),
        ("kill", {"filter": {"state": "sleeping"}}, "why", "filter.state must be one of"),
        ("kill", {"filter": {"colour": "red"}}, "why", "unknown filter key"),
        ("kill", {"filter": {"routine": "4"}}, "why", "filter.routine must be"),
        ("kill", {"filter": {"search": "a\x00b"}}, "why", "filter.search must be text"),
        ("kill", {"filter": {"search": "nothing like it"}}, "why", "matches no flow"),
        ("kill", {"filter": {"state": "running"}}, "why", "matches no flow"),
        ("kill", "FLOWS", "why", "select flows by"),
        ("kill", {"filter": {"state": "failed"}}, "", "needs a reason"),
        ("kill", {"filter": {"state": "failed"}}, "   ", "needs a reason"),
        ("kill", {"filter": {"state": "failed"}}, "a\x00b", "NUL"),
        ("kill", {"filter": {"state": "failed"}}, "x" * 501, "at most 500"),
        ("kill", {"filter": {"state": "killed"}}, "why", "none of the 2 selected flows"),
        ("retry", {"filter": {"state": "complete"}}, "why", "cannot be retried"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    user, routine, action, selection, reason, message
):
    r = routine("t_echo")
    ids = make_flows(r, user, "failed", 2) + make_flows(r, user, "killed", 2)
    make_flows(r, user, "complete", 1)
    before = list(Flow.objects.order_by("pk").values_list("pk", "state", "version"))
    with pytest.raises(ValueError, match=message):
        api.start_bulk(user, action, selection, reason)
    if reason == "why" and "none of" not in message and "cannot be" not in message:
        with pytest.raises(ValueError, match=message):
            api.preview_bulk(user, action, selection)
    assert list(Flow.objects.order_by("pk").values_list("pk", "state", "version")) == before
    assert not BulkAction.objects.exists() and not AuditEntry.objects.exists()
    assert not FlowEvent.objects.exists() and ids


def test_a_selection_over_the_cap_by_filter_is_refused(user, routine, monkeypatch):
    monkeypatch.setattr(bulk_module, "MAX_FLOWS", 10)
    make_flows(routine("t_echo"), user, "failed", 11)
    with pytest.raises(ValueError, match="matches more than 10 flows"):
        api.preview_bulk(user, "kill", {"filter": {"state": "failed"}})


def test_anonymous_may_not_preview():
    with pytest.raises(PermissionDenied):
        api.preview_bulk(AnonymousUser(), "kill", {"ids": [1]})


@pytest.mark.bothmodes
def test_rights_and_states_are_checked_as_each_flow_is_acted_on(
    user, other_user, make_user, routine, held
):
    """What the preview saw is not what the action does: an operator who is no longer one
    when it runs acts on their own flows only, and a flow that ended meanwhile is refused."""
    r = routine("t_echo")
    operator = make_user("ops")
    operator.user_permissions.add(Permission.objects.get(codename="operate_flow"))
    theirs = make_flows(r, other_user, "failed", 3)
    own = make_flows(r, operator, "failed", 2)
    operator = type(operator).objects.get(pk=operator.pk)  # (its permissions read afresh)
    bulk = api.start_bulk(operator, "kill", {"ids": theirs + own}, "stop them")
    assert held == [bulk.pk] and bulk.state == "queued"
    operator.user_permissions.clear()
    api.kill_flow(own[1], operator, "by hand first")

    assert bulk_module.run_bulk(bulk.pk) == "done"
    bulk.refresh_from_db()
    assert (bulk.processed, bulk.succeeded) == (5, 1)
    assert bulk.refused == {
        "you may not act on these flows": {"count": 3, "flows": theirs},
        "killed flows cannot be killed": {"count": 1, "flows": [own[1]]},
    }
    assert set(Flow.objects.filter(pk__in=theirs).values_list("state", flat=True)) == {"failed"}
    assert bulk_module.run_bulk(bulk.pk) == "not claimed"  # (it ended: a duplicate task)


@pytest.mark.bothmodes
def test_a_bulk_action_whose_consumer_died_goes_on_where_it_stopped(user, routine, held, progress):
    ids = make_flows(routine("t_echo"), user, "failed", 120)
    bulk = api.start_bulk(user, "kill", {"ids": ids}, "tidy")
    assert held == [bulk.pk]
    # A consumer takes it, commits one chunk, and is killed: it stays running, leased.
    token = bulk_module._claim(bulk.pk)
    assert token is not None
    running = BulkAction.objects.get(pk=bulk.pk)
    bulk_module._chunk(running, token, bulk_module._call("kill"))
    running.refresh_from_db()
    assert (running.state, running.processed, running.succeeded) == ("running", 50, 50)
    assert bulk_module.take_up_stale() == 0  # its lease holds
    assert bulk_module.run_bulk(bulk.pk) == "not claimed"  # nor may another consumer run it

    held.clear()
    with time_machine.travel(running.lease_until + timedelta(seconds=1), tick=False):
        assert bulk_module.take_up_stale() == 1
        assert held == [bulk.pk]
        running.refresh_from_db()
        assert running.state == "queued" and running.processed == 50
        assert bulk_module.take_up_stale() == 0  # queued once, however many consumers look
        assert bulk_module.run_bulk(bulk.pk) == "done"

    running.refresh_from_db()
    assert (running.state, running.processed, running.succeeded, running.refused) == (
        "done",
        120,
        120,
        {},
    )
    # every flow was killed once: by the first consumer or by the second
    counted = Counter(
        FlowEvent.objects.filter(kind="manual.kill").values_list("flow_id", flat=True)
    )
    assert counted == dict.fromkeys(ids, 1)
    assert [event["processed"] for event in progress] == [50, 100, 120, 120]
    assert AuditEntry.objects.filter(kind="bulk.finished", object_id=bulk.pk).count() == 1


def test_the_housekeeping_takes_up_a_bulk_action_whose_lease_ran_out(user, routine, held):
    ids = make_flows(routine("t_echo"), user, "failed", 7)
    bulk = api.start_bulk(user, "kill", {"ids": ids}, "tidy")
    BulkAction.objects.filter(pk=bulk.pk).update(
        state="running", lease_until=timezone.now() - timedelta(seconds=1)
    )
    held.clear()
    assert api.run_housekeeping()["bulk"] == 1
    assert held == [bulk.pk]


@pytest.mark.bothmodes
def test_a_consumer_whose_lease_was_taken_over_undoes_its_chunk(user, routine, held):
    ids = make_flows(routine("t_echo"), user, "failed", 60)
    bulk = api.start_bulk(user, "kill", {"ids": ids}, "tidy")
    slow = bulk_module._claim(bulk.pk)
    assert slow is not None
    # The slow consumer's lease runs out; another takes the bulk action over.
    BulkAction.objects.filter(pk=bulk.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert bulk_module._claim(bulk.pk) is not None
    late = BulkAction.objects.get(pk=bulk.pk)
    with pytest.raises(bulk_module.LeaseLost):
        bulk_module._chunk(late, slow, bulk_module._call("kill"))
    # Nothing of the late chunk stayed: no flow killed, no progress.
    assert set(Flow.objects.filter(pk__in=ids).values_list("state", flat=True)) == {"failed"}
    assert not FlowEvent.objects.exists()
    assert BulkAction.objects.get(pk=bulk.pk).processed == 0


def test_users_see_their_own_bulk_actions_only(user, other_user, routine):
    ids = make_flows(routine("t_echo"), user, "failed", 2)
    bulk = api.start_bulk(user, "kill", {"ids": ids}, "tidy")
    assert list(api.visible_bulk_actions(user)) == [bulk]
    assert not api.visible_bulk_actions(other_user).exists()
