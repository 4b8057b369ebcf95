"""Run the whole studio in one process: the daphne web server and, in embedded mode, the
engine's Huey consumer threads with their housekeeping."""

from __future__ import annotations

import gc

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from engine import dbpool, huey_tasks
from engine.housekeeping import Housekeeper


def settle() -> None:
    """Load the views now and set everything loaded so far (Django, the URL conf, the
    libraries: some 150,000 objects) aside from the garbage collector, which otherwise walks
    them at every full collection: with a thousand live sockets that halved the server's
    longest pauses (gc.freeze; nothing loaded at start-up is ever freed anyway)."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018  (imports every view)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


class Command(BaseCommand):
    help = "Serve the studio (daphne) with the engine's consumer running inside the process."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--backlog",
            type=int,
            default=1024,
            help="connections the kernel holds before the server accepts them (Twisted's "
            "default of 50 reset some of 200 simultaneous clients)",
        )
        parser.add_argument(
            "--no-consumer",
            action="store_true",
            help="serve only (scale-out mode: consumers run as their own processes)",
        )

    def handle(self, *args, **options):
        from daphne.cli import CommandLineInterface

        consumer = housekeeper = None
        consumer_options = settings.HUEY.get("consumer", {})
        workers = 0 if options["no_consumer"] else int(consumer_options.get("workers") or 1)
        # Before any thread connects: the web server's share plus the consumer's threads.
        pool = dbpool.configure(web=True, workers=workers)
        if not options["no_consumer"]:
            if huey_tasks.immediate():
                raise CommandError("HUEY_IMMEDIATE is set: unset it to run the studio.")
            consumer = huey_tasks.create_consumer()
            consumer.start()  # worker threads and scheduler, without taking over signals
            housekeeper = Housekeeper()
            housekeeper.start()
        self.stdout.write(
            f"Flow Studio on http://{options['host']}:{options['port']}/ "
            f"({'with' if consumer else 'without'} the engine consumer in this process"
            + (f"; database pool of {pool}" if pool else "")
            + ")"
        )
        self.stdout.flush()
        settle()
        try:
            host = options["host"].strip("[]").replace(":", r"\:")  # as daphne's -b does
            endpoint = f"tcp:port={options['port']}:interface={host}:backlog={options['backlog']}"
            CommandLineInterface().run(["-e", endpoint, "studio.asgi:application"])
        finally:
            if housekeeper:
                housekeeper.stop()
            if consumer:
                consumer.stop(graceful=True)
