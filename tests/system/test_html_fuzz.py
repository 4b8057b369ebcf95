"""Fuzzing the studio's HTML forms and query parameters, which the REST fuzz (schemathesis,
tests/system/test_rest_fuzz.py) does not reach: every form field and GET parameter of every page,
one at a time, with a fixed list of nasty values — NUL characters and lone surrogates (as
text, as raw bytes and as JSON escapes), invalid UTF-8, integers out of any column's range,
JSON nested 1,000 levels deep, NaN, oversized text — as a signed-in user (the test client
skips the CSRF check; the requests reach the views). No answer may be a 5xx or an exception,
and nothing a refused request sent may have been stored, half or whole. Deterministic: the
same requests every run, in the same order. Run with -s to see the counts. On PostgreSQL (the
scale-out pass) it sends the values a database could take differently (see VALUES)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection
from django.test import Client

from engine import api, diagram, jsonsafe
from engine.flows.status import FlowState
from engine.ltm.models import LtmEvent, LtmInstance, LtmRun
from engine.ltm.store import STORED_DEPTH
from engine.models import Flow, FlowEvent, Routine, RoutineStep, Schedule
from studio.models import ApiToken

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]

DEEP_ARRAY = "[" * 1000 + "]" * 1000
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000
TOO_DEEP = '{"a":' * 65 + "1" + "}" * 65  # one level more than allowed
HUGE = "9223372036854775808"  # one more than the largest database integer

# Each value, and whether a database could take it differently from another (store it, refuse
# it, compare it): True for NUL characters, lone surrogates, numbers out of range, NaN, depth
# limits, oversized text. The others are refused or read in Python before any query (a
# parser's error, text like any other), so the PostgreSQL pass (tests/test_scaleout.py) leaves
# them to the embedded run, where every value goes to every field.
VALUES: list[tuple[str | bytes, bool]] = [
    # text
    ("", False),
    ("\x00", True),
    ("a\x00b", True),
    ("x\udfffy", True),  # sent as its UTF-8-like bytes, which the server reads as U+FFFD
    ("\u202e<script>alert(1)</script>", False),
    ("\r\n", False),
    ("x" * 100_000, True),
    # raw bytes in the body: invalid UTF-8, an encoded surrogate, an overlong NUL
    (b"\xff\xfe", False),
    (b"\xed\xa0\x80", True),
    (b"\xc0\x80", False),
    # integers
    ("0", True),
    ("-1", True),
    ("1.5", True),
    (HUGE, True),
    ("1" * 5000, True),
    ("1e400", True),
    ("²", True),
    # JSON
    ("[]", False),
    ('"text"', False),
    ('{"a": 1}', False),
    ("{", False),
    ("NaN", True),
    ('{"a": NaN}', True),
    ("[1e999]", True),
    ('{"a": ' + "9" * 5000 + "}", True),
    ('{"a": "\\u0000"}', True),
    ('{"\\u0000": 1}', True),
    ('"\\u0000"', True),
    ('{"a": "\\ud800"}', True),
    ('{"\\udfff": "x"}', True),
    ('["\\ud83d"]', True),
    ('{"self": 1, "payload": 2, "runtime": 3}', False),
    (DEEP_ARRAY, False),
    (DEEP_OBJECT, False),
    (TOO_DEEP, True),
    ("[" * 50_000, False),
]
NASTY: list[str | bytes] = [value for value, _ in VALUES]
NASTY_FOR_DATABASES: list[str | bytes] = [value for value, differs in VALUES if differs]

Fields = list[tuple[str, str | bytes]]


def encode(fields: Fields) -> str:
    """A urlencoded body or query string sending exactly these bytes (str values as UTF-8,
    lone surrogates included, as a careless or hostile client would)."""
    parts = []
    for key, value in fields:
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
        parts.append(f"{quote(key, safe='')}={quote(raw, safe='')}")
    return "&".join(parts)


@dataclass
class Endpoint:
    name: str
    method: str
    url: Callable[[], str]
    base: Callable[[], Fields]
    fuzzed: list[str]
    who: str = "alice"  # alice (owner), staff, or anon


@dataclass
class World:
    alice: Any
    staff: Any
    routines: dict[str, Routine]
    current: dict[str, Any] = field(default_factory=dict)

    def flow(self, pool: str, routine: str, states: set[str]) -> Flow:
        """The pool's flow if it is still in one of `states`, else a new one of `routine`."""
        flow = self.current.get(pool)
        if flow is not None:
            flow.refresh_from_db()
        if flow is None or flow.state not in states:
            flow = api.start_flow(self.routines[routine], self.alice)
            assert flow.state in states
            self.current[pool] = flow
        return flow

    def run(self, pool: str, ltm: str, ok: Callable[[LtmRun], bool]) -> LtmRun:
        run = self.current.get(pool)
        if run is not None:
            run.refresh_from_db()
        if run is None or not ok(run):
            run = LtmRun.objects.get(pk=api.start_ltm(ltm, self.alice))
            self.current[pool] = run
        return run

    def parked(self, pool: str) -> LtmRun:
        def ok(run: LtmRun) -> bool:
            return (
                run.state != "killed"
                and run.instances.filter(fqn="park_ltm.parked", status="active").exists()
            )

        return self.run(pool, "park_ltm", ok)


def endpoints(w: World) -> list[Endpoint]:
    waiting = {FlowState.WAITING}
    builder = ["name", "description", "op", "step_key", "step_script", "step_label"]
    builder.append("step_params")
    edit = w.routines["edit"]

    def builder_base() -> Fields:
        return [
            ("name", "Fuzzed"),
            ("description", ""),
            ("op", "save"),
            ("step_key", "k0"),
            ("step_script", "t_echo"),
            ("step_label", "Greet"),
            ("step_params", '{"n": 1}'),
        ]

    def edit_base() -> Fields:
        edit.refresh_from_db()
        return [*builder_base(), ("routine_version", str(edit.version))]

    def input_base(pool: str, routine: str, name: str, value: str) -> Callable[[], Fields]:
        return lambda: [(name, value), ("version", str(w.flow(pool, routine, waiting).version))]

    allowed = {
        "move": waiting,
        "retry": {FlowState.FAILED},
        "skip": waiting,
        "kill": waiting,
        "resume": waiting,
    }
    routine_for = {"retry": "fail"}
    # The fields each override's form has (retry and resume take no reason, only move a step).
    form_fields = {
        "move": ["version", "reason", "position"],
        "retry": ["version"],
        "skip": ["version", "reason"],
        "kill": ["version", "reason"],
        "resume": ["version"],
    }
    overrides = []
    for action, states in allowed.items():
        routine = routine_for.get(action, "wait")

        def flow_of(action: str = action, routine: str = routine, states=states) -> Flow:
            return w.flow(f"act-{action}", routine, states)

        overrides += [
            Endpoint(
                f"override {action}",
                "post",
                lambda flow_of=flow_of, action=action: f"/flows/{flow_of().pk}/act/{action}/",
                lambda flow_of=flow_of: [
                    ("version", str(flow_of().version)),
                    ("reason", "fuzz"),
                    ("position", "0"),
                ],
                form_fields[action],
            ),
            Endpoint(
                f"confirm {action}",
                "get",
                lambda flow_of=flow_of, action=action: f"/flows/{flow_of().pk}/confirm/{action}/",
                lambda flow_of=flow_of: [("version", str(flow_of().version))],
                ["version"],
            ),
        ]
    filters = ["q", "state", "routine", "owner", "page"]

    def filters_base() -> Fields:
        return [("q", ""), ("state", ""), ("routine", ""), ("owner", ""), ("page", "1")]

    return [
        # Pages first, while the lists they show are short.
        Endpoint("dashboard", "get", lambda: "/", filters_base, filters, who="staff"),
        Endpoint("waiting for me", "get", lambda: "/waiting/", filters_base, filters),
        Endpoint(
            "notifications", "get", lambda: "/notifications/", lambda: [("page", "1")], ["page"]
        ),
        Endpoint(
            "flow live",
            "get",
            lambda: f"/flows/{w.flow('input', 'wait', waiting).pk}/live/",
            lambda: [("version", "1")],
            ["version"],
        ),
        Endpoint(
            "ltm run page",
            "get",
            lambda: f"/ltm-runs/{w.parked('fire').pk}/",
            lambda: [("version", "1")],
            ["version"],
        ),
        Endpoint(
            "login",
            "post",
            lambda: "/accounts/login/",
            lambda: [("username", "alice"), ("password", "pw-alice"), ("next", "/")],
            ["username", "password", "next"],
            who="anon",
        ),
        Endpoint("login page", "get", lambda: "/accounts/login/", lambda: [], ["next"], "anon"),
        Endpoint("builder new", "post", lambda: "/routines/new/", builder_base, builder),
        Endpoint(
            "builder edit",
            "post",
            lambda: f"/routines/{edit.pk}/edit/",
            edit_base,
            [*builder, "routine_version"],
        ),
        Endpoint(
            "builder preview",
            "post",
            lambda: "/routines/preview/",
            builder_base,
            ["name", "step_script", "step_label"],
        ),
        Endpoint(
            "start flow",
            "post",
            lambda: f"/routines/{w.routines['start'].pk}/start/",
            lambda: [("initial_data", '{"name": "Ada"}')],
            ["initial_data"],
        ),
        Endpoint(
            "input fields",
            "post",
            lambda: f"/flows/{w.flow('input', 'wait', waiting).pk}/input/",
            input_base("input", "wait", "answer", "yes"),
            ["answer", "version"],
        ),
        Endpoint(
            "input json",
            "post",
            lambda: f"/flows/{w.flow('json', 'json', waiting).pk}/input/",
            input_base("json", "json", "input", '{"ok": true}'),
            ["input", "version"],
        ),
        Endpoint(
            "input typed form",
            "post",
            lambda: f"/flows/{w.flow('form', 'form', waiting).pk}/input/",
            lambda: [
                ("approved", "on"),
                ("amount", "12.50"),
                ("ship_on", "2030-01-02"),
                ("size", "l"),
                ("quantity", "3"),
                ("version", str(w.flow("form", "form", waiting).version)),
            ],
            ["approved", "amount", "ship_on", "size", "quantity", "version"],
        ),
        Endpoint(
            "input decision",
            "post",
            lambda: f"/flows/{w.flow('decide', 'decide', waiting).pk}/input/",
            lambda: [
                ("decision", "reject"),
                ("comment", "too dear"),
                ("amount", "3"),
                ("version", str(w.flow("decide", "decide", waiting).version)),
            ],
            ["decision", "comment", "amount", "version"],
        ),
        Endpoint(
            "input from the waiting list",
            "post",
            lambda: f"/flows/{w.flow('listed', 'decide', waiting).pk}/input/",
            lambda: [
                ("decision", "approve"),
                ("comment", ""),
                ("from", "waiting"),
                ("list", "q=&routine="),
                ("version", str(w.flow("listed", "decide", waiting).version)),
            ],
            ["decision", "comment", "from", "list", "version"],
        ),
        *overrides,
        Endpoint("token create", "post", lambda: "/tokens/", lambda: [("name", "fuzz")], ["name"]),
        Endpoint(
            "schedule create",
            "post",
            lambda: "/schedules/",
            lambda: [
                ("routine", str(w.routines["start"].pk)),
                ("cron", "0 9 * * 1-5"),
                ("timezone", "Europe/Berlin"),
                ("data", '{"a": 1}'),
                ("name", "fuzz"),
                ("owner", "alice"),
            ],
            ["routine", "cron", "timezone", "data", "name", "owner"],
            who="staff",
        ),
        Endpoint(
            "schedule hint",
            "get",
            lambda: "/schedules/hint/",
            lambda: [("cron", "*/5 * * * *"), ("timezone", "UTC")],
            ["cron", "timezone"],
        ),
        *[
            Endpoint(
                f"bulk {step}",
                "post",
                lambda step=step: f"/bulk/{step}/",
                lambda: [
                    ("action", "kill"),
                    ("ids", str(w.flow("bulk", "wait", waiting).pk)),
                    ("reason", "fuzz"),
                    ("state", "waiting"),
                    ("q", "Ask"),
                ],
                ["action", "ids", "reason", "all", "state", "routine", "owner", "q"],
            )
            for step in ("preview", "start")
        ],
        Endpoint(
            "ltm start",
            "post",
            lambda: "/ltms/my_ltm/start/",
            lambda: [("payload", '{"order": 1}')],
            ["payload"],
        ),
        Endpoint(
            "ltm fire",
            "post",
            lambda: f"/ltm-runs/{w.parked('fire').pk}/act/fire/",
            lambda: [("label", "release"), ("payload", "{}")],
            ["label", "payload"],
        ),
        Endpoint(
            "ltm kill",
            "post",
            lambda: f"/ltm-runs/{w.parked('kill').pk}/act/kill/",
            lambda: [("reason", "fuzz")],
            ["reason"],
        ),
    ]


def replaced(base: Fields, name: str, value: str | bytes) -> Fields:
    """`base` with field `name` replaced by `value` (or added where it is not)."""
    return [*((key, item) for key, item in base if key != name), (name, value)]


NASTY_PATHS = [
    "/flows/" + HUGE + "/",
    "/flows/" + "9" * 5000 + "/",
    "/flows/0/live/",
    "/flows/" + HUGE + "/input/",
    "/notifications/?page=" + HUGE,
    "/routines/" + HUGE + "/edit/",
    "/routines/" + HUGE + "/start/",
    "/tokens/" + HUGE + "/revoke/",
    "/ltms/%00/",
    "/ltms/%ED%A0%80/",
    "/ltms/" + "x" * 5000 + "/",
    "/ltm-runs/00000000-0000-0000-0000-000000000000/",
    "/ltm-runs/not-a-uuid/",
    "/flows/1/confirm/%00/",
    "/flows/1/act/%FF/",
    "/schedules/" + HUGE + "/confirm/pause/",
    "/schedules/" + HUGE + "/act/delete/",
    "/schedules/1/act/%FF/",
    "/schedules/?page=" + HUGE,
    "/bulk/" + HUGE + "/",
    "/bulk/0/",
    "/bulk/?page=" + HUGE,
]


@pytest.fixture
def world(settings, django_user_model, monkeypatch):
    # Fast password hashing: the fuzz signs in hundreds of times.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Diagrams: the DOT text is built (labels escaped, encoded as for Graphviz), but not
    # drawn: a `dot` process per request would take minutes. Their drawing of odd labels is
    # covered in tests/system/test_bad_input.py.
    monkeypatch.setattr(diagram, "_render", lambda text: text.encode("utf-8") and "<svg></svg>")
    alice = django_user_model.objects.create_user("alice", password="pw-alice")
    staff = django_user_model.objects.create_user("root", password="pw-root", is_staff=True)
    routines = {
        "wait": api.create_routine("Ask", ["t_wait", "t_echo"], owner=alice),
        "json": api.create_routine("Poll", ["t_checked"], owner=alice),
        "fail": api.create_routine("Break", ["t_fail"], owner=alice),
        "start": api.create_routine("Started", ["t_echo"], owner=alice),
        "edit": api.create_routine("Edited", ["t_echo", "t_wait"], owner=alice),
        "form": api.create_routine("Order", ["t_form", "t_echo"], owner=alice),
        "decide": api.create_routine("Decide", ["t_approve", "t_echo"], owner=alice),
    }
    return World(alice, staff, routines)


def test_no_form_field_or_query_parameter_answers_5xx_or_stores_bad_input(world):
    # (The anonymous client starts every request without a cookie, as a new client would,
    # without loading the middleware again: a new client's first request did, 40 ms each.)
    clients = {"alice": Client(), "staff": Client(), "anon": Client()}
    clients["alice"].force_login(world.alice)
    clients["staff"].force_login(world.staff)
    statuses: Counter[int] = Counter()
    by_endpoint: dict[str, Counter[int]] = {}
    failures: list[str] = []
    successes: Counter[str] = Counter()
    requests = 0

    def send(endpoint: Endpoint, fields: Callable[[], Fields], htmx: bool, label: str) -> None:
        nonlocal requests
        requests += 1
        client = clients[endpoint.who]
        if endpoint.who == "anon":
            client.cookies.clear()
        headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
        try:
            url = endpoint.url()  # first: it may make a new flow, which the fields name
            body = encode(fields())
            if endpoint.method == "get":
                response = client.get(f"{url}?{body}" if body else url, **headers)
            else:
                form = "application/x-www-form-urlencoded"
                response = client.post(url, body, content_type=form, **headers)
        except Exception as exc:  # noqa: BLE001  (every exception is a finding)
            failures.append(f"{endpoint.name} {label}: {type(exc).__name__}: {exc}"[:300])
            return
        statuses[response.status_code] += 1
        by_endpoint.setdefault(endpoint.name, Counter())[response.status_code] += 1
        # What a successful post answers: a redirect (HX-Redirect for htmx: a flow started),
        # the saved builder with its new URL, the token page showing the new token.
        stored = response.status_code in {201, 302} or "HX-Push-Url" in response.headers
        stored |= "HX-Redirect" in response.headers
        stored |= endpoint.name == "token create" and response.status_code == 200
        if response.status_code >= 500:
            failures.append(f"{endpoint.name} {label}: HTTP {response.status_code}")
        elif endpoint.method == "post" and stored:
            successes[endpoint.name] += 1

    # Every value on SQLite; on PostgreSQL those a database could take differently.
    values = NASTY if connection.vendor == "sqlite" else NASTY_FOR_DATABASES
    for endpoint in endpoints(world):
        send(endpoint, endpoint.base, False, "base")
        for name in endpoint.fuzzed:
            for index, value in enumerate(values):
                fields = lambda e=endpoint, n=name, v=value: replaced(e.base(), n, v)  # noqa: E731
                send(endpoint, fields, htmx=index % 2 == 1, label=f"{name}={value[:30]!r}")
        # No fields at all, and every field twice.
        send(endpoint, list, False, "empty")
        send(endpoint, lambda e=endpoint: e.base() * 2, True, "doubled")

    # Bodies of the wrong shape: steps whose lists disagree, many steps, unknown fields.
    builder = next(e for e in endpoints(world) if e.name == "builder new")
    shapes: list[Fields] = [
        [("name", "Shapes"), ("op", "save"), *[("step_script", "t_echo")] * 3],
        [("name", "Shapes"), ("op", "save"), ("step_label", "only a label")],
        [("name", "Shapes"), ("op", "up:k0"), ("step_key", "k0"), ("step_script", "t_echo")],
        [("name", "Shapes"), ("op", "down:k9"), ("step_key", "k0"), ("step_script", "t_echo")],
        [("name", "Shapes"), ("op", "remove:"), ("step_script", "t_echo")],
        [("name", "Shapes"), ("op", "add:"), ("op", "add:t_echo")],
        [("name", "Shapes"), ("op", "save"), *[("step_script", "t_echo")] * 400],
        [("unknown", "x"), ("csrfmiddlewaretoken", "\x00")],
    ]
    for index, shape in enumerate(shapes):
        send(builder, lambda shape=shape: shape, htmx=index % 2 == 0, label=f"shape {index}")
    for path in NASTY_PATHS:
        for method in ("get", "post"):
            target = Endpoint("paths", method, lambda path=path: path, list, [])
            send(target, list, method == "post", path[:40])
    # Revoke every token the fuzz created (then again: they are gone).
    for token in list(ApiToken.objects.all()) * 2:
        revoke = f"/tokens/{token.pk}/revoke/"
        send(Endpoint("token revoke", "post", lambda r=revoke: r, list, []), list, False, revoke)
    # The LTM actions without fields, on a run with a failed state.
    failing = api.start_ltm("failing_ltm", world.alice)
    for action in ("retry", "retry", "kill", "retry", "fire", "nope"):
        url = f"/ltm-runs/{failing}/act/{action}/"
        send(Endpoint(f"ltm {action}", "post", lambda u=url: u, list, []), list, False, url)

    # The schedule actions, which take no fields, on one of the schedules the fuzz made.
    made = Schedule.objects.order_by("pk").first()
    assert made is not None
    for action in ("pause", "pause", "resume", "nope", "delete", "resume", "delete"):
        for kind in ("confirm", "act"):
            url = f"/schedules/{made.pk}/{kind}/{action}/"
            method = "get" if kind == "confirm" else "post"
            send(Endpoint(f"schedule {kind}", method, lambda u=url: u, list, []), list, True, url)

    print(f"\nHTML fuzz: {requests} requests, status counts {dict(sorted(statuses.items()))}")
    for name, counts in by_endpoint.items():
        print(f"  {name}: {dict(sorted(counts.items()))}")
    assert not failures, f"{len(failures)} requests failed:\n" + "\n".join(failures[:40])
    assert requests > 2000

    # Nothing half-written: what the refused requests sent is nowhere, and what was stored
    # is storable alike on every database.
    assert successes["start flow"] >= 1 and successes["builder new"] >= 1
    assert Flow.objects.filter(routine=world.routines["start"]).count() == successes["start flow"]
    built = Routine.objects.exclude(pk__in=[r.pk for r in world.routines.values()])
    assert built.count() == successes["builder new"]
    edited = world.routines["edit"]
    edited.refresh_from_db()
    assert edited.version == 1 + successes["builder edit"]
    assert LtmRun.objects.filter(name="my_ltm").count() == successes["ltm start"]
    assert ApiToken.objects.count() == successes["token create"]
    assert Schedule.objects.count() == successes["schedule create"] - 1  # one was deleted
    assert not ApiToken.objects.filter(revoked=False).exists()
    assert_consistent_and_storable()


def assert_consistent_and_storable() -> None:
    def storable(value: Any, what: str) -> None:
        jsonsafe.ensure_json(value, what, max_depth=STORED_DEPTH)

    for routine in Routine.objects.all():
        storable([routine.name, routine.description], f"routine {routine.pk}")
        orders = list(routine.steps.order_by("order").values_list("order", flat=True))
        assert orders == list(range(len(orders))) and orders, f"routine {routine.pk}: {orders}"
    for step in RoutineStep.objects.all():
        storable([step.label, step.params], f"step {step.pk}")
    for flow in Flow.objects.all():
        assert flow.state in FlowState.values
        assert 0 <= flow.position < max(flow.length, 1)
        storable([flow.data, flow.input, flow.stored_results, flow.error], f"flow {flow.pk}")
        seqs = list(flow.events.order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, flow.seq + 1)), f"flow {flow.pk}: events {seqs}"
        assert flow.events.get(seq=1).kind == "flow.created"
    for event in FlowEvent.objects.all():
        storable([event.message, event.data], f"flow event {event.pk}")
    for token in ApiToken.objects.all():
        storable(token.name, f"token {token.pk}")
    for schedule in Schedule.objects.all():
        storable([schedule.name, schedule.cron, schedule.timezone, schedule.data], "schedule")
        api.validate_cron(schedule.cron)
        api.validate_time_zone(schedule.timezone)
    for run in LtmRun.objects.all():
        storable([run.global_state, run.error], f"LTM run {run.pk}")
        seqs = list(run.events.order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, run.seq + 1)), f"LTM run {run.pk}: events {seqs}"
    for instance in LtmInstance.objects.all():
        storable([instance.state, instance.params, instance.error], f"instance {instance.pk}")
    for event in LtmEvent.objects.all():
        storable(event.data, f"LTM event {event.pk}")
