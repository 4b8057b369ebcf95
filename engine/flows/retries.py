"""Recovery of a step visit: its retry policy (the script's, with the routine step's
overrides), the visit's idempotency key, and what a flow between attempts shows.

The runner (engine.flows.runner) applies the policy when an attempt fails, and the
housekeeping fires due retries and expired time limits (`fire_retries`,
`expire_time_limits` there)."""

from __future__ import annotations

import secrets
from typing import Any

from engine.core.flows import script as scripts
from engine.core.flows.retry import RetryPolicy, policy_for
from engine.flows.models import Flow


def new_visit_key() -> str:
    """A new step visit's key: random, so that keys never collide across flows, databases
    or installations."""
    return secrets.token_hex(8)


def idempotency_key(flow: Flow) -> str:
    """The same for every attempt and re-perform of the current visit of the flow's step,
    new when the flow comes to the step again: ``flow-<id>-step-<n>-<visit key>``."""
    return f"flow-{flow.pk}-step-{flow.position + 1}-{flow.visit_key or 'v0'}"


def step_policy(flow: Flow, position: int | None = None) -> RetryPolicy | None:
    """The retry policy of the flow's step at `position` (the current one by default); None
    when its script is not registered."""
    position = flow.position if position is None else position
    try:
        step = flow.steps[position]
        cls = scripts.get_script(step["script"])
    except (LookupError, IndexError):
        return None
    return policy_for(cls, step.get("overrides"))


def retry_status(flow: Flow) -> dict[str, Any] | None:
    """What a RETRYING flow shows: the attempt due, of how many, and when."""
    if flow.retry_at is None:
        return None
    policy = step_policy(flow)
    attempts = policy.attempts if policy else flow.attempt
    return {"attempt": flow.attempt, "attempts": attempts, "at": flow.retry_at}
