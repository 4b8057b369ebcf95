"""Malformed websocket frames get a clean answer: an error message on a socket that stays
open, or, for what the websocket layer (autobahn, under daphne) refuses itself, the
connection dropped (1006) or closed with the code that says why (1007 not UTF-8, 1009 over
daphne's 1 MiB) — never a server error (1011, "Exception inside application" or a traceback
in the log)."""

from __future__ import annotations

import json
import re
import uuid
from contextlib import ExitStack

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from websockets.exceptions import ConnectionClosed

from engine import api
from engine.models import Flow
from tests.conftest import wait_until
from tests.live_support import receive, session_cookie

HOST = "127.0.0.1:8000"
ANSWER_BINARY = "binary frames are not understood: send JSON text"
LONG = 2**70
# What a client may get wrong in any field: types, ranges, strings the database refuses
# (NUL, lone surrogates), sizes and depths.
NESTED_LIST: object = 1
for _ in range(400):
    NESTED_LIST = [NESTED_LIST]
NESTED_DICT: object = 1
for _ in range(400):
    NESTED_DICT = {"a": NESTED_DICT}
VALUES: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    2**31,
    2**63 - 1,
    2**63,
    LONG,
    -LONG,
    1.5,
    -0.0,
    float("nan"),
    float("inf"),
    "",
    "7",
    "-1",
    "1e3",
    "\x00",
    "7\x00",
    "\ud800",
    "\udfff\ud800",
    "é" * 100,
    "x" * 20_000,
    [],
    [7],
    ["7", None],
    list(range(2_000)),
    {},
    {"7": 1},
    {"1": "x", "\x00": LONG},
    {str(n): n for n in range(2_000)},
    NESTED_LIST,
    NESTED_DICT,
    str(uuid.uuid4()),
    "{" + str(uuid.uuid4()) + "}",
]
# Every action the consumer accepts and its fields.
ACTIONS: dict[str, list[str]] = {
    "watch_flow": ["flow", "since"],
    "watch_ltm": ["run", "since"],
    "watch_dashboard": ["rows", "after"],
    "watch_notifications": [],
    "ping": [],
}
# Whole frames that are not what the protocol expects.
RAW: list[str] = [
    "",
    " ",
    "not json",
    "{",
    '{"action": "ping"',
    '{"action": "ping"}{"action": "ping"}',
    "[" * 50_000,
    "[" * 100_000,
    '{"a":' * 30_000,
    "1",
    "-1",
    "1e999",
    "9" * 5_000,
    '"ping"',
    "null",
    "true",
    "[]",
    '[{"action": "ping"}]',
    '{"action": "ping", "action": "watch_flow"}',
    '{"action": "\\ud800"}',
    '{"action": "\\u0000"}',
    '{"\\ud800": 1, "action": "ping"}',
    json.dumps({"action": "ping", "pad": "x" * 200_000}),  # larger than the consumer reads
]
BINARY: list[bytes] = [b'{"action": "ping"}', b"\x00\xff\xfe", b"\x00" * 10, b"x" * 200_000]
# Frames the websocket layer refuses itself: it drops the connection (1006, no close frame)
# or closes it with the code of the fault.
CLOSING: list[tuple[bytes, set[int]]] = [
    (b'{"action": "\xff\xfe"}', {1006, 1007}),  # a text frame that is not UTF-8
    (json.dumps({"action": "ping", "pad": "x" * 2**21}).encode(), {1006, 1009}),  # over 1 MiB
]


def frames(fields: dict[str, object], values: list[object]) -> list[str]:
    """Every action with each of its fields malformed in every way, and wrong actions."""
    out = [json.dumps({"action": value}) for value in values]
    for action, names in ACTIONS.items():
        out.append(json.dumps({"action": action}))
        for name in names:
            for value in values:
                out.append(json.dumps({"action": action, **fields.get(action, {}), name: value}))
        out.append(json.dumps({"action": action, "extra": NESTED_LIST, **fields.get(action, {})}))
    return out + RAW


class Fuzz:
    """Sends frames over one socket (a new one after a close) and counts what comes back."""

    def __init__(self, studio, cookie: str) -> None:
        self.studio, self.cookie = studio, cookie
        self.sockets = ExitStack()  # every socket opened, closed at the end
        self.ws = None
        self.frames = self.errors = self.answers = 0
        self.closes: dict[int, int] = {}
        self.silent: list[str | bytes] = []  # frames answered by nothing

    def open(self) -> None:
        self.ws = self.sockets.enter_context(self.studio.ws(self.cookie))
        assert receive(self.ws)["type"] == "hello"

    def send(self, frame: str | bytes) -> None:
        """A frame, then a ping: every message up to the pong answers the frame."""
        self.frames += 1
        if self.ws is None:
            self.open()
        self.ws.send(frame)
        self.ws.send('{"action": "ping"}')
        pongs = 2 if is_ping(frame) else 1  # (a ping's answer is a pong too)
        answered = False
        while True:
            message = receive(self.ws)
            if message == {"type": "pong"}:
                pongs -= 1
                if pongs:  # the frame's own answer
                    answered = True
                    self.answers += 1
                    continue
                if not answered:
                    self.silent.append(frame)
                return
            answered = True
            self.answers += 1
            if message["type"] == "error":
                self.errors += 1
                assert set(message) <= {"type", "stream", "message"}, message
                assert len(message["message"]) < 200, message

    def send_closing(self, data: bytes, codes: set[int]) -> None:
        """A text frame of these bytes, which the server closes the socket on, with one of
        `codes`."""
        self.frames += 1
        self.open()
        with pytest.raises(ConnectionClosed) as closed:
            self.ws.send(data, text=True)  # (the server may drop it while this one sends)
            while True:
                receive(self.ws)
        received = closed.value.rcvd
        code = 1006 if received is None else received.code
        assert code in codes, (data[:40], received)
        self.closes[code] = self.closes.get(code, 0) + 1
        self.ws = None


def is_ping(frame: str | bytes) -> bool:
    """Whether the server takes `frame` for a ping (a JSON text it reads)."""
    from studio.live.consumer import MAX_FRAME

    if not isinstance(frame, str) or len(frame) > MAX_FRAME:
        return False
    try:
        content = json.loads(frame)
    except (ValueError, RecursionError):
        return False
    return isinstance(content, dict) and content.get("action") == "ping"


def server_errors(log: str) -> list[str]:
    return re.findall(r".*(?:Exception inside application|Traceback).*", log)


@pytest.mark.consumer
@pytest.mark.bothmodes
def test_websocket_fuzz_gets_no_server_error(studio, user, other_user):
    """Against the real server, both modes: every action with malformed, oversized, deeply
    nested, NUL/surrogate and huge-integer values, garbage frames, binary frames."""
    mine = api.start_flow(api.create_routine("fuzz", ["t_wait"], owner=user), user)
    theirs = api.start_flow(api.create_routine("theirs", ["t_wait"], owner=other_user), other_user)
    assert wait_until(lambda: Flow.objects.get(pk=mine.pk).state == "waiting")
    values = [*VALUES, mine.pk, theirs.pk, {str(mine.pk): 0, str(theirs.pk): 0}]
    fields = {
        "watch_flow": {"flow": mine.pk, "since": 0},
        "watch_ltm": {"run": str(api.start_ltm("park_ltm", user)), "since": 0},
        "watch_dashboard": {"rows": {str(mine.pk): 0}, "after": 0},
    }
    fuzz = Fuzz(studio, session_cookie(user))
    try:
        for frame in frames(fields, values) + BINARY:
            fuzz.send(frame)
        for data, codes in CLOSING:
            fuzz.send_closing(data, codes)
        fuzz.send('{"action": "ping"}')  # the server still answers
    finally:
        fuzz.sockets.close()
    studio.stop()  # flush its log
    errors = server_errors(studio.log.read_text(errors="replace"))
    print(
        f"websocket fuzz: {fuzz.frames} frames, {fuzz.answers} answers "
        f"({fuzz.errors} errors), closes {fuzz.closes}, {len(errors)} server errors"
    )
    assert errors == []
    assert 1011 not in fuzz.closes
    assert sum(fuzz.closes.values()) == len(CLOSING)
    assert fuzz.silent == []  # every frame had an answer


# --- the same on the ASGI application, frame by frame ---------------------------------------


def converse(cookie: str, *frames: dict) -> list[dict]:
    """Send ASGI receive events to a socket of the studio, each followed by a ping; returns
    what came back (the messages and, at the end, the close if any)."""
    from studio.asgi import application

    async def run() -> list[dict]:
        communicator = WebsocketCommunicator(
            application,
            "/ws/live/",
            headers=[
                (b"host", HOST.encode()),
                (b"origin", f"http://{HOST}".encode()),
                (b"cookie", cookie.encode()),
            ],
        )
        accepted, _ = await communicator.connect(timeout=5)
        assert accepted
        assert (await communicator.receive_json_from(timeout=5))["type"] == "hello"
        out: list[dict] = []
        for frame in frames:
            await communicator.send_input({"type": "websocket.receive", **frame})
            await communicator.send_input(
                {"type": "websocket.receive", "text": '{"action": "ping"}'}
            )
            while True:
                message = await communicator.receive_output(timeout=5)
                if message["type"] == "websocket.close":
                    out.append(message)
                    await communicator.wait(timeout=5)
                    return out
                answer = json.loads(message["text"])
                if answer == {"type": "pong"}:
                    break
                out.append(answer)
        await communicator.disconnect()
        return out

    return async_to_sync(run)()


@pytest.fixture
def cookie(transactional_db, user) -> str:
    return session_cookie(user)


def text(payload: object) -> dict:
    return {"text": payload if isinstance(payload, str) else json.dumps(payload)}


def test_garbage_text_frames_are_answered_and_the_socket_stays_open(cookie):
    answers = converse(
        cookie,
        text("not json"),
        text(""),
        text("[" * 50_000),
        text("[" * 100_000),
        text("9" * 5_000),
        text([1]),
        text({"action": "nope"}),
        text({"action": ["watch_flow"]}),
    )
    assert [a["type"] for a in answers] == ["error"] * 8
    messages = [a["message"] for a in answers]
    assert messages[:2] == ["invalid JSON"] * 2
    assert messages[2] == "invalid JSON"  # nested deeper than the decoder goes
    assert messages[3] == "message too large"
    assert messages[4] == "invalid JSON"
    assert messages[5] == "send a JSON object"
    assert messages[6].startswith("unknown action") and messages[7] == messages[6]


def test_a_binary_frame_is_answered_and_the_socket_stays_open(cookie):
    answers = converse(cookie, {"bytes": b'{"action": "ping"}'}, {"bytes": b"\xff"})
    assert answers == [{"type": "error", "message": ANSWER_BINARY}] * 2


@pytest.mark.parametrize(
    "action,field",
    [("watch_flow", "flow"), ("watch_flow", "since"), ("watch_ltm", "run"), ("watch_ltm", "since")],
)
def test_wrong_types_and_ranges_are_refused(cookie, user, action, field):
    flow = api.start_flow(api.create_routine("r", ["t_wait"], owner=user), user)  # visible
    valid = {"flow": flow.pk, "run": str(api.start_ltm("park_ltm", user)), "since": 0}
    wrong = ["7", [7], {"7": 7}, LONG, -LONG, -1, 1.5, True, "\x00", "\ud800", "x" * 20_000]
    answers = converse(cookie, *(text({"action": action, **valid, field: v}) for v in wrong))
    assert [a["type"] for a in answers] == ["error"] * len(wrong), answers
    # told apart from a flow or run that is not there (or not theirs): "not found"
    said = {"flow": "invalid flow id", "run": "invalid run id"}.get(field, "invalid since")
    assert all(a["message"].startswith(said) for a in answers), answers
    # and the valid frame is watched
    answers = converse(cookie, text({"action": action, **valid}))
    watching = [a for a in answers if a["type"] == "watching"]
    assert watching and watching[0]["stream"] == action.removeprefix("watch_"), answers


def test_a_dashboard_says_what_it_shows_in_the_right_form(cookie, user):
    flow = api.start_flow(api.create_routine("r", ["t_wait"], owner=user), user)
    wrong_rows = ["7", [[flow.pk, 0]], LONG, True, {"7": "1"}, {"7": -1}, {"7": LONG}]
    wrong_rows += [{"07": 1}, {"-7": 1}, {"0": 1}, {"7\x00": 1}, {"\ud800": 1}, {"1e3": 1}]
    wrong_rows += [{str(2**63): 1}, {"٣": 1}, {str(n): 0 for n in range(1, 502)}]  # over 500
    wrong_after = ["7", [7], {}, LONG, -1, 1.5, True, "\x00"]
    frames = [text({"action": "watch_dashboard", "rows": rows}) for rows in wrong_rows]
    frames += [text({"action": "watch_dashboard", "after": after}) for after in wrong_after]
    answers = converse(cookie, *frames)
    assert [a["message"].split(":")[0] for a in answers] == ["invalid rows"] * len(wrong_rows) + [
        "invalid after"
    ] * len(wrong_after), answers
    # 500 rows of flows that are not there (or not theirs) are fine: they are no one's rows
    many = {str(n): 0 for n in range(10**6, 10**6 + 500)}
    answers = converse(cookie, text({"action": "watch_dashboard", "rows": many, "after": 0}))
    assert [a["type"] for a in answers] == ["row", "watching"] and answers[0]["id"] == flow.pk
