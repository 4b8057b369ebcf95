"""What a routine's versions page and the move of a flow onto another version show, from
the signed-in user and plain arguments (never a request), as `studio.web.pages` does for the
other pages: the versions of a routine with any two side by side, and the confirmation of a
version move with its preview (the two versions side by side, where the flow goes on, which
results it keeps and drops). Everything here reaches the engine through `engine.api`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms

from engine import api
from engine.models import Flow, Routine, RoutineVersion
from studio.web.forms import TextField

# What the side-by-side diff says of a row's changes.
CHANGE_WORDS = {
    "added": "added",
    "removed": "removed",
    "moved": "moved",
    "label": "renamed",
    "script": "script changed",
    "params": "params changed",
    "overrides": "retry settings changed",
}


def _step_cell(step: api.DiffStep | None, changes: tuple[str, ...]) -> dict[str, Any] | None:
    if step is None:
        return None
    return {
        "step": step,
        "label_changed": "label" in changes,
        "script_changed": "script" in changes,
        "params_changed": "params" in changes,
        "overrides_changed": "overrides" in changes,
    }


def diff_rows(
    diff: api.VersionDiff, *, left_mark: int | None = None, right_mark: int | None = None
) -> list[dict[str, Any]]:
    """The rows of a diff as its partial shows them: each side's step (None where the step
    is only on the other side), the words of what changed, and the marked step of each side
    (a flow's current step on the left, where it goes on on the right)."""
    rows = []
    for row in diff.rows:
        words = [CHANGE_WORDS[change] for change in row.changes]
        if row.params_changed:
            words[row.changes.index("params")] += ": " + ", ".join(row.params_changed)
        rows.append(
            {
                "kind": row.kind,
                "moved": "moved" in row.changes,
                "left": _step_cell(row.left, row.changes),
                "right": _step_cell(row.right, row.changes),
                "words": words,
                "left_marked": row.left is not None and row.left.position == left_mark,
                "right_marked": row.right is not None and row.right.position == right_mark,
            }
        )
    return rows


def _number(value: Any) -> int | None:
    return api.parse_id(value) if isinstance(value, str) else None


# --- a routine's versions page -------------------------------------------------------------------


def routine_versions(routine: Routine, params: Any) -> tuple[dict[str, Any], int]:
    """The versions page of `routine` for the query `params` (`a` and `b`: the versions
    compared; by default the one before the current and the current): the list of versions
    (number, date, author, step count) and the two side by side. A version the routine does
    not have is an error naming those it has (status 400), and the default is compared."""
    versions = list(api.routine_versions(routine))
    numbers = [version.number for version in versions]
    current = routine.version if routine.version in numbers else (numbers[0] if numbers else 0)
    before = [number for number in numbers if number < current]
    defaults = {"a": before[0] if before else current, "b": current}
    chosen: dict[str, int] = {}
    errors: dict[str, str] = {}
    for side in ("a", "b"):
        raw = params.get(side, "")
        number = _number(raw)
        if raw == "":
            chosen[side] = defaults[side]
        elif number is None:
            errors[side] = f"“{raw[:40]}” is not a version number."
            chosen[side] = defaults[side]
        else:
            try:
                api.get_version(routine, number)
            except api.NoSuchVersion as exc:
                errors[side] = str(exc)[:1].upper() + str(exc)[1:] + "."
                chosen[side] = defaults[side]
            else:
                chosen[side] = number
    diff = api.version_diff(routine, chosen["a"], chosen["b"]) if numbers else None
    context = {
        "title": f"Versions of {routine.name}",
        "routine": routine,
        "versions": [
            {
                "version": version,
                "steps": len(version.steps) if isinstance(version.steps, list) else 0,
                "current": version.number == routine.version,
                "previous": max((n for n in numbers if n < version.number), default=None),
            }
            for version in versions
        ],
        "numbers": numbers,
        "a": chosen["a"],
        "b": chosen["b"],
        "errors": errors,
        "diff": diff,
        "rows": diff_rows(diff) if diff else [],
    }
    return context, 400 if errors else 200


# --- moving a flow onto another version ---------------------------------------------------------


class VersionMoveForm(forms.Form):
    """A version move's confirmation: the flow version the page showed, the target version
    (`to`), the version whose steps the step list showed (`shown`: a different `to` has not
    been previewed), the step to go on at and the reason (required)."""

    version = forms.IntegerField(min_value=0, max_value=api.MAX_ID, widget=forms.HiddenInput)
    to = forms.TypedChoiceField(coerce=int, label="Version")
    shown = forms.IntegerField(
        min_value=0, max_value=api.MAX_ID, required=False, widget=forms.HiddenInput
    )
    position = forms.TypedChoiceField(coerce=int, label="Go on at step")
    reason = TextField(max_length=500, label="Reason")

    def __init__(self, *args: Any, versions: list[int], steps: list[dict[str, Any]], **kw: Any):
        super().__init__(*args, **kw)
        to = self.fields["to"]
        assert isinstance(to, forms.TypedChoiceField)
        to.choices = [(number, f"v{number}") for number in versions]
        position = self.fields["position"]
        assert isinstance(position, forms.TypedChoiceField)
        position.choices = [("", "Choose a step")] + [
            (index, f"{index + 1}. {step.get('name') or step.get('script')}")
            for index, step in enumerate(steps)
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "to" in cleaned and cleaned.get("shown") != cleaned["to"]:
            # The step list and preview shown were another version's: show this one first.
            self.add_error(
                None,
                f"You chose version {cleaned['to']}: check its preview and the step to go on "
                "at, then confirm.",
            )
        return cleaned


def other_versions(flow: Flow) -> list[RoutineVersion]:
    """The versions of the flow's routine it may move onto (not its own), newest first."""
    return [v for v in api.routine_versions(flow.routine_id) if v.number != flow.routine_version]


def _default_target(flow: Flow, versions: list[RoutineVersion]) -> int | None:
    """The routine's current version, or else the newest the flow is not on."""
    numbers = [version.number for version in versions]
    if flow.routine.version in numbers:
        return flow.routine.version
    return numbers[0] if numbers else None


def _step_name(steps: list[dict[str, Any]], index: int | None) -> str:
    if index is None or not 0 <= index < len(steps):
        return ""
    step = steps[index]
    return f"step {index + 1} ({step.get('name') or step.get('script')})"


def version_move(
    flow: Flow,
    choice: Mapping[str, Any] | None = None,
    *,
    reason: str = "",
    form: VersionMoveForm | None = None,
    **extra: Any,
) -> tuple[dict[str, Any], int]:
    """The confirmation of moving `flow` onto another version of its routine, for what the
    user chose (`choice`, as posted or in the query): the version (`to`; the routine's
    current one by default), the step to go on at (`position`: kept only while `shown`, the
    version it was chosen for, is `to`; otherwise the step matched by identity), the flow
    version their page showed (`version`), and the reason; the preview (the flow's version
    and the target side by side, where it goes on, the results kept and dropped, and why
    the engine would refuse the move as it stands). A bound `form` (with the user's errors)
    replaces the fresh one. Returns the context and its status (400 for a version the
    routine does not have)."""
    choice = choice or {}
    to, position, shown = choice.get("to"), choice.get("position"), choice.get("shown")
    flow_version = choice.get("version")
    versions = other_versions(flow)
    numbers = [version.number for version in versions]
    status = 200
    target_number = _number(to) if to not in (None, "") else _default_target(flow, versions)
    error = ""
    if to not in (None, "") and target_number not in numbers:
        status = 400
        if target_number == flow.routine_version:
            error = f"The flow is already on version {target_number}; choose another version."
        else:
            listed = ", ".join(f"v{n}" for n in sorted(numbers)) or "none"
            error = f"There is no version “{str(to)[:40]}” to move onto; the others are: {listed}."
        target_number = _default_target(flow, versions)
    plan = None
    if target_number is not None:
        same = _number(shown) == target_number and _number(position) is not None
        plan = api.plan_version_move(flow, target_number, _number(position) if same else None)
    steps = plan.steps if plan else []
    if form is None:
        initial = {
            "version": str(flow.version) if flow_version is None else flow_version,
            "to": target_number,
            "shown": target_number,
            "position": "" if plan is None or plan.position is None else plan.position,
            "reason": reason,
        }
        form = VersionMoveForm(initial=initial, versions=numbers, steps=steps)
    context = {
        "flow": flow,
        "title": "Move to another version",
        "versions": versions,
        "target": plan.target if plan else None,
        "plan": plan,
        "steps": steps,
        "form": form,
        "error": extra.pop("error", "") or error,
        "stale": extra.pop("stale", False),
        **extra,
    }
    if plan is not None:
        context.update(
            here=_step_name(flow.steps, flow.position),
            there=_step_name(steps, plan.position),
            kept=[
                {"name": _step_name(flow.steps, old), "to": _step_name(steps, new)}
                for old, new in plan.kept
            ],
            rows=diff_rows(plan.diff, left_mark=flow.position, right_mark=plan.position),
            problem=plan.problem,
        )
    return context, status
