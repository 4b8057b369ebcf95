"""Bulk actions on real consumer processes: a thousand flows retried in the background, each
retried flow then run by the consumers; and a consumer killed mid-way, whose bulk action
another takes up where it stopped once its lease runs out — every flow retried once."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from engine import api
from engine.models import AuditEntry, BulkAction, Flow, FlowEvent
from tests.conftest import stall_report, wait_until
from tests.engine.flows.test_bulk import make_flows

pytestmark = [pytest.mark.consumer, pytest.mark.bothmodes]


def settled(bulk_id: int, ids: list[int]) -> bool:
    bulk = BulkAction.objects.get(pk=bulk_id)
    return bulk.state == "done" and not Flow.objects.filter(pk__in=ids, state="pending").exists()


def test_a_consumer_runs_a_bulk_retry_over_a_thousand_flows(consumer, user, other_user):
    routine = api.create_routine("bulk", ["t_echo"], owner=user)
    failed = make_flows(routine, user, "failed", 900)
    complete = make_flows(routine, user, "complete", 60)
    bobs = make_flows(routine, other_user, "failed", 40)
    ids = failed + complete + bobs

    began = time.perf_counter()
    bulk = api.start_bulk(user, "retry", {"ids": ids}, "the payment service is back")
    assert wait_until(lambda: BulkAction.objects.get(pk=bulk.pk).state == "done", timeout=180), (
        consumer.logs()[-3000:]
    )
    took = time.perf_counter() - began
    bulk.refresh_from_db()
    print(
        f"\nbulk retry of 1,000 flows on a consumer: {took:.2f} s to done "
        f"({bulk.succeeded} retried, {bulk.total - bulk.succeeded} refused)"
    )
    assert (bulk.processed, bulk.succeeded) == (1000, 900)
    assert {reason: entry["count"] for reason, entry in bulk.refused.items()} == {
        "complete flows cannot be retried": 60,
        "you may not act on these flows": 40,
    }
    # each retried flow is run again by the consumers, to the end
    assert wait_until(
        lambda: Flow.objects.filter(pk__in=failed, state="complete").count() == 900, timeout=180
    ), stall_report(failed, consumer)
    retried = FlowEvent.objects.filter(kind="manual.retry")
    assert sorted(retried.values_list("flow_id", flat=True)) == sorted(failed)
    assert {e.data["bulk"] for e in retried} == {bulk.pk}
    assert set(Flow.objects.filter(pk__in=bobs).values_list("state", flat=True)) == {"failed"}
    assert AuditEntry.objects.filter(kind="bulk.finished", object_id=bulk.pk).count() == 1


@pytest.mark.crash
def test_a_bulk_action_goes_on_after_its_consumer_is_killed(consumer, user):
    routine = api.create_routine("bulk", ["t_echo"], owner=user)
    ids = make_flows(routine, user, "failed", 1000)
    bulk = api.start_bulk(user, "retry", {"ids": ids}, "again")
    assert wait_until(lambda: BulkAction.objects.get(pk=bulk.pk).processed >= 50, every=0.02)
    consumer.kill9()
    stopped = BulkAction.objects.get(pk=bulk.pk)
    consumer.start()
    assert wait_until(lambda: settled(bulk.pk, ids), timeout=180), stall_report(ids, consumer)
    bulk.refresh_from_db()
    print(
        f"\nconsumer killed with the bulk action {stopped.state} at {stopped.processed} of "
        f"{stopped.total}; taken up and done: {bulk.succeeded} retried, {bulk.refused or 'none'} "
        "refused"
    )
    assert (bulk.processed, bulk.succeeded, bulk.refused) == (1000, 1000, {})
    counted = Counter(
        FlowEvent.objects.filter(kind="manual.retry").values_list("flow_id", flat=True)
    )
    assert counted == dict.fromkeys(ids, 1)  # each flow retried once, by one consumer or the next
    assert wait_until(
        lambda: Flow.objects.filter(pk__in=ids, state="complete").count() == 1000, timeout=180
    ), stall_report(ids, consumer)
