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

from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)


class Housekeeper(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="flowstudio-housekeeper", daemon=True)
        self.stopping = threading.Event()
        config = settings.FLOWSTUDIO
        self.heartbeat = float(config["HEARTBEAT_SECONDS"])
        self.sweep_every = float(config["SWEEP_SECONDS"])
        self.recheck_every = float(config["RECHECK_SECONDS"])
        # Leases are renewed a few times per lease period, so one missed round is harmless.
        self.renew_every = min(self.sweep_every, float(config["LEASE_SECONDS"]) / 4)

    def run(self) -> None:
        last = {"renew": 0.0, "sweep": 0.0, "recheck": 0.0}

        def due(duty: str, every: float) -> bool:
            if time.monotonic() - last[duty] < every:
                return False
            last[duty] = time.monotonic()
            return True

        while not self.stopping.is_set():
            close_old_connections()
            try:
                self.tick(due)
            except Exception:
                logger.exception("housekeeping failed; trying again shortly")
            finally:
                close_old_connections()
            self.stopping.wait(self.heartbeat)
        try:
            from engine import liveness

            liveness.stop()
        except Exception:
            logger.exception("could not sign this worker off; others will time it out")
        finally:
            close_old_connections()

    def tick(self, due) -> None:  # type: ignore[no-untyped-def]
        from engine import api, lease, liveness
        from engine.ltm_runner import hand_on_ltm_from, renew_leases, sweep_ltm
        from engine.sweep import hand_on_from

        liveness.beat()
        dead = liveness.dead_workers()
        if dead:
            logger.warning("worker(s) %s stopped beating: handing their work on", dead)
            hand_on_from(dead)
            hand_on_ltm_from(dead)
            for worker in dead:
                liveness.forget(worker)
        if due("renew", self.renew_every):
            lease.renew()
            renew_leases()
        if due("sweep", self.sweep_every):
            api.sweep()
            sweep_ltm()
        if due("recheck", self.recheck_every):
            api.recheck_waiting()

    def stop(self) -> None:
        self.stopping.set()
