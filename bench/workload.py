"""Scripts and a bare Huey chain for the benchmarks (imported by the bench and its consumer)."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from huey.contrib.djhuey import db_task

from engine import Task
from engine.models import Flow, FlowEvent


class Trivial(Task):
    """A trivial blocking step."""

    name = "bench_trivial"

    def perform(self):
        return self.position


class TinyDict(Task):
    """A trivial blocking step returning a tiny dict (the peers' workload)."""

    name = "bench_tiny"

    def perform(self):
        return {"result": self.position}


class TrivialOffloaded(Task):
    """The same step, non-blocking: each one is its own Huey task."""

    name = "bench_offloaded"
    blocking = False

    def perform(self):
        return self.position


def floor_step(flow_id: int, position: int) -> None:
    """The bare floor: one result row and one position update, in one transaction."""
    with transaction.atomic():
        FlowEvent.objects.create(
            flow_id=flow_id,
            seq=position + 1000,
            kind="bench",
            state="running",
            position=position,
            data={"result": position},
        )
        Flow.objects.filter(pk=flow_id).update(position=F("position") + 1)


@db_task()
def bare_chain_step(flow_id: int, position: int, length: int) -> None:
    """A bare Huey chain doing the same writes as a step: the baseline for offloaded steps."""
    floor_step(flow_id, position)
    if position + 1 < length:
        bare_chain_step(flow_id, position + 1, length)
