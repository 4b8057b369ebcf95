"""Example Task scripts reused across the tests (and loaded by test consumer processes)."""

from __future__ import annotations

import os
import threading
import time

from engine import Task, done, kill, result, wait


def note_performed(task: Task) -> None:
    """Crash tests count how often a step is *performed*, not only recorded: with
    TEST_PERFORM_LOG set, the scripts they use append one line per perform() (an appending
    write of one short line is atomic, so concurrent consumer processes do not interleave)."""
    path = os.environ.get("TEST_PERFORM_LOG")
    if path:
        flow = getattr(task.flow, "pk", task.flow)
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{flow} {task.position} {task.name}\n")


class Echo(Task):
    """Stores what it was given: params, position, earlier results count."""

    name = "t_echo"

    def perform(self):
        note_performed(self)
        return {"position": self.position, "params": self.params, "seen": len(self.results)}


class ReadsResults(Task):
    """Returns the positions the earlier steps' results (t_echo's) say they were at."""

    name = "t_results"

    def perform(self):
        return {"seen": [earlier["position"] for earlier in self.results]}


class ResultFields(Task):
    name = "t_result_fields"

    def perform(self):
        return result(a=1, b="two")


class ResultNone(Task):
    name = "t_result_none"

    def perform(self):
        return result()


class TupleOk(Task):
    name = "t_tuple_ok"

    def perform(self):
        return True, result(self.position * 10)


class Waiter(Task):
    """Waits until input arrives, then stores it."""

    name = "t_wait"
    input_fields = ("answer",)

    def perform(self):
        if self.input is None:
            return wait(reason="need an answer")
        return result(got=self.input)


class Checked(Task):
    """Waits; its check() resumes once the flow's data file says so."""

    name = "t_checked"

    def perform(self):
        return wait(reason="polling")

    def pickup(self):
        path = self.data.get("flag_file")
        if path and os.path.exists(path):
            return result("picked up")
        return wait(reason="polling")


class Killer(Task):
    name = "t_kill"

    def perform(self):
        return True, kill(reason="Smoke signals preferred.")


class Failer(Task):
    name = "t_fail"

    def perform(self):
        return False, "it broke"


class Raiser(Task):
    name = "t_raise"

    def perform(self):
        raise RuntimeError("boom")


class FlakyOnce(Task):
    """Fails the first time a flow performs it (per flow data key), then succeeds."""

    name = "t_flaky"
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    def perform(self):
        with self.lock:
            count = self.attempts.get(self.flow.pk, 0) + 1
            self.attempts[self.flow.pk] = count
        if count == 1:
            raise ValueError("first attempt fails")
        return result(attempt=count)


class Finisher(Task):
    name = "t_done"

    def perform(self):
        return done("early")


class Offloaded(Task):
    """A non-blocking step."""

    name = "t_offloaded"
    blocking = False

    def perform(self):
        note_performed(self)
        time.sleep(float(self.params.get("sleep", 0)))
        return result(offloaded=self.position)


class Sleeper(Task):
    """A blocking step that takes a little while (for crash tests)."""

    name = "t_sleep"

    def perform(self):
        note_performed(self)
        time.sleep(float(self.params.get("sleep", 0.05)))
        return {"slept": self.position}


class OnlyOnce(Task):
    """Must never run twice: an interrupted run stops the flow FAILED as interrupted."""

    name = "t_once"
    rerunnable = False

    def perform(self):
        note_performed(self)
        time.sleep(float(self.params.get("sleep", 0)))
        return "once"


class ReturnsObject(Task):
    """Returns a non-JSON value, stored pickled and signed."""

    name = "t_object"

    def perform(self):
        return {1, 2, 3}


class NastyOutput(Task):
    """Returns, raises or waits with what no database stores alike (`params["how"]`)."""

    name = "t_nasty"
    TEXT = "a\x00b\ud800c"

    def perform(self):
        how = self.params.get("how", "return")
        if how == "raise":
            raise ValueError(self.TEXT)
        if how == "wait" and self.input is None:
            return wait(reason=self.TEXT * 300)
        if how == "deep":
            nested: list = []
            for _ in range(5000):
                nested = [nested]
            return nested
        if how == "nan":
            return {"x": float("nan")}
        return {"text": self.TEXT, "input": self.input}


# -- human steps ----------------------------------------------------------------------------

from django import forms  # noqa: E402

from engine.forms import DecisionForm  # noqa: E402


class OrderForm(forms.Form):
    approved = forms.BooleanField(required=False, help_text="Tick to approve")
    amount = forms.DecimalField(min_value=0, max_digits=10, decimal_places=2)
    ship_on = forms.DateField(required=False)
    size = forms.ChoiceField(choices=[("s", "Small"), ("l", "Large")])
    quantity = forms.IntegerField(min_value=1, max_value=99, initial=1)


class TypedInput(Task):
    """Waits for an OrderForm; stores what it got."""

    name = "t_form"
    input_form = OrderForm

    def perform(self):
        if self.input is None:
            return wait("fill in the order")
        return result(self.input)


class Approval(DecisionForm):
    amount = forms.DecimalField(min_value=0, max_digits=10, decimal_places=2, required=False)


class Approve(Task):
    """A decision, assigned and with a deadline as its params say (the convention: the step's
    params `assign_to` and `timeout` are handed to wait())."""

    name = "t_approve"
    input_form = Approval
    remind_before = 1

    def perform(self):
        if self.input is None:
            return wait(
                "approve the order",
                assign_to=self.params.get("assign_to"),
                timeout=self.params.get("timeout"),
            )
        if not self.input["approved"]:
            return kill(f"rejected: {self.input['comment']}")
        return result(self.input)


class HiddenApproval(Approve):
    """Like t_approve, but its assignees do not see the flow's earlier results."""

    name = "t_approve_hidden"
    results_visible_to_assignees = False


class TimesOut(Task):
    """Waits with a deadline; on_timeout does what params["on_timeout"] says."""

    name = "t_times_out"

    def perform(self):
        if self.input is not None:
            return result({"answered": self.input})
        return wait("answer in time", timeout=self.params.get("timeout", 1))

    def on_timeout(self):
        note_performed(self)
        then = self.params.get("on_timeout", "result")
        if then == "kill":
            return kill("nobody answered")
        if then == "wait":
            return wait("still waiting", timeout=self.params.get("timeout", 1))
        return result("timed out")


class PlainDeadline(Task):
    """Waits with a deadline and says nothing of what happens then."""

    name = "t_plain_deadline"

    def perform(self):
        if self.input is not None:
            return result(self.input)
        return wait("answer in time", timeout=self.params.get("timeout", 1))


# --- recovery: retries, time limits, idempotency keys ---------------------------------------

# Every attempt of the retry scripts, as (flow id, position, attempt, idempotency key): inline
# tests read it; consumer tests read the perform log instead.
ATTEMPTS: list[tuple[int, int, int, str]] = []


def note_attempt(task: Task) -> None:
    """Keep each attempt in ATTEMPTS and, with TEST_PERFORM_LOG set, in a file beside the
    perform log (one line per attempt) that consumer tests read with `attempts_logged`."""
    ATTEMPTS.append((task.flow.pk, task.position, task.attempt, task.idempotency_key))
    path = os.environ.get("TEST_PERFORM_LOG")
    if path:
        line = f"{task.flow.pk} {task.position} {task.attempt} {task.idempotency_key}\n"
        with open(path + ".attempts", "a", encoding="utf-8") as log:
            log.write(line)


def attempts_logged(perform_log: str) -> list[tuple[int, int, int, str]]:
    """The attempts consumer processes made, in order (see `note_attempt`)."""
    try:
        with open(perform_log + ".attempts", encoding="utf-8") as log:
            lines = log.read().splitlines()
    except FileNotFoundError:
        return []
    rows = (line.split() for line in lines)
    return [(int(flow), int(step), int(attempt), key) for flow, step, attempt, key in rows]


class Flaky(Task):
    """Fails while its attempt is at most params["fail_until"] (default 2), the way
    params["how"] says: "raise" (ValueError), "connection" (ConnectionError), "false"
    (a (False, value) return) or "kill"; then stores its attempt and idempotency key.
    Retried at once, three times."""

    name = "t_retried"
    retries = 3

    def perform(self):
        note_attempt(self)
        if self.attempt <= self.params.get("fail_until", 2):
            how = self.params.get("how", "raise")
            if how == "false":
                return False, f"not yet (attempt {self.attempt})"
            if how == "kill":
                return kill("no point retrying")
            if how == "connection":
                raise ConnectionError(f"the service hung up (attempt {self.attempt})")
            raise ValueError(f"broken (attempt {self.attempt})")
        return {"attempt": self.attempt, "key": self.idempotency_key}


class FlakyLater(Flaky):
    """As t_retried, but retried after 60 s, then 120 s (backoff 2), with no jitter."""

    name = "t_retried_later"
    retries = 2
    retry_delay = 60
    retry_backoff = 2
    retry_jitter = 0


class FlakyConnection(Flaky):
    """As t_retried, retrying only ConnectionError."""

    name = "t_retried_connection"
    retry_on = (ConnectionError,)


class Slow(Task):
    """Sleeps params["sleep"] seconds (on attempts up to params["slow_until"], default every
    one), with a time limit of params-independent 0.5 s; then stores its attempt."""

    name = "t_slow"
    time_limit = 0.5

    def perform(self):
        note_attempt(self)
        if self.attempt <= self.params.get("slow_until", 1000):
            time.sleep(self.params.get("sleep", 2))
        return {"attempt": self.attempt}


class SeesItsDeadline(Task):
    """A minute's time limit; stores the step's deadline as its flow's row holds it while the
    step performs (the sweep reads it there from another process)."""

    name = "t_sees_deadline"
    time_limit = 60

    def perform(self):
        from engine.models import Flow

        deadline = Flow.objects.values_list("step_deadline", flat=True).get(pk=self.flow.pk)
        return {"deadline": None if deadline is None else deadline.isoformat()}


# A test's time_machine traveller (tick=False) that `t_row_seen` moves on, or None.
clock = None


class RowSeen(Task):
    """Stores its flow's `updated` and `lease_until` as the row holds them while the step
    performs, then moves the test's clock on by params["then"] seconds."""

    name = "t_row_seen"

    def perform(self):
        from engine.models import Flow

        updated, lease = Flow.objects.values_list("updated", "lease_until").get(pk=self.flow.pk)
        if clock is not None:
            clock.shift(self.params.get("then", 0))
        return {"updated": updated.isoformat(), "lease_until": lease.isoformat()}


class SlowOffloaded(Slow):
    """As t_slow, offloaded to its own job."""

    name = "t_slow_offloaded"
    blocking = False


# --- the studio's recovery pages: a retrying flow, a rerun with edits, a held step ----------


class UiNeedsOk(Task):
    """Fails until the flow's data says {"ok": true}; retried three times, an hour apart (a
    flow that stays RETRYING until someone retries it now); stores its attempt and params."""

    name = "t_ui_needs_ok"
    retries = 3
    retry_delay = 3600
    retry_backoff = 1
    retry_jitter = 0

    def perform(self):
        if not self.data.get("ok"):
            raise ValueError(f"data.ok is not set (attempt {self.attempt})")
        return {"attempt": self.attempt, "params": self.params}


class UiHold(Task):
    """Runs (holding its flow) until the file params["release"] exists, or params["cap"]
    seconds (default 120) passed; a time limit of an hour, retried once."""

    name = "t_ui_hold"
    retries = 1
    time_limit = 3600

    def perform(self):
        release = self.params.get("release", "")
        stop = time.monotonic() + float(self.params.get("cap", 120))
        while time.monotonic() < stop and not (release and os.path.exists(release)):
            time.sleep(0.05)
        return {"released": bool(release and os.path.exists(release))}
