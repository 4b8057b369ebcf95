"""Routines: who may see and edit one, the one validator of their steps (naming the bad
entry), creating one, and editing one into a new version.

Flows pin their steps when they start, so a new version never changes a flow already running.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from engine import access
from engine.core.errors import StaleFlowError
from engine.core.flows import script as script_registry
from engine.core.flows.retry import overrides_problems
from engine.flows.models import Routine, RoutineStep, RoutineVersion, Task
from engine.jsonsafe import check_text, ensure_json, text_problem

__all__ = [
    "RoutineStepError",
    "StaleRoutineError",
    "can_edit_routine",
    "create_checked_routine",
    "create_routine",
    "step_problems",
    "update_routine",
    "validate_steps",
    "visible_routines",
]


class RoutineStepError(ValueError):
    """A routine step is invalid; `index` (0-based) and `field` say which entry."""

    def __init__(self, index: int, field: str, message: str) -> None:
        super().__init__(f"step {index + 1}: {message}")
        self.index = index
        self.field = field
        self.message = message


class StaleRoutineError(StaleFlowError):
    """The routine changed since the caller loaded it; reload and try again."""


def visible_routines(user: Any) -> QuerySet[Routine]:
    """The routines `user` may see: their own and ownerless (shared) ones, or all of them
    for staff and users who may operate every flow."""
    routines = Routine.objects.select_related("owner")
    if access.is_operator(user):
        return routines
    return routines.filter(Q(owner_id=user.pk) | Q(owner__isnull=True))


def can_edit_routine(user: Any, routine: Routine) -> bool:
    """Owners edit their routines; staff and operators edit any, including shared ones."""
    return access.may_act(user, routine.owner_id)


LABEL_LENGTH = RoutineStep._meta.get_field("label").max_length or 200
KEY_LENGTH = RoutineStep._meta.get_field("key").max_length or 32


def new_step_key() -> str:
    """A new step identity (kept by the step across versions)."""
    return secrets.token_hex(6)


def step_problems(index: int, step: Any) -> list[RoutineStepError]:
    """Everything wrong with one routine step (a script name, or a dict with "script",
    "label", "params"), each naming its field: the one rule for routine steps, used by
    `validate_steps` and by the builder, which shows every problem of every step at once."""
    item = step if isinstance(step, dict) else {"script": step}
    problems = []
    name = item.get("script")
    if not isinstance(name, str) or name not in script_registry.registry():
        problems.append(
            RoutineStepError(index, "script", f"{name!r} is not a registered Task script")
        )
    label = item.get("label") or ""
    if not isinstance(label, str):
        problems.append(RoutineStepError(index, "label", "a label must be a string"))
    elif len(label) > LABEL_LENGTH:
        message = f"the step name is longer than {LABEL_LENGTH} characters"
        problems.append(RoutineStepError(index, "label", message))
    elif problem := text_problem(label, "the step name"):
        problems.append(RoutineStepError(index, "label", problem))
    key = item.get("key") or ""
    if key and (
        not isinstance(key, str)
        or len(key) > KEY_LENGTH
        or not key.replace("-", "").replace("_", "").isalnum()
        or not key.isascii()
    ):
        problems.append(RoutineStepError(index, "key", f"{key!r} is not a step key"))
    for setting, problem in overrides_problems(item.get("overrides") or {}):
        problems.append(RoutineStepError(index, setting, problem))
    params = item.get("params") or {}
    if not isinstance(params, dict):
        problems.append(RoutineStepError(index, "params", "params must be a JSON object"))
    else:
        try:
            ensure_json(params, "params")
        except ValueError as exc:
            problems.append(RoutineStepError(index, "params", str(exc)))
    return problems


def validate_steps(steps: Sequence[str | dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalise steps to ``{"key", "script", "label", "params", "overrides"}`` dicts (a new
    key for a step without one), refusing (with the first
    `step_problems`) any step that is wrong: a script not registered by name (dotted paths
    and the like never resolve to code), a bad label, params that are not a storable JSON
    object."""
    if not steps:
        raise ValueError("a routine needs at least one step")
    clean = []
    for index, step in enumerate(steps):
        problems = step_problems(index, step)
        if problems:
            raise problems[0]
        item = step if isinstance(step, dict) else {"script": step}
        clean.append(
            {
                "key": item.get("key") or new_step_key(),
                "script": item["script"],
                "label": item.get("label") or "",
                "params": item.get("params") or {},
                "overrides": dict(item.get("overrides") or {}),
            }
        )
    keys = [step["key"] for step in clean]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            raise RoutineStepError(index, "key", f"step key {key!r} is used twice")
    return clean


def _clean_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a routine needs a name")
    return check_text(name.strip(), "name")


@transaction.atomic
def create_routine(
    name: str,
    scripts: Sequence[str | dict[str, Any]],
    owner: Any = None,
    description: str = "",
) -> Routine:
    """A routine whose steps are the named registered scripts, in order (an item may also be
    a dict ``{"script": name, "label": ..., "params": {...}}``); `owner` None makes it shared.
    Steps are checked by `validate_steps`, the one validator of routine steps."""
    name = _clean_name(name)
    check_text(description, "description")
    steps = validate_steps(scripts)
    routine = Routine.objects.create(name=name, owner=owner, description=description)
    _write_steps(routine, steps, owner)
    return routine


def _write_steps(routine: Routine, steps: list[dict[str, Any]], author: Any) -> None:
    """The routine's steps as they are now, and the version they make (kept for good)."""
    known = script_registry.registry()
    for order, step in enumerate(steps):
        cls = known[step["script"]]
        task, _ = Task.objects.get_or_create(script=cls.name, name=cls.label, params={})
        RoutineStep.objects.create(
            routine_id=routine.pk,
            order=order,
            task=task,
            label=step["label"],
            params=step["params"],
            key=step["key"],
            overrides=step["overrides"],
        )
    RoutineVersion.objects.create(
        routine_id=routine.pk,
        number=routine.version,
        name=routine.name,
        description=routine.description,
        steps=steps,
        author=author if getattr(author, "is_authenticated", False) else None,
    )


def create_checked_routine(
    name: str, steps: Sequence[str | dict[str, Any]], owner: Any, description: str = ""
) -> Routine:
    """`engine.api.create_routine`, after a validation that names the bad field."""
    if owner is None or not owner.is_authenticated:
        raise PermissionDenied("sign in to create a routine")
    return create_routine(_clean_name(name), validate_steps(steps), owner, description)


def update_routine(
    routine: Routine,
    name: str,
    steps: Sequence[str | dict[str, Any]],
    user: Any,
    description: str | None = None,
    version: int | None = None,
) -> Routine:
    """Replace the routine's name and steps as its next version, in one transaction.

    `version` (the version the caller saw) makes a routine edited meanwhile an error
    (`StaleRoutineError`) instead of silently overwriting that edit."""
    if not can_edit_routine(user, routine):
        raise PermissionDenied("you may not edit this routine")
    name = _clean_name(name)
    check_text(description, "description")
    clean = validate_steps(steps)
    changes: dict[str, Any] = {"name": name, "version": F("version") + 1, "updated": timezone.now()}
    if description is not None:
        changes["description"] = description
    with transaction.atomic():
        rows = Routine.objects.filter(pk=routine.pk)
        if version is not None:
            rows = rows.filter(version=version)
        if not rows.update(**changes):
            raise StaleRoutineError(
                f"routine {routine.pk} changed since you loaded it; reload and try again"
            )
        RoutineStep.objects.filter(routine_id=routine.pk).delete()
        routine.refresh_from_db()
        _write_steps(routine, clean, user)
    return routine
