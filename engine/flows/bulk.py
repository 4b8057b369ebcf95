"""Bulk actions: one operator action — retry, resume, skip or kill — over many flows, with one
reason, run in the background.

What is selected is either flow ids or a filter (`engine.flows.queries`: the dashboard's and
the REST API's filter, so "every flow matching this filter" is exactly what the list shows).
`preview_bulk` says what the action would do now: how many flows of each state it applies to,
and how many it would refuse and why (the state table `engine.flows.status.ACTIONS`, and who
may act on what, `engine.access`). `start_bulk` fixes the flows it covers (`flow_ids`),
records it (`BulkAction`, and an `AuditEntry` "bulk.started") and queues it
(`engine.dispatch.run_bulk`).

`run_bulk` works through the flows in chunks, each flow through the service's own action
(`engine.flows.service`), so that permission and state are checked for each flow at that
moment and each flow's event names the user, the shared reason and the bulk action
(`{"bulk": id}` in its data). A chunk's actions and the progress they make (`processed`,
`succeeded`, `refused`) commit in ONE transaction: a consumer killed mid-way loses its
uncommitted chunk whole and nothing else. While it runs the bulk action holds a lease
(renewed with every chunk); one whose lease ran out is queued again by the housekeeping of
any consumer (`take_up_stale`) and goes on from `processed`. Progress is published after each
chunk (an engine event `{"type": "bulk", "users": [user id], ...}`); the last chunk ends it
as done, with an `AuditEntry` "bulk.finished" holding the counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.db import DatabaseError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from engine import access, config, dispatch
from engine import events as engine_events
from engine.core.errors import FlowStateError, StaleFlowError
from engine.flows import service
from engine.flows.models import AuditEntry, BulkAction, Flow
from engine.flows.queries import FlowFilter, filter_flows, filter_from_json
from engine.flows.status import ACTIONS
from engine.jsonsafe import MAX_ID, check_text
from engine.leases import lease_until, queue_deadline

logger = logging.getLogger(__name__)

MAX_FLOWS = 10_000  # the most flows one bulk action covers (a larger selection is refused)
MAX_REASON = 500  # characters, as an override's reason on a flow's page
CHUNK = 50  # flows acted on per transaction (and per progress update)
FIRST_FLOWS = 20  # refused flows named per reason (the count has them all)
_ID_BATCH = 500  # ids per query of a preview (SQLite bounds the parameters of a query)

# The actions a bulk action may take, with the word for a flow they applied to.
BULK_ACTIONS: dict[str, str] = {
    "retry": "retried",
    "resume": "resumed",
    "skip": "skipped",
    "kill": "killed",
}
NOT_YOURS = "you may not act on these flows"
NO_SUCH_FLOW = "no such flow"
KEPT_CHANGING = "they kept changing while the action ran"
UNEXPECTED = "an unexpected error (logged on the server)"


def refused_in_state(state: str, action: str) -> str:
    """Why `action` is refused to a flow in `state`: "complete flows cannot be retried"."""
    return f"{state} flows cannot be {BULK_ACTIONS[action]}"


def visible_bulk_actions(user: Any) -> QuerySet[BulkAction]:
    """The bulk actions of `user` (each user sees their own only), newest first."""
    if user is None or not user.is_authenticated:
        return BulkAction.objects.none()
    return BulkAction.objects.filter(user_id=user.pk).order_by("-created", "-id")


# --- what is selected ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Flow ids (in the order given, without repeats), or a filter."""

    ids: tuple[int, ...] | None = None
    filter: FlowFilter | None = None

    def as_json(self) -> dict[str, Any]:
        if self.filter is not None:
            return {"filter": self.filter.as_json()}
        return {"ids": list(self.ids or ())}


def parse_selection(selection: Any) -> Selection:
    """`{"ids": [7, 8, ...]}` or `{"filter": {...}}` (see `engine.flows.queries.
    filter_from_json`), read strictly: a ValueError saying what is wrong otherwise (no or
    both kinds, ids that are not flow ids, more than MAX_FLOWS ids, a filter that narrows
    nothing)."""
    if isinstance(selection, Selection):
        return selection
    if not isinstance(selection, Mapping):
        raise ValueError('select flows by {"ids": [...]} or by {"filter": {...}}')
    unknown = sorted(str(key) for key in selection if key not in ("ids", "filter"))
    if unknown:
        raise ValueError(f"unknown selection key(s) {', '.join(unknown)}: use ids or filter")
    has_ids, has_filter = "ids" in selection, "filter" in selection
    if has_ids == has_filter:
        raise ValueError(
            "select flows either by ids or by a filter"
            + (", not both" if has_ids else ": nothing was selected")
        )
    if has_filter:
        flow_filter = filter_from_json(selection["filter"])
        if not flow_filter.active:
            raise ValueError(
                "a filter must narrow the flows: give a state, routine, owner or search"
            )
        return Selection(filter=flow_filter)
    ids = selection["ids"]
    if not isinstance(ids, list | tuple) or not all(
        isinstance(pk, int) and not isinstance(pk, bool) and 1 <= pk <= MAX_ID for pk in ids
    ):
        raise ValueError("ids must be a list of flow ids (whole numbers, 1 or more)")
    unique = tuple(dict.fromkeys(ids))
    if not unique:
        raise ValueError("no flows selected: ids is empty")
    if len(unique) > MAX_FLOWS:
        raise ValueError(
            f"{len(unique):,} flows selected: a bulk action takes at most {MAX_FLOWS:,}"
        )
    return Selection(ids=unique)


def _action(action: Any) -> str:
    if not isinstance(action, str) or action not in BULK_ACTIONS:
        raise ValueError(f"unknown bulk action {str(action)[:40]!r}: use {', '.join(BULK_ACTIONS)}")
    return action


def _reason(reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("say why: a bulk action needs a reason, kept with each flow's event")
    check_text(reason, "reason")
    if len(reason) > MAX_REASON:
        raise ValueError(f"the reason is too long: at most {MAX_REASON} characters")
    return reason.strip()


# --- the preview --------------------------------------------------------------------------------


@dataclass
class Refusals:
    """Flows an action does not apply to, by reason: {reason: {"count": n, "flows": [ids]}}
    (the first FIRST_FLOWS ids of each)."""

    by_reason: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, reason: str, flow_id: int) -> None:
        entry = self.by_reason.setdefault(reason, {"count": 0, "flows": []})
        entry["count"] += 1
        if len(entry["flows"]) < FIRST_FLOWS:
            entry["flows"].append(flow_id)

    @property
    def count(self) -> int:
        return sum(entry["count"] for entry in self.by_reason.values())


@dataclass
class BulkPreview:
    """What a bulk action would do now: of `total` selected flows, how many of each state it
    applies to (`affected`), and which it refuses, by reason (`refused`)."""

    action: str
    total: int
    affected: dict[str, int]
    refused: dict[str, dict[str, Any]]
    selection: Selection
    flow_ids: list[int] = field(default_factory=list, repr=False)

    @property
    def applies(self) -> int:
        return sum(self.affected.values())

    @property
    def refused_count(self) -> int:
        return sum(entry["count"] for entry in self.refused.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "total": self.total,
            "applies": self.applies,
            "affected": dict(self.affected),
            "refused_count": self.refused_count,
            "refused": refusals_out(self.refused),
            "selection": self.selection.as_json(),
        }


def refusals_out(refused: Mapping[str, Any]) -> list[dict[str, Any]]:
    """{reason: {"count", "flows"}} as a list, the most frequent reason first."""
    rows = [
        {
            "reason": reason,
            "count": int(entry.get("count", 0)),
            "flows": list(entry.get("flows", [])),
        }
        for reason, entry in refused.items()
        if isinstance(entry, Mapping)
    ]
    return sorted(rows, key=lambda row: (-row["count"], row["reason"]))


def _states_of(user: Any, selection: Selection) -> tuple[list[int], dict[int, str]]:
    """The selected flow ids (in order) and the state of each that `user` may act on."""
    visible = service.visible_flows(user).select_related(None).order_by()
    if selection.ids is not None:
        ids = list(selection.ids)
        states: dict[int, str] = {}
        for start in range(0, len(ids), _ID_BATCH):
            batch = ids[start : start + _ID_BATCH]
            states.update(visible.filter(pk__in=batch).values_list("pk", "state"))
        return ids, states
    assert selection.filter is not None
    rows = list(
        filter_flows(user, selection.filter)
        .select_related(None)
        .order_by("pk")
        .values_list("pk", "state")[: MAX_FLOWS + 1]
    )
    if not rows:
        raise ValueError("the filter matches no flow: nothing to act on")
    if len(rows) > MAX_FLOWS:
        raise ValueError(
            f"the filter matches more than {MAX_FLOWS:,} flows: a bulk action takes at most "
            f"{MAX_FLOWS:,}; narrow the filter"
        )
    return [pk for pk, _ in rows], dict(rows)


def preview_bulk(user: Any, action: str, selection: Any) -> BulkPreview:
    """What `action` would do to the selected flows now, for `user`: the flows it applies to
    by state, and the refused ones by reason — a state the action does not fit ("killed
    flows cannot be skipped", from `ACTIONS`), or a flow `user` may not act on (another
    user's: "you may not act on these flows", which missing ids read as too). Nothing is
    written. ValueError for an unknown action, malformed ids, a filter that matches no flow,
    or a selection of more than MAX_FLOWS flows."""
    action = _action(action)
    chosen = parse_selection(selection)
    if user is None or not user.is_authenticated:
        raise PermissionDenied("sign in to act on flows")
    ids, states = _states_of(user, chosen)
    allowed = ACTIONS[action]
    missing = NO_SUCH_FLOW if access.is_operator(user) else NOT_YOURS
    affected: dict[str, int] = {}
    refused = Refusals()
    for pk in ids:
        state = states.get(pk)
        if state is None:
            refused.add(missing, pk)
        elif state in allowed:
            affected[state] = affected.get(state, 0) + 1
        else:
            refused.add(refused_in_state(state, action), pk)
    return BulkPreview(action, len(ids), affected, refused.by_reason, chosen, ids)


def _summary(preview: BulkPreview) -> str:
    verb = BULK_ACTIONS[preview.action]
    reasons = "; ".join(f"{row['count']} {row['reason']}" for row in refusals_out(preview.refused))
    return f"none of the {preview.total:,} selected flows can be {verb} now ({reasons})"


# --- starting -----------------------------------------------------------------------------------


def start_bulk(user: Any, action: str, selection: Any, reason: str) -> BulkAction:
    """Start `action` over the selected flows with `reason`: the flows it covers are fixed
    now (all the ids given; for a filter, the flows matching it now), the bulk action and
    its "bulk.started" audit entry are written in one transaction, and it is queued to run
    once that commits. ValueError (nothing written) for what `preview_bulk` refuses, a
    missing reason, or a selection none of whose flows the action applies to."""
    action = _action(action)
    reason = _reason(reason)
    preview = preview_bulk(user, action, selection)
    if preview.applies == 0:
        raise ValueError(_summary(preview))
    with transaction.atomic():
        bulk = BulkAction.objects.create(
            user=user,
            action=action,
            reason=reason,
            selection=preview.selection.as_json(),
            flow_ids=preview.flow_ids,
            total=preview.total,
            state=BulkAction.QUEUED,
            lease_until=queue_deadline(),
        )
        AuditEntry.objects.create(
            kind="bulk.started",
            object_type="bulk_action",
            object_id=bulk.pk,
            actor=user,
            message=reason,
            data={
                "action": action,
                "total": preview.total,
                "selection": preview.selection.as_json(),
                "preview": {"affected": preview.affected, "refused": preview.refused_count},
            },
        )
        dispatch.run_bulk(bulk.pk)
    bulk.refresh_from_db()  # (run already, when the queue runs work at once)
    return bulk


# --- running ------------------------------------------------------------------------------------


def _call(action: str) -> Callable[[int, Any, str, int], Any]:
    """The service's action, called as a bulk action calls it."""
    if action == "retry":
        return lambda pk, user, reason, bulk: service.retry(pk, user, reason=reason, bulk=bulk)
    if action == "resume":
        return lambda pk, user, reason, bulk: service.resume(pk, user, reason=reason, bulk=bulk)
    if action == "skip":
        return lambda pk, user, reason, bulk: service.skip(pk, user, reason, bulk=bulk)
    return lambda pk, user, reason, bulk: service.kill_flow(pk, user, reason, bulk=bulk)


def _claim(bulk_id: int) -> datetime | None:
    """Take charge of a queued bulk action (or a running one whose lease ran out): its lease
    is the token every later write of this run names. None if another has it, or it ended."""
    now = timezone.now()
    token = lease_until()
    claimable = Q(state=BulkAction.QUEUED) | Q(
        Q(lease_until__lt=now) | Q(lease_until=None), state=BulkAction.RUNNING
    )
    claimed = BulkAction.objects.filter(claimable, pk=bulk_id).update(
        state=BulkAction.RUNNING, lease_until=token
    )
    return token if claimed else None


class LeaseLost(Exception):
    """Another consumer took the bulk action over (this one's lease ran out meanwhile)."""


def run_bulk(bulk_id: int) -> str:
    """Run (or go on with) bulk action `bulk_id` from where it stopped, chunk by chunk, to
    the end. Returns how it ended: "done", "failed", "not claimed" (another consumer has it,
    or it ended), "lost" (its lease was taken over), "gone" (deleted meanwhile, with its
    user) or "interrupted" (a database error: its lease runs out and the housekeeping queues
    it again)."""
    token = _claim(bulk_id)
    if token is None:
        return "not claimed"
    bulk = BulkAction.objects.filter(pk=bulk_id).first()
    if bulk is None:
        return "gone"
    try:
        if bulk.action not in BULK_ACTIONS or not isinstance(bulk.flow_ids, list):
            _end(bulk, token, BulkAction.FAILED, f"unknown bulk action {bulk.action[:40]!r}")
            return "failed"
        act = _call(bulk.action)
        while bulk.processed < len(bulk.flow_ids):
            token = _chunk(bulk, token, act)
        _end(bulk, token, BulkAction.DONE)
    except LeaseLost:
        logger.warning("bulk action %s was taken over by another consumer", bulk_id)
        return "lost"
    except ObjectDoesNotExist:  # its user was deleted, and the bulk action with them
        return "gone"
    except DatabaseError:
        logger.exception("bulk action %s interrupted; it goes on once its lease runs out", bulk_id)
        return "interrupted"
    return "done"


def _budget() -> float:
    """Seconds a chunk may take: well within the lease it renews."""
    return config.seconds("LEASE_SECONDS") / 3


def _chunk(bulk: BulkAction, token: datetime, act: Callable[[int, Any, str, int], Any]) -> datetime:
    """Act on the next chunk of flows and record the progress, in one transaction. Returns
    the renewed lease; raises LeaseLost (the chunk undone) if another consumer took over."""
    user = get_user_model().objects.get(pk=bulk.user_id)  # as the user's rights are now
    ids = [int(pk) for pk in bulk.flow_ids[bulk.processed : bulk.processed + CHUNK]]
    allowed = ACTIONS[bulk.action]
    missing = NO_SUCH_FLOW if access.is_operator(user) else NOT_YOURS
    began = time.monotonic()
    refused = Refusals({reason: dict(entry) for reason, entry in (bulk.refused or {}).items()})
    for entry in refused.by_reason.values():
        entry["flows"] = list(entry.get("flows", []))
    with transaction.atomic():
        states = dict(Flow.objects.filter(pk__in=ids).values_list("pk", "state"))
        done = succeeded = 0
        for pk in ids:
            why = _apply(act, pk, user, bulk, states.get(pk), allowed, missing)
            done += 1
            if why is None:
                succeeded += 1
            else:
                refused.add(why, pk)
            if time.monotonic() - began > _budget():
                break  # the rest in the next chunk, under a renewed lease
        renewed = lease_until()
        progress = {
            "processed": bulk.processed + done,
            "succeeded": bulk.succeeded + succeeded,
            "refused": refused.by_reason,
        }
        written = BulkAction.objects.filter(
            pk=bulk.pk, state=BulkAction.RUNNING, lease_until=token
        ).update(lease_until=renewed, **progress)
        if not written:
            raise LeaseLost(bulk.pk)  # (undoes the chunk)
        for name, value in progress.items():
            setattr(bulk, name, value)
        bulk.lease_until = renewed
        _publish(bulk)
    return renewed


def _apply(
    act: Callable[[int, Any, str, int], Any],
    pk: int,
    user: Any,
    bulk: BulkAction,
    state: str | None,
    allowed: Iterable[str],
    missing: str,
) -> str | None:
    """Act on one flow through the service; None when it applied, else why not."""
    try:
        act(pk, user, bulk.reason, bulk.pk)
    except PermissionDenied:
        return NOT_YOURS
    except Flow.DoesNotExist:
        return missing
    except StaleFlowError:
        return KEPT_CHANGING
    except FlowStateError:
        if state is None or state in allowed:  # it changed since the chunk read it
            state = Flow.objects.filter(pk=pk).values_list("state", flat=True).first()
        if state is None:
            return missing
        return refused_in_state(state, bulk.action) if state not in allowed else KEPT_CHANGING
    except DatabaseError:
        raise
    except Exception:
        logger.exception("bulk action %s failed on flow %s", bulk.pk, pk)
        return UNEXPECTED
    return None


def _end(bulk: BulkAction, token: datetime, state: str, error: str = "") -> None:
    """End the bulk action (done, or failed with `error`) and audit it, in one transaction."""
    with transaction.atomic():
        now = timezone.now()
        written = BulkAction.objects.filter(
            pk=bulk.pk, state=BulkAction.RUNNING, lease_until=token
        ).update(state=state, error=error, finished=now, lease_until=None)
        if not written:
            raise LeaseLost(bulk.pk)
        bulk.state, bulk.error, bulk.finished, bulk.lease_until = state, error, now, None
        refused = Refusals(dict(bulk.refused or {}))
        AuditEntry.objects.create(
            kind="bulk.finished" if state == BulkAction.DONE else "bulk.failed",
            object_type="bulk_action",
            object_id=bulk.pk,
            actor_id=bulk.user_id,
            message=bulk.reason,
            data={
                "action": bulk.action,
                "total": bulk.total,
                "processed": bulk.processed,
                "succeeded": bulk.succeeded,
                "refused": refused.count,
                "reasons": {reason: entry["count"] for reason, entry in refused.by_reason.items()},
                **({"error": error} if error else {}),
            },
        )
        _publish(bulk)


def _publish(bulk: BulkAction) -> None:
    """The bulk action's progress, for its user's pages (after the commit)."""
    refused = Refusals(dict(bulk.refused or {})).count
    engine_events.publish_on_commit(
        [
            {
                "type": "bulk",
                "bulk": bulk.pk,
                "users": [bulk.user_id],
                "action": bulk.action,
                "state": bulk.state,
                "total": bulk.total,
                "processed": bulk.processed,
                "succeeded": bulk.succeeded,
                "refused": refused,
            }
        ]
    )


# --- recovery -----------------------------------------------------------------------------------


def take_up_stale(limit: int = 20) -> int:
    """Queue again the bulk actions whose lease ran out: a running one whose consumer died
    mid-way (it goes on from `processed`), or a queued one whose task was lost. Each is
    taken with a compare-and-set, so that of several consumers doing this at once one
    queues it. Returns how many were queued."""
    now = timezone.now()
    stale = BulkAction.objects.filter(
        state__in=[BulkAction.QUEUED, BulkAction.RUNNING], lease_until__lt=now
    ).values_list("pk", "lease_until")
    queued = 0
    for pk, lease in stale.order_by("lease_until")[:limit]:
        taken = BulkAction.objects.filter(pk=pk, lease_until=lease).update(
            state=BulkAction.QUEUED, lease_until=queue_deadline()
        )
        if taken:
            logger.warning("bulk action %s: its lease ran out; queued again", pk)
            dispatch.run_bulk(pk)
            queued += 1
    return queued
