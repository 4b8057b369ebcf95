"""The dashboard's bulk actions through the Django test client: the action bar and row
checkboxes, the preview (counts per state, refusals and why), the confirmation and the
progress — with htmx and as plain forms — clear 4xx answers that start nothing, CSRF,
escaping, and another user's bulk action a 404."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from engine import api
from engine.models import AuditEntry, BulkAction, Flow, FlowEvent
from tests.engine.flows.test_bulk import make_flows

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HTTP_HX_REQUEST": "true"}
PREVIEW = reverse("studio:bulk_preview")
START = reverse("studio:bulk_start")


@pytest.fixture
def alice(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def world(user, other_user):
    r = api.create_routine("Invoices", ["t_echo"], owner=user)
    return {
        "failed": make_flows(r, user, "failed", 3),
        "killed": make_flows(r, user, "killed", 2),
        "complete": make_flows(r, user, "complete", 1),
        "bobs": make_flows(r, other_user, "failed", 2),
        "routine": r,
    }


def untouched() -> bool:
    return (
        not BulkAction.objects.exists()
        and not AuditEntry.objects.exists()
        and not FlowEvent.objects.exists()
        and set(Flow.objects.values_list("version", flat=True)) == {0}
    )


def test_the_dashboard_offers_checkboxes_and_the_action_bar(alice, world):
    html = alice.get(reverse("studio:dashboard")).content.decode()
    for pk in world["failed"]:
        assert f'name="ids" value="{pk}" form="bulk-form"' in html
    assert 'id="bulk-form"' in html and 'id="bulk-select-page"' in html
    for action in ("retry", "resume", "skip", "kill"):
        assert f'<option value="{action}">' in html
    assert "matching this filter" not in html  # no filter, no "select all matching"
    filtered = alice.get(reverse("studio:dashboard") + "?state=failed").content.decode()
    assert "Select all 3 flows matching this filter" in filtered
    assert '<input type="hidden" name="state" value="failed">' in filtered


def test_no_flows_no_controls(client, make_user):
    client.force_login(make_user("carol"))
    html = client.get(reverse("studio:dashboard")).content.decode()
    assert 'id="bulk-form"' not in html and 'name="ids"' not in html


def test_the_dashboard_takes_no_more_queries(alice, world, django_assert_max_num_queries):
    # the action bar adds none: its count is the pager's, its filter the list's (on
    # PostgreSQL one more: its planner's estimate, asked before the count)
    with django_assert_max_num_queries(9 + (connection.vendor == "postgresql")):
        alice.get(reverse("studio:dashboard") + "?state=failed&q=invoices")


def test_preview_of_ticked_flows(alice, world):
    ids = world["failed"] + world["complete"] + world["bobs"]
    answer = alice.post(PREVIEW, {"action": "retry", "ids": ids, "reason": "back"}, **HTMX)
    assert answer.status_code == 200
    assert answer["HX-Retarget"] == "#bulk-panel"
    html = answer.content.decode()
    assert "Retry: 6 selected flows" in html
    assert "3 will be retried" in html and "3 refused" in html
    assert "<strong>1</strong> flow — complete flows cannot be retried" in html
    assert "<strong>2</strong> flows — you may not act on these flows" in html
    for pk in ids:
        assert f'<input type="hidden" name="ids" value="{pk}">' in html
    assert 'value="back"' in html and "Retry 3 flows" in html
    assert untouched()


def test_preview_and_confirm_every_flow_matching_the_filter(alice, world, user):
    form = {"action": "kill", "all": "1", "state": "failed", "reason": "stop"}
    html = alice.post(PREVIEW, form, **HTMX).content.decode()
    assert "Every flow matching state failed" in html and "3 will be killed" in html
    assert '<input type="hidden" name="all" value="1">' in html
    answer = alice.post(START, form, **HTMX)
    assert answer.status_code == 200, answer.content
    bulk = BulkAction.objects.get()
    html = answer.content.decode()
    assert f'id="bulk-{bulk.pk}"' in html and f'data-live-bulk="{bulk.pk}"' in html
    # (Huey runs it at once in the tests: it is done already, with its summary)
    assert "<strong>3 of 3</strong> processed" in html and "Done" in html
    assert bulk.selection == {"filter": {"state": "failed"}} and bulk.reason == "stop"
    assert set(Flow.objects.filter(pk__in=world["failed"]).values_list("state", flat=True)) == {
        "killed"
    }
    events = FlowEvent.objects.filter(kind="manual.kill")
    assert {(e.actor_id, e.message, e.data["bulk"]) for e in events} == {(user.pk, "stop", bulk.pk)}


def test_progress_while_it_runs_polls_until_it_ends(alice, world, monkeypatch):
    from engine import dispatch

    monkeypatch.setattr(dispatch, "run_bulk", lambda pk: None)  # queued, not yet run
    alice.post(START, {"action": "kill", "ids": world["failed"], "reason": "r"}, **HTMX)
    bulk = BulkAction.objects.get()
    polled = alice.get(reverse("studio:bulk_detail", args=[bulk.pk]), **HTMX)
    html = polled.content.decode()
    assert 'hx-trigger="every 1s"' in html and 'data-bulk-state="queued"' in html
    assert "<strong>0 of 3</strong> processed" in html
    from engine.flows.bulk import run_bulk

    run_bulk(bulk.pk)
    html = alice.get(reverse("studio:bulk_detail", args=[bulk.pk]), **HTMX).content.decode()
    assert "hx-trigger" not in html and "<strong>3 of 3</strong>" in html and "Done" in html


def test_without_javascript_preview_confirm_and_the_bulk_page(alice, world):
    form = {"action": "skip", "ids": world["failed"] + world["complete"], "reason": "later"}
    page = alice.post(PREVIEW, form)
    assert page.status_code == 200
    html = page.content.decode()
    assert "<h1>Bulk action</h1>" in html and "3 will be skipped" in html
    assert 'action="/bulk/start/"' in html
    answer = alice.post(START, form)
    bulk = BulkAction.objects.get()
    assert answer.status_code == 302 and answer["Location"] == f"/bulk/{bulk.pk}/"
    html = alice.get(answer["Location"]).content.decode()
    assert f"Bulk action #{bulk.pk}" in html and "3 skipped" in html
    assert "1</strong> flow — complete flows cannot be skipped" in html
    assert f'href="/flows/{world["complete"][0]}/"' in html  # the refused, linked
    listed = alice.get(reverse("studio:bulk_list")).content.decode()
    assert f'href="/bulk/{bulk.pk}/"' in listed and "later" in listed


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"action": "kill", "reason": "r"}, "Select some flows first"),
        ({"action": "explode", "ids": ["1"], "reason": "r"}, "Select a valid choice"),
        ({"action": "kill", "ids": ["1; drop"], "reason": "r"}, "must be flow numbers"),
        ({"action": "kill", "ids": ["-1"], "reason": "r"}, "must be flow numbers"),
        ({"action": "kill", "ids": ["0"], "reason": "r"}, "must be flow numbers"),
        ({"action": "kill", "ids": ["9" * 30], "reason": "r"}, "must be flow numbers"),
        ({"action": "kill", "all": "1", "q": "nothing like it", "reason": "r"}, "matches no flow"),
        ({"action": "kill", "all": "1", "reason": "r"}, "a filter must narrow"),
        ({"action": "kill", "all": "1", "routine": "0", "reason": "r"}, "filter.routine"),
        ({"action": "kill", "ids": ["1"], "reason": "a\x00b"}, "Null characters"),
    ],
)
def test_bad_input_is_a_clear_400_that_starts_nothing(alice, world, form, words):
    for url in (PREVIEW, START):
        for headers in (HTMX, {}):
            answer = alice.post(url, form, **headers)
            assert answer.status_code == 400, (url, answer.content[:300])
            assert words in answer.content.decode(), (url, words)
    assert untouched()


def test_confirm_needs_a_reason_and_something_to_do(alice, world):
    answer = alice.post(START, {"action": "kill", "ids": world["failed"]}, **HTMX)
    assert answer.status_code == 400 and "needs a reason" in answer.content.decode()
    assert "3 will be killed" in answer.content.decode()  # the preview again, to correct
    nothing = alice.post(START, {"action": "kill", "ids": world["killed"], "reason": "r"}, **HTMX)
    assert nothing.status_code == 400
    assert "none of the 2 selected flows can be killed now" in nothing.content.decode()
    assert untouched()


def test_only_the_starter_sees_a_bulk_action(alice, world, make_user):
    alice.post(START, {"action": "kill", "ids": world["failed"], "reason": "r"})
    bulk = BulkAction.objects.get()
    bob = Client()
    bob.force_login(make_user("mallory"))
    assert bob.get(reverse("studio:bulk_detail", args=[bulk.pk])).status_code == 404
    assert bob.get(reverse("studio:bulk_detail", args=[987654])).status_code == 404
    assert f"/bulk/{bulk.pk}/" not in bob.get(reverse("studio:bulk_list")).content.decode()


def test_sign_in_and_csrf_are_required(client, user, world):
    for url in (PREVIEW, START, reverse("studio:bulk_list")):
        answer = client.post(url, {}) if url != reverse("studio:bulk_list") else client.get(url)
        assert answer.status_code == 302 and "/accounts/login/" in answer["Location"]
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    refused = browser.post(START, {"action": "kill", "ids": world["failed"], "reason": "r"})
    assert refused.status_code == 403
    assert untouched()
    assert browser.get(PREVIEW).status_code == 405


def test_the_reason_and_filter_are_escaped(alice, world):
    evil = '<script>alert("x")</script>'
    form = {"action": "kill", "all": "1", "state": "failed", "q": "Invoices", "reason": evil}
    html = alice.post(PREVIEW, form, **HTMX).content.decode()
    assert evil not in html and "&lt;script&gt;" in html
    html = alice.post(START, form, **HTMX).content.decode()
    assert evil not in html and "&lt;script&gt;alert" in html
    bulk = BulkAction.objects.get()
    page = alice.get(reverse("studio:bulk_detail", args=[bulk.pk])).content.decode()
    assert evil not in page
    assert len(re.findall(r"<script", page)) == len(re.findall(r"<script src=", page))
