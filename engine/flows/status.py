"""Flow states, and which action fits which state: one small module (the pure core uses the
same strings). `engine.flows.service` refuses an action whose state is not in its row, and the
studio's pages offer exactly the actions of a flow's row."""

from __future__ import annotations

from django.db import models

from engine.core.flows import outcome


class FlowState(models.TextChoices):
    PENDING = outcome.PENDING, "Pending"
    RUNNING = outcome.RUNNING, "Running"
    WAITING = outcome.WAITING, "Waiting"
    RETRYING = outcome.RETRYING, "Retrying"
    COMPLETE = outcome.COMPLETE, "Complete"
    KILLED = outcome.KILLED, "Killed"
    FAILED = outcome.FAILED, "Failed"


FINISHED = frozenset({FlowState.COMPLETE, FlowState.KILLED, FlowState.FAILED})
ACTIVE = frozenset({FlowState.PENDING, FlowState.RUNNING, FlowState.WAITING, FlowState.RETRYING})

# The states each action accepts (operator overrides, and input to a waiting step).
ACTIONS: dict[str, frozenset[str]] = {
    "input": frozenset({FlowState.WAITING}),
    "move": frozenset(
        {
            FlowState.PENDING,
            FlowState.WAITING,
            FlowState.RETRYING,
            FlowState.COMPLETE,
            FlowState.KILLED,
            FlowState.FAILED,
        }
    ),
    # a failed or killed step performed again; a retrying one at once ("retry now")
    "retry": frozenset({FlowState.FAILED, FlowState.KILLED, FlowState.RETRYING}),
    "skip": frozenset(
        {
            FlowState.WAITING,
            FlowState.FAILED,
            FlowState.KILLED,
            FlowState.PENDING,
            FlowState.RETRYING,
        }
    ),
    "kill": frozenset(
        {
            FlowState.PENDING,
            FlowState.RUNNING,
            FlowState.WAITING,
            FlowState.FAILED,
            FlowState.RETRYING,
        }
    ),
    "resume": frozenset({FlowState.WAITING, FlowState.KILLED, FlowState.FAILED}),
    # no more automatic attempts: the flow fails with its last error
    "give_up": frozenset({FlowState.RETRYING}),
    # onto another version of its routine (engine.flows.versions)
    "change_version": frozenset(
        {FlowState.PENDING, FlowState.WAITING, FlowState.FAILED, FlowState.KILLED}
    ),
}
# The overrides an operator is offered on a flow's page, in this order.
OVERRIDES = ("move", "retry", "skip", "kill", "resume", "give_up", "change_version")


def actions_for(state: str) -> list[str]:
    """The actions that fit a flow in `state` ("input" first, then the overrides)."""
    return [action for action, states in ACTIONS.items() if state in states]
