"""The consumer's housekeeping thread: renew the leases of the flows this process runs, sweep
expired leases and re-check waiting flows every few seconds (Huey's periodic tasks only run
once a minute)."""

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
        self.sweep_every = float(settings.FLOWSTUDIO["SWEEP_SECONDS"])
        self.recheck_every = float(settings.FLOWSTUDIO["RECHECK_SECONDS"])
        # Leases are renewed a few times per lease period, so one missed beat is harmless.
        self.beat = min(self.sweep_every, float(settings.FLOWSTUDIO["LEASE_SECONDS"]) / 4)

    def run(self) -> None:
        from engine import api, lease

        last_recheck = last_sweep = 0.0
        while not self.stopping.is_set():
            close_old_connections()
            try:
                lease.renew()
                if time.monotonic() - last_sweep >= self.sweep_every:
                    last_sweep = time.monotonic()
                    api.sweep()
                    from engine.ltm_runner import sweep_ltm

                    sweep_ltm()
                if time.monotonic() - last_recheck >= self.recheck_every:
                    last_recheck = time.monotonic()
                    api.recheck_waiting()
            except Exception:
                logger.exception("housekeeping failed; trying again shortly")
            finally:
                close_old_connections()
            self.stopping.wait(self.beat)

    def stop(self) -> None:
        self.stopping.set()
