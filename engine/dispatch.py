"""The single exit for queued work.

The engine asks for work to be done later through this port, never through a queue library:
run a flow, perform an offloaded step, execute an LTM state, run a bulk action. What does it
is plugged in at start-up (`engine.huey_tasks` plugs Huey in, from the app's `ready()`), the
way the studio plugs its publisher into `engine.events`. Work is sent after the current
transaction commits, so a worker never sees a row that is not there yet.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from django.db import transaction

# What the queue holds, as the engine names it: ("run", flow id), ("job", job id),
# ("ltm", execution id).
Queued = tuple[str, Any]


class Backend(Protocol):
    @property
    def immediate(self) -> bool:
        """Whether work runs inline, at once (tests; Huey's immediate mode)."""
        ...

    def run_flow(self, flow_id: int) -> None: ...

    def perform_offloaded(self, flow_id: int, version: int, job_id: str) -> None: ...

    def execute_ltm(self, execution_id: int) -> None: ...

    def run_bulk(self, bulk_id: int) -> None: ...

    def queued(self) -> set[Queued]: ...


_backend: Backend | None = None


def plug(backend: Backend) -> None:
    global _backend
    _backend = backend


def backend() -> Backend:
    if _backend is None:
        raise RuntimeError(
            "no queue is plugged into engine.dispatch (is the engine app installed?)"
        )
    return _backend


def immediate() -> bool:
    return backend().immediate


def new_job_id() -> str:
    """An id for an offloaded job, known before the write that queues it."""
    return str(uuid.uuid4())


def run_flow(flow_id: int) -> None:
    """Run (or resume) a pending flow, once the current transaction commits."""
    transaction.on_commit(lambda: backend().run_flow(flow_id))


def perform_offloaded(flow_id: int, version: int, job_id: str) -> None:
    """Perform the flow's current non-blocking step as its own job, once the current
    transaction commits; the job runs only while the flow is still at `version`."""
    transaction.on_commit(lambda: backend().perform_offloaded(flow_id, version, job_id))


def execute_ltm(execution_id: int) -> None:
    """Execute one queued state of an LTM run (now: the outbox row is committed already)."""
    backend().execute_ltm(execution_id)


def run_bulk(bulk_id: int) -> None:
    """Run (or go on with) a bulk action over many flows, once the current transaction
    commits."""
    transaction.on_commit(lambda: backend().run_bulk(bulk_id))


def queued() -> set[Queued]:
    """What the queue holds now (for the sweeps: lost work is work no longer queued)."""
    return backend().queued()
