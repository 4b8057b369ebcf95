"""Machines that restate the scenarios of flou's own tests (flou-ai/flou, `tests/concurrency/`
and `test_namespaces.py`) in this project's words: joins entered once per branch,
parameterised labels choosing their sources, concurrent sub-machines (nested one level
deeper too), a self-loop that forks, and one label moving states in several machines.

The roots are registered for every process of the tests (FLOWSTUDIO_SCRIPT_MODULES), so a
real consumer runs them too. Each root's name starts with `flou_`.
"""

from __future__ import annotations

from typing import Any

from engine import LTM

# -- a join that every branch enters: each arrival is its own execution --------------------


class Launch(LTM):
    """Forks one branch per item of the root's `launch` list with a parameterised label."""

    def run(self, **payload: Any) -> None:
        self.transition("start_{k}", params=self.root.state["launch"])


class Branch(LTM):
    name = "branch_{k}"

    def run(self, **payload: Any) -> None:
        # The params choose the source: this branch moves, its siblings stay where they are.
        self.transition("done_{k}", params=[dict(self.params)], payload=dict(self.params))


class Gather(LTM):
    """Entered once per branch; appends what each arrival brought to its own list, and the
    arrival that sees it full moves on."""

    initial_state = {"got": []}

    def run(self, **payload: Any) -> None:
        got = self.atomic_state_append("got", payload)
        if len(got) == len(self.root.state["launch"]):
            self.transition("all_done")


class Finished(LTM):
    pass


class FlouJoin(LTM):
    init = [Launch]
    transitions = [
        {"from": Launch, "label": "start_{k}", "to": Branch},
        {"from": Branch, "label": "done_{k}", "to": Gather},
        {"from": Gather, "label": "all_done", "to": Finished},
    ]

    def run(self, size: int = 4, **payload: Any) -> None:
        self.update_state({"launch": [{"k": str(n)} for n in range(1, size + 1)]})


# -- a fork by params; then the params of a later label choose which branch moves ----------


class Fork(LTM):
    def run(self, **payload: Any) -> None:
        self.transition("start_{k}", params=[{"k": "1"}, {"k": "2"}])


class First(LTM):
    name = "first_{k}"


class Second(LTM):
    name = "second_{k}"


class FlouPairs(LTM):
    init = [Fork]
    transitions = [
        {"from": Fork, "label": "start_{k}", "to": First},
        {"from": First, "label": "next_{k}", "to": Second},
    ]


# -- a self-loop that forks: each firing adds a branch and re-enters the loop's state ---------


class Idle(LTM):
    pass


class Spawned(LTM):
    name = "spawned_{k}"


class FlouLoop(LTM):
    init = [Idle]
    transitions = [{"from": Idle, "label": "start_{k}", "to": (Spawned, Idle)}]


# -- concurrent sub-machines that report to a join of their parent; nested one level more ----


class Report(LTM):
    """The only state of a sub-machine: makes its machine report to the parent's join."""

    def run(self, **payload: Any) -> None:
        machine = self.parent
        assert machine is not None
        machine.transition("done_{num}", params=[dict(machine.params)], payload=machine.params)


class Worker(LTM):
    name = "worker_{num}"
    init = [Report]


class Collect(LTM):
    initial_state = {"done": []}

    def run(self, **payload: Any) -> None:
        done = self.atomic_state_append("done", payload)
        if len(done) == 2:
            self.transition("done_all")


class Rest(LTM):
    pass


class Team(LTM):
    """`start_{num}` in this machine's namespace starts two workers; both report to
    `collect`, which brings the machine back to `rest`."""

    name = "team_{num}"
    init = [Rest]
    transitions = [
        {"from": Rest, "label": "start_{num}", "to": Worker},
        {"from": Worker, "label": "done_{num}", "to": Collect},
        {"from": Collect, "label": "done_all", "to": Rest},
    ]


class FlouTeams(LTM):
    """One level up: `start_{num}` in the root's namespace starts two teams (each idle until
    an operator fires `start_{num}` in its own namespace)."""

    init = [Rest]
    transitions = [
        {"from": Rest, "label": "start_{num}", "to": Team},
        {"from": Team, "label": "done_{num}", "to": Collect},
        {"from": Collect, "label": "done_all", "to": Finished},
    ]


class FlouWorkers(LTM):
    """One level: `start_{num}` starts two workers that report to `collect`."""

    init = [Rest]
    transitions = [
        {"from": Rest, "label": "start_{num}", "to": Worker},
        {"from": Worker, "label": "done_{num}", "to": Collect},
        {"from": Collect, "label": "done_all", "to": Rest},
    ]


# -- one label in a shared namespace moves states of two machines ---------------------------


class Before(LTM):
    pass


class After(LTM):
    pass


class Side(LTM):
    init = [Before]
    transitions = [{"from": Before, "label": "start", "to": After, "namespace": "global"}]


class OtherSide(LTM):
    init = [Before]
    transitions = [{"from": Before, "label": "start", "to": After, "namespace": "global"}]


class FlouNamespaces(LTM):
    init = [Side, OtherSide]
