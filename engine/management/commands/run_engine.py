"""Run a Huey consumer for the engine, with its housekeeping thread (lease sweeps and
re-checks of waiting flows every few seconds)."""

from __future__ import annotations

import faulthandler
import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from engine import config, dbpool, huey_tasks
from engine.housekeeping import Housekeeper


class Command(BaseCommand):
    help = "Run the engine's Huey consumer (worker threads plus lease sweeps and re-checks)."

    def add_arguments(self, parser):
        parser.add_argument("-w", "--workers", type=int, help="worker threads")
        parser.add_argument(
            "--no-live",
            action="store_true",
            help="run even though this process's events cannot reach browsers (embedded mode)",
        )

    def handle(self, *args, **options):
        if huey_tasks.immediate():
            raise CommandError(
                "Huey is in immediate mode (HUEY_IMMEDIATE is set): tasks run inline and no "
                "consumer is needed. Unset HUEY_IMMEDIATE to run a consumer."
            )
        layer = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
        if "InMemory" in layer and not options["no_live"]:
            raise CommandError(
                "Embedded mode: the engine's consumer runs inside `manage.py studio` (the "
                "`./studio.sh start` command), where its events reach the browser through the "
                "in-process channel layer. A separate consumer process could not reach any "
                "browser. Set REDIS_URL (and DATABASE_URL) to scale out with separate "
                "consumers, or pass --no-live to run one without live updates."
            )
        workers = int(options.get("workers") or config.consumer_options().get("workers") or 1)
        logging.getLogger("huey").setLevel(logging.WARNING)
        # Before any thread connects: one connection per worker, housekeeping, a spare.
        pool = dbpool.configure(web=False, workers=workers)
        consumer = huey_tasks.create_consumer(workers)
        # `kill -USR1 <pid>` prints every thread's stack to stderr: where a stuck worker is.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        housekeeper = Housekeeper()
        housekeeper.start()
        self.stdout.write(
            f"engine consumer: {workers} worker threads on {huey_tasks.queue_kind()}"
            + (f", database pool of {pool}" if pool else ""),
        )
        self.stdout.flush()
        try:
            consumer.run()
        finally:
            housekeeper.stop()
