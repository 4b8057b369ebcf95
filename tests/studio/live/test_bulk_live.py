"""A bulk action's progress over a real websocket (`watch_bulk`): its user's page gets the
progress rendered after each chunk, up to the end, and at once when it moved since the page
showed it; anyone else's socket learns nothing of it; bad frames get an error."""

from __future__ import annotations

import json

import pytest

from engine import api
from engine.models import BulkAction
from tests.conftest import wait_until
from tests.engine.flows.test_bulk import make_flows
from tests.live_support import receive, session_cookie

pytestmark = pytest.mark.consumer


def watch(bulk_id, processed=0, state="queued") -> str:
    return json.dumps(
        {"action": "watch_bulk", "bulk": bulk_id, "processed": processed, "state": state}
    )


def next_of(ws, kind: str) -> dict:
    while True:
        message = receive(ws, timeout=60)
        if message["type"] == kind:
            return message


def test_the_progress_comes_after_each_chunk_to_the_end(studio, user):
    routine = api.create_routine("bulk", ["t_echo"], owner=user)
    ids = make_flows(routine, user, "failed", 600)
    with studio.ws(session_cookie(user)) as ws:
        assert receive(ws)["type"] == "hello"
        bulk = api.start_bulk(user, "kill", {"ids": ids}, "tidy")
        ws.send(watch(bulk.pk))
        seen = []
        while not seen or seen[-1]["state"] != "done":
            seen.append(next_of(ws, "bulk"))
    processed = [message["processed"] for message in seen]
    assert processed == sorted(processed) and processed[-1] == 600
    last = seen[-1]
    assert last["id"] == bulk.pk and set(last["html"]) == {f"bulk-{bulk.pk}"}
    html = last["html"][f"bulk-{bulk.pk}"]
    assert "<strong>600 of 600</strong>" in html and "Done" in html and "hx-trigger" not in html


def test_a_page_behind_gets_the_progress_at_once(studio, user):
    routine = api.create_routine("bulk", ["t_echo"], owner=user)
    bulk = api.start_bulk(user, "kill", {"ids": make_flows(routine, user, "failed", 5)}, "r")
    assert wait_until(lambda: BulkAction.objects.get(pk=bulk.pk).state == "done")
    with studio.ws(session_cookie(user)) as ws:
        receive(ws)
        ws.send(watch(bulk.pk, 0, "running"))
        message = next_of(ws, "bulk")
        assert (message["processed"], message["state"]) == (5, "done")
        ws.send(watch(bulk.pk, 5, "done"))  # shows it as it is: nothing to send
        ws.send(json.dumps({"action": "ping"}))
        assert receive(ws)["type"] == "pong"


def test_others_learn_nothing_and_bad_frames_get_an_error(studio, user, other_user):
    routine = api.create_routine("bulk", ["t_echo"], owner=user)
    bulk = api.start_bulk(user, "kill", {"ids": make_flows(routine, user, "failed", 3)}, "r")
    with studio.ws(session_cookie(other_user)) as ws:
        receive(ws)
        for frame in [
            watch(bulk.pk),
            watch(987654),
            watch("1"),
            watch(0),
            watch(bulk.pk, -1),
            watch(bulk.pk, 0, None),
            json.dumps({"action": "watch_bulk"}),
        ]:
            ws.send(frame)
            answer = receive(ws)
            assert answer["type"] == "error" and answer["stream"] == "bulk", (frame, answer)
        ws.send(watch(bulk.pk))
        assert receive(ws) == {"type": "error", "message": "not found", "stream": "bulk"}
