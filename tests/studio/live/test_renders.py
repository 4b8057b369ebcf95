"""When a flow page's live area is rendered (`studio.live.consumer`): the first render of a
burst of events waits up to SETTLE for what commits soon after (an answer, the step it lets
run), except when the newest event leaves the flow at rest (waiting, retrying later,
finished): then nothing more is coming, and the page shows it at once.

On the studio's ASGI application in this process (Channels' communicator), with SETTLE made
a minute long: a render that waited for it would not come within these tests' waits."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from engine import api
from engine.models import FlowEvent
from studio.live import consumer
from tests.live_support import session_cookie

HOST = "127.0.0.1:8000"


@pytest.fixture(autouse=True)
def long_settle(monkeypatch):
    monkeypatch.setattr(consumer, "SETTLE", 60.0)


def stored(flow_id: int) -> list[tuple[int, str, str]]:
    rows = FlowEvent.objects.filter(flow_id=flow_id).order_by("seq")
    return list(rows.values_list("seq", "kind", "state"))


def watch_until_fragments(user: Any, flow_id: int, since: int, then: Any) -> list[dict]:
    """Watch the flow from `since`, call `then()` (in a thread, as a request or a worker
    would), and return the messages up to the first fragments."""
    from studio.asgi import application

    headers = [
        (b"host", HOST.encode()),
        (b"origin", f"http://{HOST}".encode()),
        (b"cookie", session_cookie(user).encode()),
    ]

    async def run() -> list[dict]:
        communicator = WebsocketCommunicator(application, "/ws/live/", headers=headers)
        accepted, _ = await communicator.connect(timeout=10)
        assert accepted
        messages = [await communicator.receive_json_from(timeout=10)]  # hello
        await communicator.send_json_to({"action": "watch_flow", "flow": flow_id, "since": since})
        while messages[-1]["type"] != "watching":
            messages.append(await communicator.receive_json_from(timeout=10))
        await database_sync_to_async(then)()
        while messages[-1]["type"] != "fragments":
            messages.append(await communicator.receive_json_from(timeout=10))
        await communicator.disconnect()
        return messages

    return async_to_sync(run)()


@pytest.mark.django_db(transaction=True)
def test_an_answer_shows_at_once_when_the_flow_waits_again(user, routine):
    flow = api.start_flow(routine("t_wait", "t_wait"), user)
    assert flow.state == "waiting"
    since = flow.seq
    messages = watch_until_fragments(
        user, flow.pk, since, lambda: api.push_input(flow, {"answer": 1}, user)
    )
    events = [m["event"] for m in messages if m["type"] == "event"]
    final = stored(flow.pk)[-1]
    assert final[2] == "waiting" and final[0] > since
    # the answer's own events came first, the flow still moving (pending, running) ...
    assert events[0]["kind"] == "input.pushed" and events[0]["state"] != "waiting"
    # ... and one render, of the flow waiting again, without waiting out the settle
    assert [e["seq"] for e in events][-1] == final[0]
    assert messages[-1]["seq"] == final[0]
    assert 'data-state="waiting"' in messages[-1]["html"]["flow-live"]


@pytest.mark.django_db(transaction=True)
def test_a_moving_flow_is_not_rendered_before_it_settles(user, queued):
    """A queued flow's creation (pending: its run is coming) is not rendered at once; its
    kill (at rest) is, and that is the first render the page gets."""
    flow = queued("t_echo")
    assert stored(flow.pk)[-1][2] == "pending"
    messages = watch_until_fragments(
        user, flow.pk, 0, lambda: api.kill_flow(flow, user, "not needed")
    )
    kinds = [m["event"]["kind"] for m in messages if m["type"] == "event"]
    final = stored(flow.pk)[-1]
    assert final[2] == "killed" and kinds[-1] == final[1]
    assert messages[-1]["seq"] == final[0]  # the pending state was never rendered
    assert 'data-state="killed"' in messages[-1]["html"]["flow-live"]


@pytest.mark.django_db(transaction=True)
def test_a_commit_of_two_events_is_rendered_whole(user, routine):
    """The last step's result and the flow's end are one commit's two events, both in the
    flow's final state: the page's render waits for the second (the flow complete in its
    timeline), it does not show the first alone and the whole a render gap later."""
    flow = api.start_flow(routine("t_wait", "t_echo"), user)
    assert flow.state == "waiting"
    since = flow.seq
    messages = watch_until_fragments(
        user, flow.pk, since, lambda: api.push_input(flow, {"answer": 1}, user)
    )
    final = stored(flow.pk)
    assert [kind for _, kind, _ in final[-2:]] == ["step.completed", "flow.complete"]
    assert final[-2][2] == final[-1][2] == "complete"  # (the same state: one commit)
    events = [m["event"] for m in messages if m["type"] == "event"]
    assert [e["seq"] for e in events][-1] == final[-1][0]
    assert messages[-1]["seq"] == final[-1][0]  # the first render holds the whole commit
    assert 'data-state="complete"' in messages[-1]["html"]["flow-live"]
