"""200 XSS payloads placed in routine names, step labels, step params (and so step results),
flow data, pushed input, kill reasons and tracebacks: a headless Chromium opens every page
that shows them (dashboard, waiting list, routine list, builder, start form, each flow page)
and two live pages (a flow page and the dashboard, updated over the websocket while open).

The Content-Security-Policy forbids inline scripts and handlers, so "no alert fired" alone
could never fail. The test therefore looks at the DOM itself: no element carries an on*
handler, a <script> body or any other non-text attribute made from a payload, no link has a
javascript: URL, the CSP never had to refuse anything, and every payload is found as literal
text (a text node or a form field's value), so none was silently dropped either. A raw control
first renders one payload of each shape (each template, with each kind of code) unescaped on
a blank page without CSP, to show that these same checks do catch them when markup is not
escaped.

Tracebacks carry a payload through the catalog's `t_sleep`: its `sleep` param is passed to
float(), which raises ValueError quoting the text; the studio shows staff the traceback.
The catalog's wait reasons are fixed; the demo's `ask_approval` takes its reason from its
`question` param, so one approval waits with a payload as its reason (and a payload routine
name and step label): its decision form, its row of "Waiting for me" and the notifications
page (whose messages quote routine names, step labels and wait reasons) show them."""

from __future__ import annotations

import json
import re
import time

import pytest

from engine import api
from engine.flows.status import FlowState
from engine.models import Flow
from tests.browser.conftest import sign_in, watch_console
from tests.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.consumer, pytest.mark.django_db(transaction=True)]
WAIT = 60_000  # ms: a generous bound for the engine to act, not a speed check
COUNT = 200
ROUTINES = 20
LABELS_PER_ROUTINE = 3


def _js(marker: str, quote: str = "'") -> str:
    """Code that leaves a trace if it ever runs: it defines window.__xss itself (the test
    defines nothing), or opens a dialog."""
    if int(marker[4:]) % 3 == 0:
        return f"alert({quote}{marker}{quote})"
    return f"(window.__xss=window.__xss||[]).push({quote}{marker}{quote})"


# (template, is markup that injects something when rendered unescaped in element text)
TEMPLATES: list[tuple[str, bool]] = [
    ("<script>{js}</script>", True),
    ('<img src=x onerror="{js}">', True),
    ('"><svg onload="{js}">', True),
    ("'><svg/onload={js}>", True),
    ("javascript:{js}", False),
    ('" onmouseover="{js}" x="', False),
    ("' onfocus=\"{js}\" autofocus x='", False),
    ("</textarea><script>{js}</script>", True),
    ('</title><img src=x onerror="{js}">', True),
    ("{{{{ {js} }}}}{{% now 'Y' %}}${{7*7}}", False),
    ('<iframe srcdoc="<img src=x onerror={js}>"></iframe>', True),
    ('<a href="javascript:{js}">{m}</a>', True),
    ('<details open ontoggle="{js}">', True),
    ('＜script＞{js}＜/script＞ ‮<img src=x onerror="{js}">', True),
    ('<math><mtext></p><img src=x onerror="{js}">', True),
    ("&lt;script&gt;{js}&lt;/script&gt; %3Cscript%3E", False),
    ('<svg><a xlink:href="javascript:{js}"><text>{m}</text></a></svg>', True),
    ('<input autofocus onfocus="{js}">', True),
    ('<!--<img src=x onerror="{js}">--><img src=x onerror="{js}">', True),
    ('\\N\\G\\l<b onclick="{js}">{m} 日本語 émoji 🚀</b>', True),
    ('<body onload="{js}">', True),
    ('<object data="javascript:{js}"></object>', True),
    ('<x-el onpointerover="{js}">{m}</x-el>', True),
    (']]><img src=x onerror="{js}">', True),
    ("<style>@import 'x';</style><img src=x onerror=\"{js}\">", True),
]


def make_payloads() -> list[str]:
    payloads = []
    for n in range(COUNT):
        marker = f"XSS-{n:03d}"
        template, _ = TEMPLATES[n % len(TEMPLATES)]
        body = template.format(js=_js(marker), m=marker)
        payloads.append(body if marker in body else f"{marker} {body}")
    assert len(set(payloads)) == COUNT
    assert all(len(p) <= 190 for p in payloads)  # names and labels hold 200 characters
    return payloads


PAYLOADS = make_payloads()
MARKUP = [TEMPLATES[n % len(TEMPLATES)][1] for n in range(COUNT)]

# Where each payload goes (by index).
NAMES = range(0, 20)  # routine names
LABELS = range(20, 80)  # step labels (3 per routine)
PARAMS = range(80, 140)  # step params, echoed back as step results
INPUTS = range(140, 160)  # input pushed to t_wait, stored as {"got": ...}
KILLS = range(160, 180)  # kill reasons (the flow's error text)
TRACEBACKS = range(180, 200)  # ValueError text and traceback of a failing step

# Evaluated in each page: everything that would show a payload turned into markup or code,
# and all the text (text nodes outside script/style, and form fields' values).
INSPECT = r"""() => {
  const textAttrs = new Set(["value", "title", "xlink:title", "placeholder", "aria-label", "alt"]);
  const urlAttrs = new Set(["href", "src", "action", "formaction", "xlink:href", "data", "srcdoc"]);
  const bad = [];
  for (const el of document.querySelectorAll("*")) {
    const tag = el.tagName.toLowerCase();
    for (const a of el.attributes) {
      const name = a.name.toLowerCase();
      const value = a.value;
      if (name.startsWith("on") && value.includes("XSS-")) {
        bad.push(`<${tag} ${name}="${value}">`);
      } else if (value.includes("XSS-") && !textAttrs.has(name)) {
        bad.push(`<${tag} ${name}="${value}"> (payload outside a text attribute)`);
      }
      if (urlAttrs.has(name) && /^javascript:/i.test(value.replace(/[\u0000-\u0020]/g, ""))) {
        bad.push(`<${tag} ${name}="${value}"> (javascript: URL)`);
      }
    }
    if (tag === "script" && el.textContent.includes("XSS-")) {
      bad.push(`<script>${el.textContent}</script>`);
    }
  }
  const texts = [];
  const walker = document.createTreeWalker(document.documentElement, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const parent = walker.currentNode.parentElement;
    if (parent && /^(script|style)$/i.test(parent.tagName)) { continue; }
    texts.push(walker.currentNode.data);
  }
  for (const field of document.querySelectorAll("input, textarea")) { texts.push(field.value); }
  const traces = window.__xss === undefined ? null : Array.from(window.__xss, String);
  return {bad: bad, text: texts.join("\n"), visible: document.body.innerText, traces: traces};
}"""


def _encodings(payload: str) -> set[str]:
    """The forms a payload may take as literal text: as is, inside JSON (step results,
    event details, params) or inside a Python repr (the ValueError and its traceback)."""
    return {
        payload,
        json.dumps(payload, ensure_ascii=False)[1:-1],
        json.dumps(payload)[1:-1],
        repr(payload)[1:-1],
    }


ENCODINGS = [_encodings(p) for p in PAYLOADS]
MARKER = re.compile(r"XSS-(\d{3})")


class Watch:
    """Dialogs, page errors and CSP refusals of every page, and what was seen as text."""

    def __init__(self, csp_violations: list[str]) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.csp = csp_violations
        self.bad: list[str] = []
        self.traces: list[str] = []
        self.seen: set[int] = set()
        self.visible: set[int] = set()
        self.pages = 0

    def page(self, context):
        page = context.new_page()
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        watch_console(page, self.csp)
        return page

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def inspect(self, page, where: str) -> set[int]:
        """Check the page as it is now; the payload indexes it shows as text."""
        found = page.evaluate(INSPECT)
        self.pages += 1
        self.bad += [f"{where}: {item}" for item in found["bad"]]
        if found["traces"]:
            self.traces += [f"{where}: {item}" for item in found["traces"]]
        text = found["text"]
        here = set()
        for number in {int(m) for m in MARKER.findall(text)}:
            if number < COUNT and any(form in text for form in ENCODINGS[number]):
                here.add(number)
        self.seen |= here
        self.visible |= {int(m) for m in MARKER.findall(found["visible"]) if int(m) < COUNT}
        return here

    def visit(self, page, url: str, where: str) -> set[int]:
        page.goto(url)
        page.wait_for_load_state("load")
        return self.inspect(page, where)


# One payload of each shape: the payloads of a template differ only in their marker's digits,
# and in their code (an alert for every third marker, else a trace left in the page).
SHAPES = sorted({(n % len(TEMPLATES), n % 3 == 0): n for n in reversed(range(COUNT))}.values())


def _raw_control(browser) -> set[int]:
    """Render one payload of each shape unescaped (no CSP, a blank page) in element text and
    in a quoted attribute: the payload indexes the checks then flag."""
    context = browser.new_context()
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    flagged = set()
    for n in SHAPES:
        payload = PAYLOADS[n]
        dialogs.clear()
        page.set_content(
            f"<div>{payload}</div><p><input value=\"{payload}\"></p><p title='{payload}'>x</p>",
            wait_until="load",
        )
        page.wait_for_timeout(20)  # let error events and autofocus handlers fire
        found = page.evaluate(INSPECT)
        if found["bad"] or found["traces"] or dialogs:
            flagged.add(n)
    context.close()
    return flagged


def test_xss_payloads_render_as_text_everywhere(browser, studio, make_user, csp_violations):
    from playwright.sync_api import expect

    started = time.monotonic()
    flagged_raw = _raw_control(browser)
    assert len(SHAPES) == 2 * len(TEMPLATES)
    expected_raw = {n for n in SHAPES if MARKUP[n]}
    assert expected_raw <= flagged_raw, (
        f"the checks miss raw payloads: {sorted(expected_raw - flagged_raw)}"
    )

    staff = make_user("xss_staff", is_staff=True)  # staff: the flow page shows tracebacks
    routines = []
    for r in range(ROUTINES):
        steps = []
        for k in range(LABELS_PER_ROUTINE):
            i = r * LABELS_PER_ROUTINE + k
            steps.append(
                {
                    "script": "t_echo",
                    "label": PAYLOADS[LABELS[i]],
                    "params": {"p": PAYLOADS[PARAMS[i]], "n": i},
                }
            )
        steps.append("t_wait")
        steps.append({"script": "t_sleep", "params": {"sleep": PAYLOADS[TRACEBACKS[r]]}})
        routines.append(api.create_routine(PAYLOADS[NAMES[r]], steps, owner=staff))

    approval_steps = [
        {
            "script": "ask_approval",
            "label": PAYLOADS[LABELS[1]],
            "params": {"question": PAYLOADS[KILLS[1]]},
        }
    ]
    approval = api.start_flow(
        api.create_routine(PAYLOADS[NAMES[1]], approval_steps, owner=staff), staff
    )
    answered, killed = [], []
    for r, routine in enumerate(routines):
        data = {"note": PAYLOADS[NAMES[r]], PAYLOADS[LABELS[r]]: [PAYLOADS[PARAMS[r]]]}
        answered.append(api.start_flow(routine, staff, data=data))
        killed.append(api.start_flow(routine, staff, data=data))
    flow_ids = [f.pk for f in answered + killed]
    # Schedules of the routines, named with payloads (the page shows routine and schedule).
    schedules = [
        api.create_schedule(routine, staff, "@yearly", name=PAYLOADS[KILLS[r]])
        for r, routine in enumerate(routines[:3])
    ]

    def states() -> list[str]:
        by_id = dict(Flow.objects.filter(pk__in=flow_ids).values_list("pk", "state"))
        return [by_id[pk] for pk in flow_ids]

    assert wait_until(lambda: all(s == FlowState.WAITING for s in states()), timeout=60), (
        f"not all flows reached the wait: {states()}"
    )
    assert wait_until(lambda: Flow.objects.get(pk=approval.pk).state == FlowState.WAITING)

    watch = Watch(csp_violations)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = watch.page(context)
    sign_in(page, studio.origin, staff.username)
    origin = studio.origin
    watch.visit(page, f"{origin}/waiting/", "waiting list")

    # Live: a flow page and the dashboard are open while input, failures and kills arrive.
    flow_page = watch.page(context)
    flow_page.goto(f"{origin}/flows/{answered[0].pk}/")
    expect(flow_page.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)
    expect(flow_page.locator("#flow-input")).to_be_visible(timeout=WAIT)
    flow_page.evaluate("window.notReloaded = true")
    dashboard = watch.page(context)
    dashboard.goto(f"{origin}/")
    expect(dashboard.locator("#live-indicator")).to_have_text("Live", timeout=WAIT)
    dashboard.evaluate("window.notReloaded = true")

    api.push_input(answered[0], {"answer": PAYLOADS[INPUTS[0]]}, staff)
    expect(flow_page.locator("#flow-status")).to_contain_text("Failed", timeout=WAIT)
    expect(flow_page.locator("#flow-results")).to_contain_text(f"XSS-{INPUTS[0]:03d}")
    expect(flow_page.locator("#flow-status")).to_contain_text(f"XSS-{TRACEBACKS[0]:03d}")
    assert flow_page.evaluate("window.notReloaded") is True
    live_flow = watch.inspect(flow_page, f"flow {answered[0].pk} (live)")
    assert {INPUTS[0], TRACEBACKS[0]} <= live_flow, "the live fragment did not show the payloads"

    for r in range(1, ROUTINES):
        api.push_input(answered[r], {"answer": PAYLOADS[INPUTS[r]]}, staff)
    for r in range(ROUTINES):
        api.kill_flow(killed[r], staff, reason=PAYLOADS[KILLS[r]])
    ended = {FlowState.FAILED, FlowState.KILLED}
    assert wait_until(lambda: all(s in ended for s in states()), timeout=60), states()
    last = answered[-1].pk
    expect(dashboard.locator(f"#flow-{last}-row")).to_contain_text("Failed", timeout=WAIT)
    assert dashboard.evaluate("window.notReloaded") is True
    live_rows = watch.inspect(dashboard, "dashboard (live)")
    assert set(NAMES) <= live_rows

    # Every page, loaded afresh.
    watch.visit(page, f"{origin}/", "dashboard")
    waiting_now = watch.visit(page, f"{origin}/waiting/", "waiting list (the approval)")
    assert {NAMES[1], LABELS[1], KILLS[1]} <= waiting_now, "the approval's row lacks payloads"
    notes = watch.visit(page, f"{origin}/notifications/", "notifications")
    assert set(NAMES) <= notes, "the notifications did not show the routine names"
    assert KILLS[1] in notes, "no notification showed the approval's wait reason"
    decision = watch.visit(page, f"{origin}/flows/{approval.pk}/", "approval flow")
    assert KILLS[1] in decision and page.locator("#flow-input button[value=approve]").count()
    watch.visit(page, f"{origin}/routines/", "routine list")
    listed = watch.visit(page, f"{origin}/schedules/", "schedules")
    assert {NAMES[0], KILLS[0]} <= listed, "the schedules page lacks payloads"
    for schedule in schedules:
        url = f"{origin}/schedules/{schedule.pk}/confirm/delete/"
        watch.visit(page, url, f"schedule {schedule.pk} confirm")
    for routine in routines:
        watch.visit(page, f"{origin}/routines/{routine.pk}/edit/", f"builder {routine.pk}")
    for routine in routines[:5]:
        watch.visit(page, f"{origin}/routines/{routine.pk}/start/", f"start {routine.pk}")
    for pk in flow_ids:
        watch.visit(page, f"{origin}/flows/{pk}/", f"flow {pk}")
    page.wait_for_timeout(300)  # late error events, autofocus
    for other in (flow_page, dashboard):
        watch.inspect(other, "live page, again")
    context.close()

    missing = sorted(set(range(COUNT)) - watch.seen)
    elapsed = time.monotonic() - started
    print(
        f"\nxss: {COUNT} payloads on {watch.pages} pages, {len(watch.seen)} seen as text "
        f"({len(watch.visible)} markers visible), {len(watch.bad) + len(watch.traces)} executed "
        f"or injected, {len(watch.dialogs)} dialogs, {len(csp_violations)} CSP refusals; "
        f"raw control flagged {len(flagged_raw)}; {elapsed:.0f} s"
    )
    assert watch.dialogs == [], watch.dialogs
    assert watch.traces == [], f"payload code ran: {watch.traces}"
    assert watch.bad == [], "payloads became markup:\n" + "\n".join(watch.bad[:20])
    assert csp_violations == [], csp_violations[:10]
    assert [e for e in watch.errors if "XSS-" in e] == [], watch.errors
    assert missing == [], f"payloads never shown as text: {[PAYLOADS[n] for n in missing]}"
