"""Bulk actions over REST: preview and start by ids or by the listing's filter, progress and
refusals, the caller's own list, clear 400s that change nothing, and another user's bulk
action a 404 like a missing one."""

from __future__ import annotations

import pytest

from engine import api
from engine.models import AuditEntry, BulkAction, Flow, FlowEvent
from tests.conftest import bearer
from tests.engine.flows.test_bulk import make_flows
from tests.studio.api.conftest import post

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


@pytest.fixture
def world(user, other_user, routine):
    r = routine("t_echo", name="Invoices")
    return {
        "failed": make_flows(r, user, "failed", 4),
        "complete": make_flows(r, user, "complete", 2),
        "bobs": make_flows(r, other_user, "failed", 3),
        "routine": r,
    }


def test_preview_by_ids_counts_states_and_refusals(c, world):
    ids = world["failed"] + world["complete"] + world["bobs"]
    answer = post(c, "/api/bulk/preview", {"action": "kill", "ids": ids})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["total"], body["applies"], body["refused_count"]) == (9, 4, 5)
    assert body["affected"] == {"failed": 4}
    assert body["refused"] == [
        {"reason": "you may not act on these flows", "count": 3, "flows": world["bobs"]},
        {"reason": "complete flows cannot be killed", "count": 2, "flows": world["complete"]},
    ]
    assert body["selection"] == {"ids": ids}
    assert not BulkAction.objects.exists()  # a preview does nothing
    assert set(Flow.objects.values_list("version", flat=True)) == {0}


def test_start_by_filter_then_follow_its_progress(c, world, user):
    body = {"action": "kill", "reason": "duplicates", "filter": {"state": "failed"}}
    preview = post(c, "/api/bulk/preview", body).json()
    assert (preview["total"], preview["applies"]) == (4, 4)  # only the caller's flows
    started = post(c, "/api/bulk", body)
    assert started.status_code == 201, started.content
    bulk = started.json()
    assert bulk["selection"] == {"filter": {"state": "failed"}}
    assert (bulk["action"], bulk["reason"], bulk["total"]) == ("kill", "duplicates", 4)
    # (Huey runs it at once here; a consumer would run it in the background)
    done = c.get(f"/api/bulk/{bulk['id']}").json()
    assert (done["state"], done["processed"], done["succeeded"], done["refused"]) == (
        "done",
        4,
        4,
        [],
    )
    assert done["finished"] is not None
    killed = FlowEvent.objects.filter(kind="manual.kill", flow_id__in=world["failed"])
    assert {(e.actor_id, e.message, e.data["bulk"]) for e in killed} == {
        (user.pk, "duplicates", bulk["id"])
    }
    assert list(AuditEntry.objects.order_by("id").values_list("kind", flat=True)) == [
        "bulk.started",
        "bulk.finished",
    ]
    listed = c.get("/api/bulk").json()
    assert listed["count"] == 1 and listed["items"][0]["id"] == bulk["id"]


def test_refusals_by_reason_in_the_progress(c, world):
    ids = world["failed"] + world["complete"] + world["bobs"] + [987_654]
    bulk = post(c, "/api/bulk", {"action": "skip", "reason": "r", "ids": ids}).json()
    got = c.get(f"/api/bulk/{bulk['id']}").json()
    assert (got["succeeded"], got["refused_count"]) == (4, 6)
    assert {row["reason"]: row["count"] for row in got["refused"]} == {
        "you may not act on these flows": 4,
        "complete flows cannot be skipped": 2,
    }


def test_the_same_filter_as_the_listing(c, world, routine, user):
    other = routine("t_echo", name="Orders")
    make_flows(other, user, "failed", 2)
    for query, body in [
        ("?state=failed", {"state": "failed"}),
        (f"?routine={world['routine'].pk}", {"routine": world["routine"].pk}),
        ("?search=invoices", {"search": "invoices"}),
        ("?owner=alice&state=failed", {"owner": "alice", "state": "failed"}),
        (f"?search=%23{world['failed'][0]}", {"search": f"#{world['failed'][0]}"}),
    ]:
        listed = {item["id"] for item in c.get(f"/api/flows{query}&limit=200").json()["items"]}
        preview = post(c, "/api/bulk/preview", {"action": "kill", "filter": body}).json()
        assert preview["total"] == len(listed), (query, preview)
        assert set(preview["refused"][0]["flows"] if preview["refused"] else []) <= listed


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"action": "kill", "reason": "r", "filter": {"search": "no such thing"}}, "matches no"),
        ({"action": "explode", "reason": "r", "ids": [1]}, "action"),
        ({"action": "kill", "reason": "r", "ids": ["1"]}, "ids.0"),
        ({"action": "kill", "reason": "r", "ids": [True]}, "ids.0"),
        ({"action": "kill", "reason": "r", "ids": [0]}, "ids.0"),
        ({"action": "kill", "reason": "r", "ids": 5}, "ids"),
        ({"action": "kill", "reason": "r", "ids": []}, "ids"),
        ({"action": "kill", "reason": "r", "ids": list(range(1, 10_002))}, "ids"),
        ({"action": "kill", "reason": "r"}, "nothing was selected"),
        ({"action": "kill", "reason": "r", "ids": [1], "filter": {"state": "failed"}}, "not both"),
        ({"action": "kill", "reason": "r", "filter": {}}, "a filter must narrow"),
        ({"action": "kill", "reason": "r", "filter": {"state": "asleep"}}, "filter.state"),
        ({"action": "kill", "reason": "r", "filter": {"colour": "red"}}, "filter.colour"),
        ({"action": "kill", "reason": "r", "filter": {"routine": "4"}}, "filter.routine"),
        ({"action": "kill", "reason": "", "filter": {"state": "failed"}}, "reason"),
        ({"action": "kill", "filter": {"state": "failed"}}, "reason"),
        ({"action": "kill", "reason": "a\x00b", "filter": {"state": "failed"}}, "reason"),
        ({"action": "kill", "reason": "r", "filter": {"state": "complete"}}, "none of the 2"),
        ({"action": "kill", "reason": "r", "ids": [1], "all": True}, "all"),
    ],
)
def test_bad_input_is_a_clear_400_that_changes_nothing(c, world, body, words):
    answer = post(c, "/api/bulk", body)
    assert answer.status_code == 400, answer.content
    assert words in answer.json()["detail"], answer.json()
    assert not BulkAction.objects.exists() and not AuditEntry.objects.exists()
    assert set(Flow.objects.values_list("version", flat=True)) == {0}
    assert not FlowEvent.objects.exists()


def test_preview_errors_are_400_too(c, world):
    answer = post(c, "/api/bulk/preview", {"action": "kill", "filter": {"state": "running"}})
    assert answer.status_code == 400
    assert answer.json()["detail"] == "the filter matches no flow: nothing to act on"


def test_another_users_bulk_action_is_a_404_like_a_missing_one(c, world, other_user):
    bulk = post(c, "/api/bulk", {"action": "kill", "reason": "r", "ids": world["failed"]}).json()
    bob = bearer(other_user)
    foreign = bob.get(f"/api/bulk/{bulk['id']}")
    missing = bob.get("/api/bulk/987654")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content
    assert bob.get("/api/bulk").json() == {"count": 0, "limit": 50, "offset": 0, "items": []}
    # and bob's selection of alice's flows acts on none of them
    refused = post(bob, "/api/bulk", {"action": "kill", "reason": "r", "ids": world["failed"]})
    assert refused.status_code == 400 and "none of the 4" in refused.json()["detail"]


def test_the_endpoints_are_in_the_schema(c):
    schema = c.get("/api/openapi.json").json()
    assert {"/api/bulk", "/api/bulk/preview", "/api/bulk/{bulk_id}"} <= set(schema["paths"])
    assert set(schema["paths"]["/api/bulk"]) == {"get", "post"}
    body = schema["components"]["schemas"]["BulkIn"]["properties"]
    assert body["action"]["enum"] == ["retry", "resume", "skip", "kill"]


def test_session_calls_need_csrf(user, world):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    answer = post(browser, "/api/bulk", {"action": "kill", "reason": "r", "ids": world["failed"]})
    assert answer.status_code == 403
    assert not BulkAction.objects.exists()
    assert api.visible_bulk_actions(user).count() == 0
