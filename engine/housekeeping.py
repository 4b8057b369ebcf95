"""The consumer's housekeeping thread.

Every `HEARTBEAT_SECONDS` it beats this process's worker row and hands on at once the work of
workers whose beat stopped (engine.liveness); every few seconds it renews the leases of the
flows and LTM executions this process runs, sweeps expired leases (the fallback for work of a
process that never beat) and re-checks waiting flows. (Huey's periodic tasks only run once a
minute.)"""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections

from engine import config, liveness
from engine.flows import humans, lease
from engine.flows.bulk import take_up_stale as take_up_stale_bulk
from engine.flows.runner import expire_time_limits, fire_deadlines, fire_retries
from engine.flows.schedules import fire_schedules
from engine.flows.service import recheck_waiting
from engine.flows.sweep import hand_on_from, sweep
from engine.ltm.sweep import hand_on_ltm_from, renew_leases, sweep_ltm
from engine.orphans import OrphanWatch

logger = logging.getLogger(__name__)


class Housekeeper(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="flowstudio-housekeeper", daemon=True)
        self.orphans = OrphanWatch()
        self.stopping = threading.Event()
        self.heartbeat = config.seconds("HEARTBEAT_SECONDS")
        self.sweep_every = config.seconds("SWEEP_SECONDS")
        self.recheck_every = config.seconds("RECHECK_SECONDS")
        # Leases are renewed a few times per lease period, so one missed round is harmless.
        self.renew_every = min(self.sweep_every, config.seconds("LEASE_SECONDS") / 4)
        # Deadlines, reminders and e-mails: checked every beat, so they fire within seconds.
        self.human_every = config.seconds("HEARTBEAT_SECONDS")
        self.last: dict[str, float] = {}

    def due(self, duty: str, every: float) -> bool:
        if time.monotonic() - self.last.get(duty, float("-inf")) < every:
            return False
        self.last[duty] = time.monotonic()
        return True

    def run(self) -> None:
        while not self.stopping.is_set():
            close_old_connections()
            try:
                self.tick()
            except Exception:
                logger.exception("housekeeping failed; trying again shortly")
            finally:
                close_old_connections()
            self.stopping.wait(self.heartbeat)
        try:
            liveness.stop()
        except Exception:
            logger.exception("could not sign this worker off; others will time it out")
        finally:
            close_old_connections()

    def tick(self) -> None:
        """One round: beat, hand on the work of dead workers, and the duties now due."""
        liveness.beat(lease.held(), lease.threads())
        dead = liveness.dead_workers()
        if dead:
            logger.warning("worker(s) %s stopped beating: handing their work on", dead)
            hand_on_from(dead)
            hand_on_ltm_from(dead)
            for worker in dead:
                liveness.forget(worker)
        if self.due("renew", self.renew_every):
            lease.renew()
            renew_leases()
        if self.due("sweep", self.sweep_every):
            sweep()
            sweep_ltm()
            self.orphans.check()
        if self.due("recheck", self.recheck_every):
            recheck_waiting()
        if self.due("humans", self.human_every):
            human_duties()

    def stop(self) -> None:
        self.stopping.set()


def human_duties() -> dict[str, int]:
    """Deadlines that passed, reminders due, notification e-mails to send; retries due and
    steps past their time limits; bulk actions whose lease ran out, queued again."""
    return {
        "retries": fire_retries(),
        "time_limits": expire_time_limits(),
        "deadlines": fire_deadlines(),
        "reminders": humans.send_reminders(),
        "emails": humans.send_emails(),
        "schedules": fire_schedules(),
        "bulk": take_up_stale_bulk(),
    }


_watch: OrphanWatch | None = None


def run_housekeeping() -> dict[str, int]:
    """One pass of every periodic duty at once, exactly what the consumers' housekeeping does
    every few seconds: hand on the work of dead workers, sweep expired leases and lost
    executions, re-check waiting steps, fire passed deadlines, send reminders and
    notification e-mails. Safe beside running consumers (every duty is a compare-and-set).
    Returns what each duty did."""
    global _watch
    if _watch is None:
        _watch = OrphanWatch()
    dead = liveness.dead_workers()
    if dead:
        hand_on_from(dead)
        hand_on_ltm_from(dead)
        for worker in dead:
            liveness.forget(worker)
    done: dict[str, int] = {"dead_workers": len(dead)}
    done["swept"] = sweep() or 0
    sweep_ltm()
    _watch.check()
    done["rechecked"] = recheck_waiting()
    done.update(human_duties())
    return done
