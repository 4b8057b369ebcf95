"""Settings of `bench/peers.py`: the studio's own, plus django-viewflow's apps when it is
installed (the optional `bench` extra), so that the peer can be migrated and run beside the
engine without touching the project's settings."""

from __future__ import annotations

import importlib.util

from studio.settings import *  # noqa: F403
from studio.settings import INSTALLED_APPS

PEERS_VIEWFLOW = importlib.util.find_spec("viewflow") is not None
if PEERS_VIEWFLOW:
    # "bench" is an app here only so that viewflow can name the flows of bench.peers_viewflow.
    INSTALLED_APPS = [*INSTALLED_APPS, "viewflow", "viewflow.workflow", "bench"]
