"""Which consumer processes are alive.

Each consumer process (`manage.py run_engine`, or the studio's own in embedded mode) has a row
in `Worker` and beats it every `HEARTBEAT_SECONDS`. Every write a process makes to a flow, and
every LTM execution it claims, carries its worker id. A worker whose beat is older than
`WORKER_TIMEOUT_SECONDS` is gone (killed, its machine lost): the housekeeping of any other
live consumer expires the leases of the work it held, hands that work on at once and deletes
its row. Leases stay as the fallback for work held by a process that never beat (inline runs).

Beats and the timeout are measured on the database's clock, so consumers on machines whose
clocks disagree still agree on who is alive.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from datetime import timedelta

from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from engine import config

logger = logging.getLogger(__name__)


class Worker(models.Model):
    """A live consumer process, beating its row every few seconds (see engine.liveness)."""

    id = models.CharField(max_length=100, primary_key=True)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    started = models.DateTimeField(auto_now_add=True)
    beat = models.DateTimeField(default=timezone.now, db_index=True)
    # Ids of the flows whose steps it performs, as of its last beat.
    held = models.JSONField(default=list, blank=True)
    # Which of its threads performs each of them, and since when:
    # {"<flow id>": {"thread": name, "since": iso time}}, as of its last beat.
    threads = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["started"]

    def __str__(self) -> str:
        return f"worker {self.id}"


_identity: tuple[int, str] | None = None


def worker_id() -> str:
    """This process's worker id: host, pid and a random tag (pids are reused)."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        _identity = (pid, f"{socket.gethostname()[:60]}:{pid}:{secrets.token_hex(4)}")
    return _identity[1]


def heartbeat_seconds() -> float:
    return config.seconds("HEARTBEAT_SECONDS")


def timeout() -> timedelta:
    return timedelta(seconds=config.seconds("WORKER_TIMEOUT_SECONDS"))


def beat(flows: list[int], threads: dict[str, dict[str, str]] | None = None) -> None:
    """Say this process is alive and performs the steps of `flows`, each by the thread
    `threads` names (``{"<flow id>": {"thread", "since"}}``, see `engine.leases.Held`):
    one UPDATE, or registering it on its first beat (or again after another consumer took
    it for dead during a long pause)."""
    me = worker_id()
    threads = threads or {}
    if not Worker.objects.filter(pk=me).update(beat=Now(), held=flows, threads=threads):
        Worker.objects.create(
            id=me,
            host=socket.gethostname()[:200],
            pid=os.getpid(),
            beat=Now(),
            held=flows,
            threads=threads,
        )
        logger.info("engine worker %s beating every %.1f s", me, heartbeat_seconds())


def dead_workers() -> list[str]:
    """Workers whose last beat is older than the timeout (this process excluded)."""
    stale = Worker.objects.filter(beat__lt=Now() - timeout()).exclude(pk=worker_id())
    return list(stale.values_list("pk", flat=True))


def forget(worker: str) -> None:
    Worker.objects.filter(pk=worker).delete()


def stop() -> None:
    """A clean stop: this process holds nothing any more."""
    forget(worker_id())
