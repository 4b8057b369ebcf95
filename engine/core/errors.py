"""Errors of the engine that callers catch."""


class FlowStateError(Exception):
    """A call does not fit the flow's (or LTM run's) state: input to a flow that is not
    waiting, a position out of range, an action on a finished flow. The message says what
    the caller can do."""


class StaleFlowError(FlowStateError):
    """The flow changed since the caller loaded it; reload and try again."""
