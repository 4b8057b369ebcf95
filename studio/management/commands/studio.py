"""Run the whole studio in one process: the daphne web server and, in embedded mode, the
engine's Huey consumer threads with their housekeeping."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from huey.contrib.djhuey import HUEY

from engine.background import Housekeeper


class Command(BaseCommand):
    help = "Serve the studio (daphne) with the engine's consumer running inside the process."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-consumer",
            action="store_true",
            help="serve only (scale-out mode: consumers run as their own processes)",
        )

    def handle(self, *args, **options):
        from daphne.cli import CommandLineInterface

        consumer = housekeeper = None
        if not options["no_consumer"]:
            if HUEY.immediate:
                raise CommandError("HUEY_IMMEDIATE is set: unset it to run the studio.")
            consumer = HUEY.create_consumer(**settings.HUEY.get("consumer", {}))
            consumer.start()  # worker threads and scheduler, without taking over signals
            housekeeper = Housekeeper()
            housekeeper.start()
        self.stdout.write(
            f"Flow Studio on http://{options['host']}:{options['port']}/ "
            f"({'with' if consumer else 'without'} the engine consumer in this process)"
        )
        self.stdout.flush()
        try:
            CommandLineInterface().run(
                ["-b", options["host"], "-p", str(options["port"]), "studio.asgi:application"]
            )
        finally:
            if housekeeper:
                housekeeper.stop()
            if consumer:
                consumer.stop(graceful=True)
