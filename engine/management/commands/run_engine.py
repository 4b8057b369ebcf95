"""Run a Huey consumer for the engine, with its housekeeping thread (lease sweeps and
re-checks of waiting flows every few seconds)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from huey.contrib.djhuey import HUEY

from engine.background import Housekeeper


class Command(BaseCommand):
    help = "Run the engine's Huey consumer (worker threads plus lease sweeps and re-checks)."

    def add_arguments(self, parser):
        parser.add_argument("-w", "--workers", type=int, help="worker threads")

    def handle(self, *args, **options):
        if HUEY.immediate:
            raise CommandError(
                "Huey is in immediate mode (HUEY_IMMEDIATE is set): tasks run inline and no "
                "consumer is needed. Unset HUEY_IMMEDIATE to run a consumer."
            )
        consumer_options = dict(settings.HUEY.get("consumer", {}))
        if options.get("workers"):
            consumer_options["workers"] = options["workers"]
        logging.getLogger("huey").setLevel(logging.WARNING)
        consumer = HUEY.create_consumer(**consumer_options)
        housekeeper = Housekeeper()
        housekeeper.start()
        self.stdout.write(
            f"engine consumer: {consumer_options.get('workers')} worker threads on "
            f"{type(HUEY).__name__}",
        )
        self.stdout.flush()
        try:
            consumer.run()
        finally:
            housekeeper.stop()
