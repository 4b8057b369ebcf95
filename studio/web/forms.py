"""Forms of the studio: JSON fields that say what is wrong, the routine builder's steps, the
input and override forms of a flow, and the LTM controls."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, cast

from django import forms

from engine import api
from engine.models import Routine


def no_lone_surrogates(value: Any) -> None:
    """A form validator for what Django's CharField does not refuse itself (it refuses NUL
    characters): lone surrogates, which no database stores alike (see `engine.api.text_problem`)."""
    if isinstance(value, str) and "\x00" not in value and (problem := api.text_problem(value)):
        raise forms.ValidationError(problem[:1].upper() + problem[1:] + ".", code="unstorable")


class TextField(forms.CharField):
    """A CharField for text that is stored: no NUL characters, no lone surrogates."""

    default_validators = [no_lone_surrogates]


class JSONTextField(forms.CharField):
    """A textarea holding JSON; `object_only` requires a JSON object. Empty means `empty`."""

    widget = forms.Textarea

    def __init__(self, *, object_only: bool = False, empty: Any = None, **kwargs: Any) -> None:
        self.object_only = object_only
        self.empty = empty
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}))
        super().__init__(**kwargs)

    def validate(self, value: Any) -> None:
        # {} and [] are values here, not "empty": only missing text fails `required`.
        if self.required and value is self.empty:
            raise forms.ValidationError(self.error_messages["required"], code="required")

    def to_python(self, value: Any) -> Any:
        text = super().to_python(value)
        if not text or not text.strip():  # None when a caller passes empty_value=None
            return self.empty
        return parse_json(text, object_only=self.object_only)


def parse_json(text: str, *, object_only: bool = False) -> Any:
    """`text` as JSON, or a `ValidationError` naming the line and column of the mistake, or
    what makes the value unstorable and where (nested too deeply, NUL characters, ...)."""
    try:
        value = api.load_json(text)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except api.NotJSON as exc:
        raise forms.ValidationError(f"not valid JSON: {exc}") from None
    except ValueError as exc:
        raise forms.ValidationError(str(exc)) from None
    if object_only and not isinstance(value, dict):
        raise forms.ValidationError('must be a JSON object, like {"key": "value"}')
    return value


class StartFlowForm(forms.Form):
    initial_data = JSONTextField(
        object_only=True,
        empty={},
        required=False,
        label="Initial data (optional JSON object)",
        help_text='For example {"name": "Ada", "email": "ada@example.com"}',
    )


class JSONInputForm(forms.Form):
    """Input for a waiting step that declares no `input_fields`: any JSON value."""

    input = JSONTextField(label="Input (JSON)", help_text='For example {"approved": true}')


class FieldsInputForm(forms.Form):
    """Input for a waiting step from its script's `input_fields`. Each value is read as JSON
    when it parses (true, 42, "x", {...}) and kept as text otherwise."""

    def __init__(self, *args: Any, fields: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.value: dict[str, Any] = {}
        for name in fields:
            self.fields[name] = TextField(label=name, required=False)

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data  # what Form.clean returns
        self.value = {}
        for name in self.fields:
            text = (cleaned.get(name) or "").strip()
            try:
                self.value[name] = api.load_json(text, name) if text else None
            except (json.JSONDecodeError, api.NotJSON):
                self.value[name] = text
            except ValueError as exc:  # JSON, but not storable: nested too deeply, NUL...
                self.add_error(name, str(exc))
        return cleaned

    def input_value(self) -> dict[str, Any]:
        return self.value


# The HTML input types of a script form's date and time fields (Django's default widgets
# render them as plain text boxes), with the formats those inputs read and write.
_DATE_INPUTS: list[tuple[type[forms.Field], str, str]] = [
    (forms.DateTimeField, "datetime-local", "%Y-%m-%dT%H:%M"),
    (forms.DateField, "date", "%Y-%m-%d"),
    (forms.TimeField, "time", "%H:%M"),
]


def typed_input_form(form_class: type[forms.Form], data: Any = None, **kwargs: Any) -> forms.Form:
    """An instance of a script's `input_form` for the page: the date and time fields get the
    browser's own pickers (`<input type=date>` ...); everything else keeps its widget (a
    checkbox, a number box, a select for choices). What the user posts is validated by the
    engine with the same form class (`engine.api.push_input`)."""
    form = form_class(data, **kwargs)
    for form_field in form.fields.values():  # (each form instance has its own copies)
        widget = form_field.widget
        for kind, input_type, fmt in _DATE_INPUTS:
            if isinstance(form_field, kind) and type(widget) in (
                forms.DateInput,
                forms.DateTimeInput,
                forms.TimeInput,
            ):
                widget.input_type = input_type
                widget.format = fmt
                break
    return form


def posted_input(form_class: type[forms.Form], data: Any) -> dict[str, Any]:
    """What a browser posted for a script form's fields, as the input pushed to the engine:
    one text per field (a list for multiple choices); an unticked box or a field left out is
    not sent, as the browser did not send it."""
    value: dict[str, Any] = {}
    for name, form_field in form_class.base_fields.items():
        if name not in data:
            continue
        if isinstance(form_field, forms.MultipleChoiceField):
            value[name] = data.getlist(name)
        else:
            value[name] = data.get(name)
    return value


# The overrides that rerun a step and may edit the flow's data and that step's params first
# (the step the flow is at; for a move, the one it moves to).
EDITABLE = frozenset({"retry", "resume", "move"})
# The overrides that ask for a reason: required for those that end or redirect work.
REASONED = {"kill": True, "move": True, "give_up": True, "retry": False, "resume": False}


def same_json(a: Any, b: Any) -> bool:
    """Whether two JSON values are the same, types included (1 is not 1.0 nor true)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


class OverrideForm(forms.Form):
    """An override's confirmation: the page's flow version, a reason (required for the
    destructive ones), the target step of a move and, for a retry, resume or move, edits of
    the flow's data and of the step's params (JSON objects, shown as they are: an edit is
    passed on only when it changes something)."""

    version = forms.IntegerField(min_value=0, max_value=api.MAX_ID, widget=forms.HiddenInput)
    reason = TextField(max_length=500, required=False, label="Reason")
    position = forms.TypedChoiceField(coerce=int, required=False, label="Move to step")
    edit_data = JSONTextField(
        object_only=True, required=False, empty=None, label="The flow's data (JSON object)"
    )
    edit_params = JSONTextField(
        object_only=True, required=False, empty=None, label="The step's params (JSON object)"
    )
    # Which step's params the page showed in `edit_params` (a move's target may change).
    params_step = forms.IntegerField(
        min_value=0, max_value=1_000_000, required=False, widget=forms.HiddenInput
    )

    def __init__(
        self,
        *args: Any,
        action: str,
        steps: list[dict[str, Any]],
        flow_data: dict[str, Any] | None = None,
        at: int = 0,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.action = action
        self.steps = steps
        self.flow_data = flow_data if flow_data is not None else {}
        self.at = at  # the flow's current step
        if action in REASONED:
            self.fields["reason"].required = REASONED[action]
        else:
            self.fields["reason"].widget = forms.HiddenInput()
        if action == "move":
            self.fields["position"].required = True
            cast(forms.TypedChoiceField, self.fields["position"]).choices = [
                (index, f"{index + 1}. {step.get('name') or step.get('script')}")
                for index, step in enumerate(steps)
            ]
        else:
            del self.fields["position"]
        if action not in EDITABLE:
            for name in ("edit_data", "edit_params", "params_step"):
                del self.fields[name]

    def target(self) -> int | None:
        """The step the override reruns: a move's chosen step, else the current one."""
        if self.action != "move":
            return self.at
        position = self.cleaned_data.get("position")
        return position if isinstance(position, int) else None

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data  # what Form.clean returns
        if self.action not in EDITABLE:
            return cleaned
        data = cleaned.get("edit_data")
        if data is not None and same_json(data, self.flow_data):
            cleaned["edit_data"] = None  # shown as it was: no edit
        params = cleaned.get("edit_params")
        target = self.target()
        if params is None or target is None or not 0 <= target < len(self.steps):
            return cleaned
        shown = cleaned.get("params_step")
        shown = shown if isinstance(shown, int) and 0 <= shown < len(self.steps) else target
        if same_json(params, self.steps[shown].get("params") or {}):
            cleaned["edit_params"] = None  # shown as they were: no edit
        elif shown != target:
            self.add_error(
                "edit_params",
                f"These are the params of step {shown + 1}, but the flow is to run step "
                f"{target + 1}: pick step {shown + 1}, or open the confirmation again to "
                f"edit the params of step {target + 1}.",
            )
        return cleaned

    def edits(self) -> dict[str, Any]:
        """The edits to pass on (`data=`, `params=`): only those that change something."""
        found = {
            "data": self.cleaned_data.get("edit_data"),
            "params": self.cleaned_data.get("edit_params"),
        }
        return {name: value for name, value in found.items() if value is not None}


class FireTransitionForm(forms.Form):
    label = TextField(max_length=200, label="Transition label")
    payload = JSONTextField(
        object_only=True, required=False, empty={}, label="Payload (optional JSON object)"
    )
    params = JSONTextField(
        required=False,
        empty=None,
        label="Params (optional JSON: a list of objects)",
        help_text='For parameterised labels and states, e.g. [{"k": "1"}] for "next_{k}".',
    )
    namespace = TextField(
        max_length=500, required=False, label="Namespace (optional; the root machine's by default)"
    )

    def clean_params(self) -> Any:
        params = self.cleaned_data.get("params")
        if params is None:
            return None
        items = [params] if isinstance(params, dict) else params
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise forms.ValidationError('must be a JSON object or a list of objects: [{"k": "1"}]')
        return items


class StartLtmForm(forms.Form):
    payload = JSONTextField(
        object_only=True, required=False, empty={}, label="Start payload (optional JSON object)"
    )


class KillLtmForm(forms.Form):
    reason = TextField(max_length=500, required=False, label="Reason")


class RollbackLtmForm(forms.Form):
    """The confirmation of a rollback: the last event of the run the user saw
    (`expected_seq`: a run that moved on since is refused, not rolled back blindly), a
    required reason, and the explicit "discard the outcome of the running execution"."""

    expected_seq = forms.IntegerField(min_value=0, max_value=api.MAX_ID, widget=forms.HiddenInput)
    reason = TextField(max_length=500, label="Reason")
    discard_running = forms.BooleanField(
        required=False, label="Discard the outcome of the running execution"
    )


class TokenForm(forms.Form):
    name = TextField(max_length=100, label="Name")


# --- the routine builder --------------------------------------------------------------------


# A step's overridable retry settings as the builder shows them: (setting, label).
RETRY_FIELDS: tuple[tuple[str, str], ...] = (
    ("retries", "Retries"),
    ("retry_delay", "First delay (s)"),
    ("retry_backoff", "Backoff (×)"),
    ("retry_max_delay", "Longest delay (s)"),
    ("retry_jitter", "Jitter (0 to 1)"),
    ("time_limit", "Time limit (s)"),
)
RETRY_SETTINGS = tuple(name for name, _ in RETRY_FIELDS)
LONGEST_NUMBER = 40  # characters of a setting's text; a longer one is no number here


@dataclass
class StepDraft:
    """One step of a routine being composed (as posted by the builder form). `overrides_text`
    holds the retry settings as typed (an empty one: the script's own); `overrides`, those
    read as numbers; `field_errors`, what is wrong with each by setting."""

    script: str
    label: str = ""
    params_text: str = "{}"
    key: str = field(default_factory=lambda: secrets.token_hex(4))
    errors: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    overrides_text: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, int | float] = field(default_factory=dict)
    field_errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def info(self) -> dict[str, Any] | None:
        return api.script(self.script)

    @property
    def retry_fields(self) -> list[dict[str, Any]]:
        """The builder's inputs of the step's retry settings: each with its value as typed,
        the script's own as placeholder, its bounds and errors."""
        info = self.info or {}
        rows = []
        for name, label in RETRY_FIELDS:
            low, high, integer = api.RETRY_LIMITS[name]
            own = info.get(name)
            rows.append(
                {
                    "name": name,
                    "label": label,
                    "value": self.overrides_text.get(name, ""),
                    "placeholder": "none" if own is None else number_text(own),
                    "min": number_text(low),
                    "max": number_text(high),
                    "step": "1" if integer else "any",
                    "errors": self.field_errors.get(name, []),
                }
            )
        return rows

    @property
    def overridden(self) -> int:
        """How many retry settings the step overrides (typed in)."""
        return sum(1 for text in self.overrides_text.values() if text.strip())


def _overrides_posted(data: Any, index: int) -> dict[str, str]:
    texts = {}
    for name in RETRY_SETTINGS:
        values = data.getlist(f"step_{name}")
        text = values[index] if index < len(values) else ""
        if text.strip():
            texts[name] = text.strip()
    return texts


def drafts_from_post(data: Any) -> list[StepDraft]:
    """The builder's steps, in the order the form posted them."""
    keys = data.getlist("step_key")
    names = data.getlist("step_script")
    labels = data.getlist("step_label")
    params = data.getlist("step_params")
    drafts = []
    for index, name in enumerate(names):
        drafts.append(
            StepDraft(
                script=name,
                label=labels[index] if index < len(labels) else "",
                params_text=params[index] if index < len(params) else "{}",
                key=keys[index] if index < len(keys) and keys[index] else secrets.token_hex(4),
                overrides_text=_overrides_posted(data, index),
            )
        )
    return drafts


def number_text(value: Any) -> str:
    """A number as a person types it: 3600 (not 3600.0 or 3.6e+03), 0.5."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def drafts_from_routine(routine: Routine) -> list[StepDraft]:
    return [
        StepDraft(
            script=step.task.script,
            label=step.label,
            params_text=json.dumps(step.params, indent=1) if step.params else "{}",
            key=step.key or secrets.token_hex(6),
            overrides_text={
                name: number_text(value)
                for name, value in (step.overrides or {}).items()
                if name in RETRY_SETTINGS and value is not None
            },
        )
        for step in routine.steps.select_related("task")
    ]


class RoutineForm(forms.Form):
    name = TextField(max_length=200, label="Routine name")
    description = TextField(
        max_length=10_000, required=False, widget=forms.Textarea(attrs={"rows": 2})
    )


def read_number(text: str) -> int | float:
    """A retry setting as typed: a whole number as an int, any other as a float; ValueError
    when it is no number."""
    text = text.strip()
    if len(text) > LONGEST_NUMBER:
        raise ValueError("too long for a number")
    try:
        return int(text)
    except ValueError:
        value = float(text)  # (raises ValueError for what is no number)
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def validate_drafts(drafts: list[StepDraft]) -> bool:
    """Fill each draft's `params`, `overrides`, `errors` and `field_errors`; True when every
    step is valid (the engine's `step_problems` decides, retry settings included)."""
    ok = True
    for index, draft in enumerate(drafts):
        draft.errors = []
        draft.field_errors = {}
        try:
            draft.params = parse_json(draft.params_text or "{}", object_only=True)
        except forms.ValidationError as exc:
            draft.errors.append("params " + "; ".join(exc.messages))
        draft.overrides = {}
        for name, text in draft.overrides_text.items():
            try:
                draft.overrides[name] = read_number(text)
            except ValueError:
                draft.field_errors.setdefault(name, []).append(f"{name} must be a number")
        step = {
            "script": draft.script,
            "label": draft.label,
            "params": draft.params or {},
            "overrides": draft.overrides,
        }
        for problem in api.step_problems(index, step):  # the engine's one rule for steps
            if problem.field in RETRY_SETTINGS:
                draft.field_errors.setdefault(problem.field, []).append(problem.message)
            elif problem.field != "params" or not draft.errors:
                draft.errors.append(problem.message)
        ok = ok and not draft.errors and not draft.field_errors
    return ok


def save_routine(
    routine: Routine | None,
    name: str,
    description: str,
    drafts: list[StepDraft],
    user: Any,
    version: int | None = None,
) -> Routine:
    """Create the routine, or give an existing one a new version (steps replaced and
    `version` bumped in one transaction by `engine.api.update_routine`). Running flows
    keep the steps they pinned; `version` guards against overwriting someone else's edit."""
    steps = [
        {
            "key": d.key,
            "script": d.script,
            "label": d.label,
            "params": d.params,
            "overrides": d.overrides,
        }
        for d in drafts
    ]
    if routine is None:
        return api.create_checked_routine(name, steps, user, description=description)
    return api.update_routine(routine, name, steps, user, description=description, version=version)
