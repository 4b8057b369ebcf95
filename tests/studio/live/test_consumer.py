"""Live updates over real websockets, against a running daphne server with the engine's
consumer (in the server process in embedded mode; 3 apart, on Redis, when scaled out)."""

from __future__ import annotations

import json
import re
import time
from contextlib import ExitStack

import pytest
from websockets.exceptions import InvalidStatus

from engine import api
from engine.models import Flow, FlowEvent, LtmEvent, LtmRun
from tests.conftest import wait_until
from tests.live_support import receive, session_cookie

pytestmark = pytest.mark.consumer


def watch(flow_id: int, since: int) -> str:
    return json.dumps({"action": "watch_flow", "flow": flow_id, "since": since})


def collect(ws, flow_id: int, until_kind: str, timeout: float = 60) -> list[dict]:
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = receive(ws, timeout=deadline - time.monotonic())
        if message["type"] == "event" and message["id"] == flow_id:
            events.append(message["event"])
            if message["event"]["kind"] == until_kind:
                return events
    raise AssertionError(f"flow {flow_id} had no {until_kind} event: {events}")


def stored_seqs(flow_id: int) -> list[int]:
    return list(
        FlowEvent.objects.filter(flow_id=flow_id).order_by("seq").values_list("seq", flat=True)
    )


def test_watcher_receives_every_event_of_a_ten_step_flow_in_order(studio, user):
    steps = ["t_wait"] + [{"script": "t_sleep", "params": {"sleep": 0.02}}] * 9
    flow = api.start_flow(api.create_routine("ten", steps, owner=user), user)
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "waiting")
    with studio.ws(session_cookie(user)) as ws:
        assert receive(ws)["type"] == "hello"
        ws.send(watch(flow.pk, 0))
        before = collect(ws, flow.pk, "flow.waiting")
        api.push_input(flow, {"answer": 1}, user)
        after = collect(ws, flow.pk, "flow.complete")
    seqs = [event["seq"] for event in before + after]
    assert seqs == list(range(1, len(seqs) + 1)) == stored_seqs(flow.pk)
    kinds = [event["kind"] for event in after]
    assert kinds[0] == "input.pushed" and kinds.count("step.completed") == 10
    assert after[-1]["kind"] == "flow.complete"


def test_reconnecting_client_converges_to_the_database(studio, user):
    steps = [{"script": "t_sleep", "params": {"sleep": 0.15}}] * 10
    flow = api.start_flow(api.create_routine("slow", steps, owner=user), user)
    seen: list[int] = []
    with studio.ws(session_cookie(user)) as ws:
        receive(ws)
        ws.send(watch(flow.pk, 0))
        while len(seen) < 4:
            message = receive(ws)
            if message["type"] == "event":
                seen.append(message["seq"])
    time.sleep(0.5)  # events go by while the client is away
    with studio.ws(session_cookie(user)) as ws:
        receive(ws)
        ws.send(watch(flow.pk, seen[-1]))
        rest = collect(ws, flow.pk, "flow.complete")
    seqs = seen + [event["seq"] for event in rest]
    assert seqs == stored_seqs(flow.pk)
    flow.refresh_from_db()
    assert rest[-1]["state"] == flow.state == "complete" and rest[-1]["position"] == flow.position


def test_several_tabs_and_users_watching_one_flow_see_the_same(studio, user, make_user):
    """Three tabs of the owner, a staff member and the owner's dashboard: every flow page gets
    every event in order and ends on the fragments of the final state; the dashboard's last
    row shows it complete. (Frames and renders are shared between watchers: this is what
    must not change.)"""
    staff = make_user("carol", is_staff=True)
    steps = ["t_wait"] + [{"script": "t_sleep", "params": {"sleep": 0.02}}] * 5
    flow = api.start_flow(api.create_routine("shared", steps, owner=user), user)
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "waiting")
    cookies = [session_cookie(user)] * 3 + [session_cookie(staff)]
    with ExitStack() as sockets:
        pages = [sockets.enter_context(studio.ws(cookie)) for cookie in cookies]
        dashboard = sockets.enter_context(studio.ws(session_cookie(user)))
        for ws in pages:
            assert receive(ws)["type"] == "hello"
            ws.send(watch(flow.pk, 0))
        assert receive(dashboard)["type"] == "hello"
        dashboard.send('{"action": "watch_dashboard"}')
        assert receive(dashboard)["type"] == "watching"
        api.push_input(flow, {"answer": 1}, user)
        assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "complete")
        final = stored_seqs(flow.pk)
        for ws in pages:
            seqs, last_fragments = [], None
            while not (seqs and seqs[-1] == final[-1] and last_fragments == final[-1]):
                message = receive(ws)
                if message["type"] == "event":
                    seqs.append(message["seq"])
                elif message["type"] == "fragments":
                    last_fragments = message["seq"]
                    html = message["html"]["flow-live"]
            assert seqs == final
            version = Flow.objects.get(pk=flow.pk).version
            assert f'data-version="{version}" data-state="complete"' in html
        row = {}
        while row.get("seq") != final[-1]:
            row = receive(dashboard)
        assert row["type"] == "row" and row["kind"] == "flow.complete"
        assert f'id="flow-{flow.pk}-row"' in row["html"] and "complete" in row["html"]


def test_a_change_whose_message_is_lost_still_reaches_flow_pages_and_dashboards(studio, user):
    """A kill committed by this test's process: in embedded mode its message reaches no
    server (the in-process channel layer cannot cross processes), and nothing comes after it
    to reveal the gap. The consumer's periodic check against the database finds it for the
    flow page and for the dashboard row. (Scaled out, it simply arrives over Redis.)"""
    with studio.ws(session_cookie(user)) as page, studio.ws(session_cookie(user)) as board:
        assert receive(page)["type"] == receive(board)["type"] == "hello"
        board.send('{"action": "watch_dashboard"}')
        assert receive(board)["type"] == "watching"
        flow = api.start_flow(api.create_routine("w", ["t_wait"], owner=user), user)
        row = {}
        while row.get("state") != "waiting":  # the server's own engine ran it: sent live
            row = receive(board)
        page.send(watch(flow.pk, 0))
        collect(page, flow.pk, "flow.waiting")
        api.kill_flow(flow, user, reason="lost on the way")
        killed = collect(page, flow.pk, "manual.kill", timeout=15)
        assert killed[-1]["seq"] == stored_seqs(flow.pk)[-1]
        while row.get("state") != "killed":
            row = receive(board, timeout=15)
        assert row["type"] == "row" and row["id"] == flow.pk and "killed" in row["html"]


def dashboard_until_watching(ws, payload: dict) -> list[dict]:
    """Send `watch_dashboard` with what the page shows; the rows that came before the
    server's "watching"."""
    ws.send(json.dumps({"action": "watch_dashboard", **payload}))
    rows = []
    while (message := receive(ws))["type"] != "watching":
        assert message["type"] == "row", message
        rows.append(message)
    return rows


def test_a_dashboard_that_reconnects_gets_the_rows_that_changed(studio, user, other_user):
    """A dashboard says what it shows — its rows' seqs and its newest flow — and gets at once
    the rows that changed meanwhile and the flows started since, none of another user's,
    none it has already."""
    waiting = api.start_flow(api.create_routine("w", ["t_wait"], owner=user), user)
    done = api.start_flow(api.create_routine("e", ["t_echo"], owner=user), user)
    theirs = api.start_flow(api.create_routine("t", ["t_wait"], owner=other_user), other_user)
    assert wait_until(lambda: Flow.objects.get(pk=waiting.pk).state == "waiting")
    assert wait_until(lambda: Flow.objects.get(pk=done.pk).state == "complete")
    assert wait_until(lambda: Flow.objects.get(pk=theirs.pk).state == "waiting")
    shown = {str(f.pk): Flow.objects.get(pk=f.pk).seq for f in (waiting, done, theirs)}
    # while the page is offline: one of its rows changes and a flow starts
    api.kill_flow(waiting, user, reason="while away")
    started = api.start_flow(api.create_routine("n", ["t_wait"], owner=user), user)
    assert wait_until(lambda: Flow.objects.get(pk=started.pk).state == "waiting")
    with studio.ws(session_cookie(user)) as ws:
        assert receive(ws)["type"] == "hello"
        rows = dashboard_until_watching(ws, {"rows": shown, "after": done.pk})
        assert [row["id"] for row in rows] == [waiting.pk, started.pk]
        assert rows[0]["state"] == "killed" and "Killed" in rows[0]["html"]
        assert f'data-seq="{Flow.objects.get(pk=waiting.pk).seq}"' in rows[0]["html"]
        assert rows[1]["state"] == "waiting" and f'id="flow-{started.pk}-row"' in rows[1]["html"]
        # a page that shows it all gets nothing; one that adds no new flows, no new flows
        now = {key: Flow.objects.get(pk=int(key)).seq for key in shown}
        assert dashboard_until_watching(ws, {"rows": now, "after": started.pk}) == []
        assert dashboard_until_watching(ws, {"rows": now}) == []
    with studio.ws(session_cookie(other_user)) as ws:  # their dashboard: their flow only
        receive(ws)
        rows = dashboard_until_watching(ws, {"rows": dict.fromkeys(shown, 0), "after": 0})
        assert [row["id"] for row in rows] == [theirs.pk]


def test_the_rows_a_dashboard_shows_are_followed_even_if_a_message_is_lost(studio, user):
    """Rows the page showed before it connected (rendered with the page, never sent over this
    socket) are compared with the database too: a change whose message is lost reaches them.
    (In embedded mode the kill committed by this test's process reaches no server.)"""
    flow = api.start_flow(api.create_routine("w", ["t_wait"], owner=user), user)
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "waiting")
    with studio.ws(session_cookie(user)) as ws:
        receive(ws)
        shown = {str(flow.pk): Flow.objects.get(pk=flow.pk).seq}
        assert dashboard_until_watching(ws, {"rows": shown}) == []
        api.kill_flow(flow, user, reason="lost on the way")
        row = receive(ws, timeout=15)
    assert row["type"] == "row" and row["id"] == flow.pk and row["state"] == "killed"


def test_another_user_is_refused_the_flow(studio, user, other_user):
    flow = api.start_flow(api.create_routine("w", ["t_wait"], owner=user), user)
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "waiting")
    with studio.ws(session_cookie(other_user)) as ws:
        receive(ws)
        ws.send(watch(flow.pk, 0))
        answer = receive(ws)
        assert answer == {"type": "error", "stream": "flow", "message": "not found"}
        ws.send(watch(999999, 0))
        assert receive(ws) == answer  # the same as for a flow that does not exist
        api.push_input(flow, {"answer": 1}, user)
        ws.send('{"action": "ping"}')
        assert receive(ws) == {"type": "pong"}  # no event of the foreign flow came first


def test_foreign_origin_and_anonymous_sockets_are_refused(studio, user):
    with pytest.raises(InvalidStatus) as refused:
        studio.ws(session_cookie(user), origin="http://evil.example")
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as anonymous:
        studio.ws(None)  # closed before it is accepted: the handshake itself is refused
    assert anonymous.value.response.status_code == 403
    with studio.ws(session_cookie(user)) as ws:  # the same server accepts a signed-in user
        assert receive(ws)["type"] == "hello"


def ltm_seqs(run_id) -> list[int]:
    return list(
        LtmEvent.objects.filter(run_id=run_id).order_by("seq").values_list("seq", flat=True)
    )


def follow_ltm(ws, run_id, timeout: float = 30) -> tuple[list[int], str]:
    """Read an LTM run's stream until the client has every stored event and the run page's
    live fragment for the last one; returns the event numbers received and that fragment."""
    seqs: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = receive(ws, timeout=deadline - time.monotonic())
        if message.get("stream") != "ltm" or message.get("id") != str(run_id):
            continue
        if message["type"] == "event":
            seqs.append(message["seq"])
        elif (
            message["type"] == "fragments"
            and seqs
            and message["seq"] == seqs[-1] == ltm_seqs(run_id)[-1]  # nothing newer stored
        ):
            return seqs, message["html"]["ltm-run-live"]
    raise AssertionError(f"LTM run {run_id}: events {seqs}, stored {ltm_seqs(run_id)}")


def state_row(html: str, fqn: str) -> str:
    rows = re.findall(r"<tr id=\"ltm-state-\d+\">.*?</tr>", html, re.S)
    return next(row for row in rows if f"<code>{fqn}</code>" in row)


def node_fill(html: str, fqn: str) -> str:
    """The fill colour of a state's node in the run's diagram."""
    node = re.search(rf"<title>{re.escape(fqn)}</title>.*?fill=\"([^\"]+)\"", html, re.S)
    assert node, f"no node {fqn} in the diagram"
    return node.group(1)


def test_an_ltm_run_page_follows_its_states_live(studio, user, other_user):
    run_id = api.start_ltm("park_ltm", user)
    assert wait_until(lambda: LtmRun.objects.get(pk=run_id).state == "complete"), (
        LtmRun.objects.get(pk=run_id).error
    )
    with studio.ws(session_cookie(other_user)) as ws:  # not theirs: refused, as flows are
        receive(ws)
        ws.send(json.dumps({"action": "watch_ltm", "run": str(run_id), "since": 0}))
        assert receive(ws) == {"type": "error", "stream": "ltm", "message": "not found"}
    with studio.ws(session_cookie(user)) as ws:
        assert receive(ws)["type"] == "hello"
        ws.send(json.dumps({"action": "watch_ltm", "run": str(run_id), "since": 0}))
        before, html = follow_ltm(ws, run_id)
        assert "state-active" in state_row(html, "park_ltm.parked")
        assert "<code>park_ltm.released</code>" not in html
        active = node_fill(html, "park_ltm.parked")
        assert node_fill(html, "park_ltm.released") != active
        # an operator fires "release": the open page shows the states change
        api.fire_transition(run_id, "release", user)
        after, html = follow_ltm(ws, run_id)
    assert before + after == ltm_seqs(run_id)  # every event, once, in order
    assert "state-completed" in state_row(html, "park_ltm.parked")
    assert "state-active" in state_row(html, "park_ltm.released")
    # and the diagram is recoloured: the new state has the active colour, the old one not
    assert node_fill(html, "park_ltm.released") == active
    assert node_fill(html, "park_ltm.parked") != active


# --- human steps: assignees watch while the wait is theirs; the notification count -----------


def _approvers(make_user):
    from django.contrib.auth.models import Group

    bob = make_user("bob")
    bob.groups.add(Group.objects.create(name="approvers"))
    return bob


def _assigned(owner):
    step = {"script": "t_approve", "params": {"assign_to": "approvers", "timeout": 600}}
    routine = api.create_routine("Approval", [{"script": "t_echo", "params": {"n": 7}}, step])
    flow = api.start_flow(routine, owner)
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "waiting")
    return Flow.objects.get(pk=flow.pk)


def test_an_assignee_watches_a_flow_while_it_waits_for_them(studio, user, make_user):
    """The socket's check is the page's (`can_see_flow`): a stranger is refused, the assignee
    watches, gets events without results or inputs and their own fragments (the form, no
    overrides); once the flow no longer waits for them, a last fragment says so and nothing
    more of the flow comes."""
    bob, carol = _approvers(make_user), make_user("carol")
    flow = _assigned(user)
    with studio.ws(session_cookie(carol)) as ws:
        receive(ws)
        ws.send(watch(flow.pk, 0))
        assert receive(ws) == {"type": "error", "stream": "flow", "message": "not found"}
    with studio.ws(session_cookie(bob)) as ws:
        assert receive(ws)["type"] == "hello"
        ws.send(watch(flow.pk, 0))
        events, html = [], ""
        while not (events and events[-1]["kind"] == "flow.waiting" and html):
            message = receive(ws)
            if message["type"] == "event":
                events.append(message["event"])
            elif message["type"] == "fragments":
                html = message["html"]["flow-live"] if message["seq"] == flow.seq else ""
        assert [e["seq"] for e in events] == stored_seqs(flow.pk)
        assert all("result" not in e["data"] and "input" not in e["data"] for e in events)
        assert 'value="approve"' in html and "override-kill" not in html
        api.push_input(flow, {"decision": "approve", "comment": "ok"}, bob)
        message = receive(ws, timeout=30)  # the periodic check finds it in embedded mode
        while message["type"] != "fragments":
            assert message["type"] == "event" and message["event"]["kind"] == "input.pushed"
            message = receive(ws, timeout=30)
        assert "no longer waits for you" in message["html"]["flow-live"]
        assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "complete")
        ws.send('{"action": "ping"}')
        assert receive(ws) == {"type": "pong"}  # nothing of the flow's later events came


def test_the_notification_count_follows_new_waits_and_answers(studio, user, make_user):
    bob = _approvers(make_user)
    first = _assigned(user)
    with studio.ws(session_cookie(bob)) as ws:
        assert receive(ws)["type"] == "hello"
        ws.send('{"action": "watch_notifications"}')
        assert receive(ws) == {"type": "notifications", "count": 1, "flow": None}
        second = _assigned(user)  # its wait is recorded by the server's engine: told at once
        message = receive(ws)
        while message.get("flow") != second.pk:
            message = receive(ws)
        assert message == {"type": "notifications", "count": 2, "flow": second.pk}
        # answered here (in embedded mode this process's message reaches no server): the
        # consumer's periodic count check finds it; scaled out it simply arrives
        api.push_input(first, {"decision": "approve", "comment": "ok"}, bob)
        message = receive(ws, timeout=30)
        while message.get("type") != "notifications":
            message = receive(ws, timeout=30)
        assert message["count"] == 1


def test_dashboards_get_each_flows_newest_row_in_one_shared_frame_per_window(studio, user):
    """A burst of events reaches dashboards as a few frames, not one per event: the server's
    hub coalesces rows for a window (each flow's newest row only) and writes the same encoded
    frame to every dashboard of the group. Whatever the machine's speed, a socket gets at
    most one frame per window between the first event's commit and the last frame."""
    from studio.live.hub import WINDOW

    steps = ["t_wait"] + ["t_echo"] * 30
    flow = api.start_flow(api.create_routine("burst", steps, owner=user), user)
    assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "waiting")
    before = Flow.objects.get(pk=flow.pk).seq
    with ExitStack() as stack:
        boards = [stack.enter_context(studio.ws(session_cookie(user))) for _ in range(5)]
        for ws in boards:
            assert receive(ws)["type"] == "hello"
            ws.send(json.dumps({"action": "watch_dashboard", "rows": {str(flow.pk): before}}))
            assert receive(ws)["type"] == "watching"
        api.push_input(flow, {"answer": 1}, user)
        assert wait_until(lambda: Flow.objects.get(pk=flow.pk).state == "complete")
        frames: list[list[str]] = []
        for ws in boards:
            texts, done = [], False
            while not done:
                texts.append(ws.recv(timeout=30))
                last_received = time.time()
                message = json.loads(texts[-1])
                for row in message["rows"] if message["type"] == "rows" else [message]:
                    assert row["type"] == "row", row
                    done |= row["id"] == flow.pk and row["kind"] == "flow.complete"
            frames.append(texts)
    assert all(texts == frames[0] for texts in frames)  # the same frames, byte for byte
    rows = []
    for text in frames[0]:
        message = json.loads(text)
        rows += [r for r in (message.get("rows") or [message]) if r["id"] == flow.pk]
    seqs = [row["seq"] for row in rows]
    assert seqs == sorted(set(seqs)) and seqs[-1] == stored_seqs(flow.pk)[-1]
    events = FlowEvent.objects.filter(flow_id=flow.pk, seq__gt=before).order_by("seq")
    assert events.count() >= 32  # input, 30 steps, complete
    first = events.first().created.timestamp()
    assert len(frames[0]) <= (last_received - first) / WINDOW + 2
