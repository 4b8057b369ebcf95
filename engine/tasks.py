"""Huey tasks of the engine: thin glue around `engine.runner` and `engine.sweep`."""

from __future__ import annotations

from typing import Any

from huey import crontab
from huey.contrib.djhuey import HUEY, db_periodic_task, db_task

from engine import runner
from engine import sweep as sweeper

__all__ = ["HUEY", "perform_offloaded_task", "run_flow_task", "sweep_task"]


@db_task()
def run_flow_task(flow_id: int) -> None:
    runner.run_flow(flow_id)


@db_task()
def perform_offloaded_task(flow_id: int, version: int) -> bool:
    return runner.perform_offloaded(flow_id, version)


@HUEY.post_execute()
def resume_after_offloaded_step(task: Any, task_value: Any, exc: Exception | None) -> None:
    # The job returns True when it left its flow PENDING for a blocking step. Resumption is
    # quick through this hook; if the worker died before it, the sweep hands the flow on.
    if isinstance(task, perform_offloaded_task.task_class) and task_value is True:
        run_flow_task(task.args[0])


@db_periodic_task(crontab(minute="*"))
def sweep_task() -> None:
    """Once a minute even on a bare `run_huey`; `run_engine` sweeps every few seconds."""
    from engine import api

    sweeper.sweep()
    from engine.ltm_runner import sweep_ltm

    sweep_ltm()
    api.recheck_waiting()
