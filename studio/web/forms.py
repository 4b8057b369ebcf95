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


class OverrideForm(forms.Form):
    """An override's confirmation: the page's flow version, and a reason (required for the
    destructive ones), and the target step of a move."""

    version = forms.IntegerField(min_value=0, max_value=api.MAX_ID, widget=forms.HiddenInput)
    reason = TextField(max_length=500, required=False, label="Reason")
    position = forms.TypedChoiceField(coerce=int, required=False, label="Move to step")

    def __init__(self, *args: Any, action: str, steps: list[dict[str, Any]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.action = action
        if action in {"kill", "move"}:
            self.fields["reason"].required = True
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


@dataclass
class StepDraft:
    """One step of a routine being composed (as posted by the builder form)."""

    script: str
    label: str = ""
    params_text: str = "{}"
    key: str = field(default_factory=lambda: secrets.token_hex(4))
    errors: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> dict[str, Any] | None:
        return api.script(self.script)


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
            )
        )
    return drafts


def drafts_from_routine(routine: Routine) -> list[StepDraft]:
    return [
        StepDraft(
            script=step.task.script,
            label=step.label,
            params_text=json.dumps(step.params, indent=1) if step.params else "{}",
            key=step.key or secrets.token_hex(6),
        )
        for step in routine.steps.select_related("task")
    ]


class RoutineForm(forms.Form):
    name = TextField(max_length=200, label="Routine name")
    description = TextField(
        max_length=10_000, required=False, widget=forms.Textarea(attrs={"rows": 2})
    )


def validate_drafts(drafts: list[StepDraft]) -> bool:
    """Fill each draft's `params` and `errors`; True when every step is valid."""
    ok = True
    for index, draft in enumerate(drafts):
        draft.errors = []
        try:
            draft.params = parse_json(draft.params_text or "{}", object_only=True)
        except forms.ValidationError as exc:
            draft.errors.append("params " + "; ".join(exc.messages))
        step = {"script": draft.script, "label": draft.label, "params": draft.params or {}}
        for problem in api.step_problems(index, step):  # the engine's one rule for steps
            if problem.field != "params" or not draft.errors:
                draft.errors.append(problem.message)
        ok = ok and not draft.errors
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
        {"key": d.key, "script": d.script, "label": d.label, "params": d.params} for d in drafts
    ]
    if routine is None:
        return api.create_checked_routine(name, steps, user, description=description)
    return api.update_routine(routine, name, steps, user, description=description, version=version)
