"""Demo Task scripts: one of each outcome, in the spirit of the specification's SendEmail.

They are registered when this module is imported (the engine imports every installed app's
`scripts.py` at start-up) and used by the demo routines that `manage.py seed_demo` creates.
"""

from __future__ import annotations

import time

from django import forms

from engine import Task, done, kill, result, wait
from engine.forms import DecisionForm


class Greet(Task):
    """Say hello to the flow's owner; stores a greeting as the step's result."""

    name = "greet"
    label = "Greet the user"

    def perform(self):
        who = self.data.get("name") or getattr(self.user, "username", "there")
        return result(greeting=f"Hello, {who}!")


class ApprovalForm(DecisionForm):
    """Approve or Reject (a reason required to reject), with the amount approved."""

    amount = forms.DecimalField(
        required=False,
        min_value=0,
        max_digits=12,
        decimal_places=2,
        help_text="The amount you approve, if it is not the one asked for.",
    )


class AskApproval(Task):
    """Ask for a decision: Approve or Reject with a comment (and an amount).

    Step params: `question` (shown while it waits), `assign_to` (a group's name, or a list of
    names: who may decide; nobody else, not even the owner unless in it) and `timeout`
    (seconds to decide; past it the flow fails as timed out, and an operator can resume it)."""

    name = "ask_approval"
    label = "Ask for approval"
    input_form = ApprovalForm
    remind_before = 3600  # an hour before the deadline, the approvers are reminded

    def perform(self):
        if self.input is None:
            return wait(
                reason=self.params.get("question", "approval required"),
                assign_to=self.params.get("assign_to"),
                timeout=self.params.get("timeout"),
            )
        if not self.input["approved"]:
            return kill(reason=f"rejected: {self.input['comment']}")
        return result(approved=True, amount=self.input.get("amount"), comment=self.input["comment"])


class SendEmail(Task):
    """Send an email once the user is logged in to the mail service (waits for it; the
    periodic re-check sees the login in the flow's data or in pushed input)."""

    name = "send_email"
    label = "Send an email"

    def _logged_in(self):
        return bool(self.data.get("mail_login")) or bool(
            isinstance(self.input, dict) and self.input.get("mail_login")
        )

    def perform(self):
        if self._logged_in():
            try:
                return True, result(sent_to=self.data.get("email", "user@example.com"))
            except ConnectionError as e:  # pragma: no cover - a demo of the failure form
                return False, result(error=str(e))
        return True, wait(reason="login_required")

    def check(self):
        return self.perform()


class SmokeSignals(Task):
    """Ends the flow: the script ran fine, but smoke signals are preferred (a kill)."""

    name = "smoke_signals"
    label = "Refuse by smoke signal"

    def perform(self):
        return True, kill(reason="Smoke signals preferred.")


class Broken(Task):
    """Fails outside flow management (success == False); retry or skip it by hand."""

    name = "broken"
    label = "A failing step"

    def perform(self):
        try:
            # Stands for a bug in the script: a call of a name it never defined.
            raise NameError("name 'missing_function' is not defined")
        except NameError as e:
            return False, str(e)


class FinishEarly(Task):
    """Completes the flow early with `done()`: later steps never run."""

    name = "finish_early"
    label = "Finish early"

    def perform(self):
        return done(finished_at_step=self.position)


class SlowReport(Task):
    """A slow, non-blocking step: runs as its own Huey task, then resumes the flow."""

    name = "slow_report"
    label = "Build a slow report"
    blocking = False

    def perform(self):
        time.sleep(float(self.params.get("seconds", 2)))
        return result(rows=len(self.results), built_by=self.name)
