"""Example Labeled Transition Models reused by the core tests (and handy as documentation).

Each machine shows one feature: the seed README's example, failure, namespaces, fork/join of
parameterised states, deep nesting, loops with forward references; the last two are slow on
purpose, for the tests on a real consumer (concurrency, kill -9, run-to-completion).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from engine import LTM

# -- the seed README's example, its `label:` typo fixed ------------------------------------


class MyState(LTM):
    name = "my_state"

    def run(self, **params: Any) -> None:
        label = "my_transition"
        params = {}
        self.transition(label, **params)

        self.update_state({"internal_state_key": "state_value"})
        self.root.update_state({"global_key": "global_value"})

        print(self.state["internal_state_key"])  # prints 'state_value'
        print(self.root.state["global_key"])  # prints 'global_value'


class EndState(LTM):
    def run(self, **params: Any) -> None:
        print("end")


class MyLtm(LTM):
    name = "my_ltm"
    init = [MyState]  # init can be simple states or sub machines
    transitions = [{"from": MyState, "label": "my_transition", "to": EndState}]


# -- a run() that raises: its updates and transitions are discarded ------------------------


class Explode(LTM):
    def run(self, **payload: Any) -> None:
        self.update_state({"half_done": True})
        self.root.update_state({"global_half_done": True})
        self.transition("blown")
        raise ValueError("boom")


class Aftermath(LTM):
    pass


class FailingLtm(LTM):
    init = [Explode]
    transitions = [{"from": Explode, "label": "blown", "to": Aftermath}]


class NulRaiser(LTM):
    """Raises with text PostgreSQL cannot store as it is."""

    name = "nul_raiser"

    def run(self, **payload: Any) -> None:
        raise ValueError("a\x00b")


# -- one label, two machines: a transition in the 'global' namespace -----------------------


class Waiting(LTM):
    pass


class Done(LTM):
    pass


class SubA(LTM):
    init = [Waiting]
    transitions = [{"from": Waiting, "label": "go", "to": Done, "namespace": "global"}]


class SubB(LTM):
    init = [Waiting]
    transitions = [{"from": Waiting, "label": "go", "to": Done, "namespace": "global"}]


class SubC(LTM):
    """Has a 'go' of its own namespace: a global 'go' leaves it alone."""

    init = [Waiting]
    transitions = [{"from": Waiting, "label": "go", "to": Done}]


class Kick(LTM):
    def run(self, **payload: Any) -> None:
        self.transition("kick")


class Announce(LTM):
    def run(self, **payload: Any) -> None:
        self.transition("go", namespace="global")


class Broadcast(LTM):
    # FIFO order: the sub-machines' waiting states are active before Announce runs. That
    # holds with one worker only: with several, Announce may run while they are still queued,
    # and its "go" moves nothing and fails (see ParkLtm for a machine without that race).
    init = [SubA, SubB, SubC, Kick]
    transitions = [{"from": Kick, "label": "kick", "to": Announce}]


# -- a state that waits for an operator ----------------------------------------------------


class Parked(LTM):
    """Does nothing: it stays active until an operator fires 'release'."""


class Released(LTM):
    pass


class ParkLtm(LTM):
    init = [Parked]
    transitions = [{"from": Parked, "label": "release", "to": Released}]


# -- fork into parameterised workers, join when the shared list is full --------------------


class Split(LTM):
    def run(self, **payload: Any) -> None:
        size = self.root.state["size"]
        self.transition("split", params=[{"n": n} for n in range(size)])


class Work(LTM):
    name = "work_{n}"

    def run(self, **payload: Any) -> None:
        results = self.parent.atomic_state_append("results", self.params["n"] * 10)
        self.update_state({"saw": len(results)})
        if len(results) == self.root.state["size"]:
            self.transition("join")


class Collect(LTM):
    def run(self, **payload: Any) -> None:
        self.root.update_state({"total": sum(self.parent.state["results"])})


class Batch(LTM):
    init = [Split]
    transitions = [
        {"from": Split, "label": "split", "to": Work},
        {"from": Work, "label": "join", "to": Collect},
    ]

    def run(self, **payload: Any) -> None:
        self.update_state({"results": []})


class FanOut(LTM):
    init = [Batch]

    def run(self, size: int = 8, **payload: Any) -> None:
        self.update_state({"size": size})


# -- a plain fork: one label, two targets -------------------------------------------------


class Begin(LTM):
    def run(self, **payload: Any) -> None:
        self.transition("fork", payload={"side": "both"})


class Left(LTM):
    def run(self, **payload: Any) -> None:
        self.update_state({"payload": payload})


class Right(LTM):
    def run(self, **payload: Any) -> None:
        self.update_state({"payload": payload})


class ForkLtm(LTM):
    init = [Begin]
    transitions = [{"from": Begin, "label": "fork", "to": (Left, Right)}]


# -- sub-machines nested three deep -------------------------------------------------------


class Leaf(LTM):
    def run(self, **payload: Any) -> None:
        self.transition("finish")


class LeafDone(LTM):
    def run(self, **payload: Any) -> None:
        # Level3 itself moves on, in Level2's namespace.
        self.parent.transition("level3_done")


class Level3(LTM):
    init = [Leaf]
    transitions = [{"from": Leaf, "label": "finish", "to": LeafDone}]


class Level2Done(LTM):
    def run(self, **payload: Any) -> None:
        self.root.update_state({"reached": self.fqn})


class Level2(LTM):
    init = [Level3]
    transitions = [{"from": Level3, "label": "level3_done", "to": Level2Done}]


class Level1(LTM):
    init = [Level2]


class Deep(LTM):
    init = [Level1]


# -- a loop whose states are defined after the machine (forward references) --------------


class PingPong(LTM):
    @staticmethod
    def init() -> list[type[LTM]]:
        return [Ping]

    @staticmethod
    def transitions() -> list[dict[str, Any]]:
        return [
            {"from": Ping, "label": "pong", "to": Pong},
            {"from": Pong, "label": "ping", "to": Ping},
            {"from": Ping, "label": "stop", "to": Stopped},
        ]

    def run(self, rounds: int = 3, **payload: Any) -> None:
        self.update_state({"count": 0, "rounds": rounds})


class Ping(LTM):
    def run(self, **payload: Any) -> None:
        count = self.parent.state["count"] + 1
        self.parent.update_state({"count": count})
        # Re-entering a state re-initialises it: visits never passes 1.
        self.update_state({"visits": self.state.get("visits", 0) + 1})
        self.transition("stop" if count >= self.parent.state["rounds"] else "pong")


class Pong(LTM):
    def run(self, **payload: Any) -> None:
        self.transition("ping")


class Stopped(LTM):
    pass


# -- slow on purpose: for the tests on a real consumer --------------------------------------


class SlowSplit(LTM):
    def run(self, **payload: Any) -> None:
        self.transition("split", params=[{"n": n} for n in range(self.root.state["size"])])


class SlowWork(LTM):
    """Appends, sleeps, appends again: a worker killed while it sleeps has appended once
    already, and its execution must run again (the join waits for every second append)
    without appending the first value twice."""

    name = "slow_{n}"

    def run(self, **payload: Any) -> None:
        started = time.time()
        self.root.atomic_state_append("results", self.params["n"])
        time.sleep(self.root.state["sleep"])
        finished = self.root.atomic_state_append("finished", self.params["n"])
        worker = f"{threading.current_thread().name}/{threading.get_ident()}"
        self.update_state({"worker": worker, "started": started, "ended": time.time()})
        if len(finished) == self.root.state["size"]:
            self.transition("join")


class SlowJoin(LTM):
    def run(self, **payload: Any) -> None:
        self.root.update_state({"joined": sorted(self.root.state["results"])})


class SlowFanOut(LTM):
    init = [SlowSplit]
    transitions = [
        {"from": SlowSplit, "label": "split", "to": SlowWork},
        {"from": SlowWork, "label": "join", "to": SlowJoin},
    ]

    def run(self, size: int = 8, sleep: float = 0.5, **payload: Any) -> None:
        self.update_state({"size": size, "sleep": sleep, "results": [], "finished": []})


class Gate(LTM):
    """Queues updates and a transition, says so in a marker file, and returns only once a
    release file appears: meanwhile nothing it queued may be in the database."""

    def run(self, **payload: Any) -> None:
        self.update_state({"inside": True})
        self.root.update_state({"gate": "passed"})
        self.transition("open")
        Path(self.root.state["marker"]).write_text("running")
        release = Path(self.root.state["release"])
        deadline = time.monotonic() + 120
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


class Opened(LTM):
    pass


class GateLtm(LTM):
    init = [Gate]
    transitions = [{"from": Gate, "label": "open", "to": Opened}]

    def run(self, marker: str = "", release: str = "", **payload: Any) -> None:
        self.update_state({"marker": marker, "release": release})
