"""Huey at the edge: the only module of the engine that imports it.

It defines the Huey tasks (thin glue around the runners), the hook that resumes a flow after
its offloaded step, the periodic sweep of a bare `run_huey`, and the backend that
`engine.dispatch` sends work to; `install()` plugs that backend in at start-up.
"""

from __future__ import annotations

import gc
from typing import Any

from huey import crontab
from huey.consumer import Consumer
from huey.contrib.djhuey import HUEY, db_periodic_task, db_task

from engine import config, dispatch
from engine.flows import bulk, runner, sweep
from engine.flows.service import recheck_waiting
from engine.ltm import executor
from engine.ltm.sweep import sweep_ltm

__all__ = ["HUEY", "HueyBackend", "create_consumer", "immediate", "install", "queue_kind"]


@db_task()
def run_flow_task(flow_id: int) -> None:
    runner.run_flow(flow_id)


@db_task()
def perform_offloaded_task(flow_id: int, version: int) -> bool:
    return runner.perform_offloaded(flow_id, version)


@db_task()
def execute_ltm_task(execution_id: int) -> None:
    """Execute one queued state of an LTM run (an outbox row); a duplicate is a no-op."""
    executor.execute_execution(execution_id)


@db_task()
def run_bulk_task(bulk_id: int) -> None:
    """Run a bulk action over many flows (or go on with one whose lease ran out)."""
    bulk.run_bulk(bulk_id)


@HUEY.post_execute()
def resume_after_offloaded_step(task: Any, task_value: Any, exc: Exception | None) -> None:
    # The job returns True when it left its flow PENDING for a blocking step. Resumption is
    # quick through this hook; if the worker died before it, the sweep hands the flow on.
    if isinstance(task, perform_offloaded_task.task_class) and task_value is True:
        run_flow_task(task.args[0])


@db_periodic_task(crontab(minute="*"))
def sweep_task() -> None:
    """Once a minute even on a bare `run_huey`; `run_engine` sweeps every few seconds."""
    sweep.sweep()
    sweep_ltm()
    recheck_waiting()


class HueyBackend:
    """engine.dispatch's backend: each kind of work is a Huey task."""

    @property
    def immediate(self) -> bool:
        return bool(HUEY.immediate)

    def run_flow(self, flow_id: int) -> None:
        run_flow_task(flow_id)

    def perform_offloaded(self, flow_id: int, version: int, job_id: str) -> None:
        HUEY.enqueue(perform_offloaded_task.task_class((flow_id, version), {}, id=job_id))

    def execute_ltm(self, execution_id: int) -> None:
        execute_ltm_task(execution_id)

    def run_bulk(self, bulk_id: int) -> None:
        run_bulk_task(bulk_id)

    def queued(self) -> set[dispatch.Queued]:
        held: set[dispatch.Queued] = set()
        for task in HUEY.pending():
            held.add(("job", task.id))
            if isinstance(task, run_flow_task.task_class):
                held.add(("run", task.args[0]))
            elif isinstance(task, execute_ltm_task.task_class):
                held.add(("ltm", task.args[0]))
        return held


def install() -> None:
    dispatch.plug(HueyBackend())


def immediate() -> bool:
    return bool(HUEY.immediate)


def queue_kind() -> str:
    return type(HUEY).__name__


def create_consumer(workers: int | None = None) -> Any:
    """A Huey consumer of the engine's queue with the configured options (`run_engine`, or
    inside `manage.py studio`); `workers` overrides the number of worker threads."""
    options = config.consumer_options()
    if workers:
        options["workers"] = workers
    # What the process holds by now (modules, classes, Django's registries: tens of thousands
    # of objects that live as long as it does) is left out of the garbage collector's rounds
    # from here on: each round walked all of it again, a few per cent of an LTM execution.
    gc.freeze()
    return EngineConsumer(HUEY, **options)


class EngineConsumer(Consumer):
    """Huey's consumer whose stop wakes its idle workers at once: a worker waiting for work
    (up to a second, `engine.queue`) would otherwise keep a graceful stop waiting for it."""

    def stop(self, graceful: bool = False) -> None:
        self.stop_flag.set()
        wake = getattr(self.huey.storage, "wake_idle", None)
        if wake is not None:
            wake()
        super().stop(graceful)
