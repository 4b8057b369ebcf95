"""Stuck or slow: who holds a flow now, and what the housekeeping will do with it and when.

A running step is held by a consumer process (its `Worker` row, beaten every
`HEARTBEAT_SECONDS`, names the thread performing each flow it holds, see engine.leases and
engine.liveness). `holder(flow)` reads that row; `plan(flow, now)` says, in words a user
understands, what the housekeeping (engine.housekeeping) does next with the flow in its
state, and when: requeue a lost pending flow, hand on the step of a worker that stopped
beating, fail an attempt past its time limit, fire a due retry, a passed deadline, a
reminder, the periodic re-check of a waiting step."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import DurationField, ExpressionWrapper, F
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from engine import config
from engine.core.flows import script as scripts
from engine.core.flows.retry import TimeLimitExceeded
from engine.flows import retries
from engine.flows.models import Flow
from engine.flows.runner import time_limit
from engine.flows.status import FINISHED, FlowState
from engine.liveness import Worker

__all__ = ["holder", "plan"]


def holder(flow: Flow) -> dict[str, Any] | None:
    """Who performs the running flow's step now: its worker's row (`worker` id, `host`,
    `pid`, `started`), its last `beat` and how many seconds ago that was (`age`, on the
    database's clock like every liveness check), whether it still counts as alive, and the
    `thread` holding the flow with `since` when (None when its last beat did not list the
    flow: the step is just starting or ending). None when the flow is not running or no
    live row names its worker (a step run inline, or a worker already gone)."""
    if flow.state != FlowState.RUNNING or not flow.worker:
        return None
    age = ExpressionWrapper(Now() - F("beat"), output_field=DurationField())
    row = Worker.objects.filter(pk=flow.worker).annotate(age=age).first()
    if row is None:
        return None
    seconds = max(0.0, row.age.total_seconds()) if isinstance(row.age, timedelta) else 0.0
    threads = row.threads if isinstance(row.threads, dict) else {}
    info = threads.get(str(flow.pk))
    info = info if isinstance(info, dict) else {}
    since = info.get("since")
    return {
        "worker": row.pk,
        "host": row.host,
        "pid": row.pid,
        "started": row.started,
        "beat": row.beat,
        "age": seconds,
        "alive": seconds <= config.seconds("WORKER_TIMEOUT_SECONDS"),
        "thread": str(info["thread"]) if info.get("thread") else None,
        "since": parse_datetime(since) if isinstance(since, str) else None,
        "holds": flow.pk in (row.held if isinstance(row.held, list) else []),
    }


def _item(at: datetime | None, what: str) -> dict[str, Any]:
    return {"at": at, "what": what}


def _in_order(items: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Standing facts and rules first, then what happens at a time, soonest first."""
    return sorted(items, key=lambda item: (item["at"] is not None, item["at"] or now))


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _step(flow: Flow) -> str:
    step = flow.current_step or {}
    name = step.get("name") or step.get("script")
    return f"step {flow.position + 1}" + (f" ({name})" if name else "")


def _script(flow: Flow) -> type[scripts.Task] | None:
    step = flow.current_step
    if step is None:
        return None
    try:
        return scripts.get_script(step["script"])
    except LookupError:
        return None


def plan(flow: Flow, now: datetime | None = None) -> list[dict[str, Any]]:
    """What the housekeeping will do with `flow` and when, as of `now`: a list of
    ``{"at": datetime or None, "what": text}``, soonest first where a time is known (`at`
    None: a standing rule or a fact, not a moment). The texts read after their time."""
    now = now or timezone.now()
    state = flow.state
    if state in FINISHED:
        return [_item(None, "Nothing: the flow has finished.")]
    beat = _seconds(config.seconds("HEARTBEAT_SECONDS"))
    if state == FlowState.PENDING:
        return _pending(flow, now)
    if state == FlowState.RETRYING:
        status = retries.retry_status(flow)
        if status is None:
            return [_item(None, f"Waiting to retry {_step(flow)}, with no due time set.")]
        attempt = f"attempt {status['attempt']} of {status['attempts']} of {_step(flow)}"
        if status["at"] <= now:
            due = f"{attempt[:1].upper()}{attempt[1:]} is due: the next round (every {beat})"
            return [_item(None, f"{due} queues it.")]
        return [
            _item(
                status["at"],
                f"{attempt} is queued to run (an operator may retry now or give up instead).",
            )
        ]
    if state == FlowState.WAITING:
        return _waiting(flow, now, beat)
    return _running(flow, now, beat)


def _pending(flow: Flow, now: datetime) -> list[dict[str, Any]]:
    items = [_item(None, f"Queued to run {_step(flow)}: a worker takes it up when one is free.")]
    if flow.lease_until is None:
        return items
    if flow.lease_until <= now:
        sweep = _seconds(config.seconds("SWEEP_SECONDS"))
        items.append(
            _item(
                None,
                f"Not started by its queue deadline: the next sweep (every {sweep}) queues "
                "it again.",
            )
        )
    else:
        items.append(
            _item(
                flow.lease_until, "if no worker has started it by then, the sweep queues it again."
            )
        )
    return items


def _waiting(flow: Flow, now: datetime, beat: str) -> list[dict[str, Any]]:
    cls = _script(flow)
    items = []
    if flow.deadline is not None:
        then = (
            "its script's on_timeout() decides what happens"
            if cls is not None and cls.handles_timeout()
            else "the flow fails as timed out"
        )
        if flow.deadline <= now:
            items.append(
                _item(None, f"Its deadline has passed: at the next round (every {beat}) {then}.")
            )
        else:
            items.append(_item(flow.deadline, f"deadline: with no answer by then, {then}."))
    if flow.remind_at is not None and flow.remind_at > now:
        items.append(_item(flow.remind_at, "the people it waits for are reminded of the deadline."))
    if cls is not None and cls.checks_while_waiting():
        recheck = _seconds(config.seconds("RECHECK_SECONDS"))
        items.append(
            _item(
                None,
                f"Its script's check() runs every {recheck} and moves the flow on once it no "
                "longer waits.",
            )
        )
    if not items:
        items.append(_item(None, "Nothing: it waits for input (or an operator) with no deadline."))
    return _in_order(items, now)


def _running(flow: Flow, now: datetime, beat: str) -> list[dict[str, Any]]:
    cls = _script(flow)
    rerunnable = cls is None or cls.rerunnable
    then = (
        "performed again by another worker"
        if rerunnable
        else "failed as interrupted (its script must not run twice)"
    )
    timeout = _seconds(config.seconds("WORKER_TIMEOUT_SECONDS"))
    items = []
    who = holder(flow)
    if who is not None and who["alive"]:
        thread = f", thread {who['thread']}" if who["thread"] else ""
        items.append(
            _item(
                None,
                f"Held by worker {who['host']} (process {who['pid']}{thread}), which beats "
                f"every {beat}: its lease is renewed while it beats.",
            )
        )
        items.append(
            _item(None, f"If that worker stops beating for {timeout}, the step is {then}.")
        )
    elif who is not None:
        items.append(
            _item(
                None,
                f"Its worker {who['host']} (process {who['pid']}) last beat {who['age']:.0f} s "
                f"ago, more than {timeout}: the next round of another worker hands the step "
                f"on: it is {then}.",
            )
        )
    else:
        if flow.job_id and not flow.worker:
            items.append(_item(None, "Its step's job waits in the queue for a free worker."))
        if flow.lease_until is not None:
            if flow.lease_until <= now:
                items.append(
                    _item(
                        None,
                        f"Its lease has run out: the next sweep hands the step on: it is {then}.",
                    )
                )
            else:
                items.append(
                    _item(
                        flow.lease_until,
                        f"its lease runs out unless a worker renews it: the step is then {then}.",
                    )
                )
    if flow.step_deadline is not None:
        try:
            limit = time_limit(flow, cls)
        except (IndexError, LookupError):
            limit = 0
        said = f'"took longer than {limit:g} s"' if limit else '"took longer than its time limit"'
        after = _after_time_limit(flow)
        if flow.step_deadline <= now:
            items.append(
                _item(
                    None,
                    f"Past its time limit: at the next round (every {beat}) the attempt fails "
                    f"with {said}; {after}.",
                )
            )
        else:
            items.append(
                _item(
                    flow.step_deadline,
                    f"time limit: an attempt still running then fails with {said}; {after}.",
                )
            )
    return _in_order(items, now)


def _after_time_limit(flow: Flow) -> str:
    """What follows an attempt failed by its time limit, per the step's retry policy."""
    policy = retries.step_policy(flow)
    if policy is None or not policy.retries_after(flow.attempt, TimeLimitExceeded):
        return "no attempt is left, so the flow fails"
    following = f"attempt {flow.attempt + 1} of {policy.attempts}"
    delay = policy.delay(flow.attempt, rand=lambda: 0.5)  # (no jitter: its middle)
    if delay <= 0:
        return f"{following} follows at once"
    return f"{following} follows about {_seconds(round(delay, 3))} later"
