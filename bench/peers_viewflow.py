"""The peer's side of `bench/peers.py`: the same 10-node linear flow in django-viewflow 2.4
(a start handle, ten synchronous function nodes each storing a tiny dict, an end). Imported
only once Django is set up with `bench.peers_settings` and viewflow is installed."""

from __future__ import annotations

from typing import Any

from viewflow import this
from viewflow.workflow import flow


def _step(position: int) -> Any:
    def perform(self: Any, activation: Any) -> None:
        activation.task.data = {"result": position}

    perform.__name__ = f"perform_{position}"
    return perform


def _build(steps: int) -> type:
    """A linear flow of `steps` function nodes: start -> step_0 -> ... -> end."""
    body: dict[str, Any] = {"__module__": __name__}
    body["start"] = flow.StartHandle().Next(this.step_0 if steps else this.end)
    for position in range(steps):
        following = this.end if position + 1 == steps else getattr(this, f"step_{position + 1}")
        body[f"step_{position}"] = flow.Function(getattr(this, f"perform_{position}")).Next(
            following
        )
        body[f"perform_{position}"] = _step(position)
    body["end"] = flow.End()
    return type(f"Linear{steps}", (flow.Flow,), body)


# viewflow names a flow by its module and class: one module-level class per length.
Linear1 = _build(1)
Linear10 = _build(10)


def flow_of(steps: int) -> Any:
    """The linear flow of `steps` function nodes."""
    name = f"Linear{steps}"
    if name not in globals():
        globals()[name] = _build(steps)
    return globals()[name]
