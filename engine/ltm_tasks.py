"""Huey task of LTM runs: thin glue around `engine.ltm_runner`."""

from __future__ import annotations

from huey.contrib.djhuey import HUEY, db_task

from engine import ltm_runner

__all__ = ["HUEY", "execute_ltm_task"]


@db_task()
def execute_ltm_task(execution_id: int) -> None:
    """Execute one queued state of an LTM run (an outbox row); a duplicate is a no-op."""
    ltm_runner.execute_execution(execution_id)
