"""Machines of the LTM slice's tests, the registry and Django runtime they run on (the autouse
fixture `django_runtime`, imported by each module that uses them), and a run read back."""

from __future__ import annotations

from typing import Any

import pytest

from engine import api
from engine.core.ltm.node import LTM
from engine.core.ltm.registry import register, unregister
from engine.core.ltm.runtime import get_default_runtime, set_default_runtime
from engine.ltm.executor import DjangoRuntime
from engine.ltm.registry import discover
from engine.models import LtmEvent, LtmInstance, LtmRun

# -- machines of these modules -------------------------------------------------------------


class Probe(LTM):
    """Stores its payload and what the database holds of it while it runs."""

    def run(self, **payload: Any) -> None:
        self.update_state({"payload": payload})
        self.root.update_state({"seen": True})
        row = LtmInstance.objects.get(run_id=self.id, fqn=self.fqn)
        run = LtmRun.objects.get(pk=self.id)
        self.update_state(
            {"stored_inside": dict(row.state), "global_inside": dict(run.global_state)}
        )
        self.update_state({"status_inside": row.status})


class Flaky(LTM):
    failures = 1  # how many executions raise before one succeeds

    def run(self, **payload: Any) -> None:
        self.update_state({"tried": True})
        if Flaky.failures > 0:
            Flaky.failures -= 1
            raise RuntimeError("flaky")
        self.update_state({"payload": payload})


class Fine(LTM):
    def run(self, **payload: Any) -> None:
        self.update_state({"fine": True})


class FlakyLtm(LTM):
    init = [Flaky, Fine]


class NotJson(LTM):
    def run(self, **payload: Any) -> None:
        self.update_state({"bad": object()})


class NotJsonLtm(LTM):
    init = [NotJson]


class Target(LTM):
    pass


class Reached(LTM):
    pass


class Racer(LTM):
    """Queues 'finish', then an operator fires it first: planned later, it moves nothing."""

    operator: Any = None

    def run(self, **payload: Any) -> None:
        self.transition("finish")
        api.fire_transition(self.id, "finish", Racer.operator)


class RaceLtm(LTM):
    init = [Target, Racer]
    transitions = [{"from": Target, "label": "finish", "to": Reached}]


class AppendTwice(LTM):
    def run(self, **payload: Any) -> None:
        runtime = self.runtime
        assert isinstance(runtime, DjangoRuntime)
        first = runtime.atomic_state_append(self.root, "items", "a", 0)
        again = runtime.atomic_state_append(self.root, "items", "a", 0)
        self.update_state({"first": first, "again": again})


class AppendLtm(LTM):
    init = [AppendTwice]

    def run(self, **payload: Any) -> None:
        self.update_state({"items": []})


class Meddler(LTM):
    """Appends, then changes what it appended and what the append returned."""

    initial_state = {"got": []}

    def run(self, **payload: Any) -> None:
        item = {"n": 1, "tags": []}
        got = self.atomic_state_append("got", item)
        item["n"] = 2
        item["tags"].append("changed")
        got[0]["n"] = 3
        got.append("not stored")
        self.root.update_state({"returned": got})


class MeddleLtm(LTM):
    init = [Meddler]


class Stopper(LTM):
    """Kills its own run while it executes: what it queued is discarded."""

    operator: Any = None

    def run(self, **payload: Any) -> None:
        self.update_state({"after_kill": True})
        api.kill_ltm(self.id, Stopper.operator, reason="stop")


class StopLtm(LTM):
    init = [Stopper, Fine]


LOCAL_ROOTS = [Probe, FlakyLtm, NotJsonLtm, RaceLtm, AppendLtm, MeddleLtm, StopLtm]


@pytest.fixture(autouse=True)
def django_runtime():
    """The registry and default runtime as the engine sets them at start-up (other test
    modules may have changed them)."""
    previous = get_default_runtime()
    discover()
    for cls in LOCAL_ROOTS:
        register(cls)
    set_default_runtime(DjangoRuntime())
    yield
    set_default_runtime(previous)
    for cls in LOCAL_ROOTS:
        unregister(cls)


def statuses(run_id: str) -> dict[str, str]:
    return {fqn: i.status for fqn, i in api.load_ltm(run_id).instances.items()}


def kinds(run_id: str, fqn: str | None = None) -> list[str]:
    events = LtmEvent.objects.filter(run_id=run_id).order_by("seq")
    return [e.kind for e in events if fqn is None or e.fqn == fqn]
