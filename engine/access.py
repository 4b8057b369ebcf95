"""Who may see and act on what: ONE rule for flows, routines and LTM runs.

A user sees and acts on what they own; staff and users with the `engine.operate_flow`
permission ("operators") see and act on everything. Anonymous users nothing. A refusal reads
exactly like a missing object to the caller (see the studio's 404s).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

OPERATE = "engine.operate_flow"


def is_operator(user: Any) -> bool:
    """Whether `user` may see and act on every user's flows, routines and runs."""
    return bool(user and user.is_authenticated and (user.is_staff or user.has_perm(OPERATE)))


def may_act(user: Any, owner_id: Any) -> bool:
    """Whether `user` may see and act on a thing owned by `owner_id`."""
    if user is None or not user.is_authenticated:
        return False
    return owner_id == user.pk or is_operator(user)


def require(user: Any, owner_id: Any, what: str) -> None:
    if not may_act(user, owner_id):
        raise PermissionDenied(f"you may not act on this {what}")


def visible(user: Any, queryset: QuerySet[Any], owner_field: str = "owner") -> QuerySet[Any]:
    """The part of `queryset` that `user` may see."""
    if is_operator(user):
        return queryset
    if user is None or not user.is_authenticated:
        return queryset.none()
    return queryset.filter(**{f"{owner_field}_id": user.pk})
