"""The LTM and the bare Huey fan-out of bench/ltm_fanout.py (imported by the bench and by its
consumer, through FLOWSTUDIO_SCRIPT_MODULES).

With BENCH_PROFILE set to a file name, the consumer profiles every LTM execution (cProfile,
one profiler per call, so the worker threads do not mix) and writes the summed statistics
to that file every 50 executions.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import threading
import time
from typing import Any

from django.db import transaction
from django.db.models import F
from huey.contrib.djhuey import db_task

from engine import LTM
from engine.ltm.models import LtmEvent, LtmRun

# -- the LTM: a fork into `width` parameterised branches, each entering one join --------------


class FanoutSplit(LTM):
    name = "split"

    def run(self, **payload: Any) -> None:
        self.transition("start_{n}", params=[{"n": n} for n in range(self.root.state["width"])])


class FanoutBranch(LTM):
    name = "branch_{n}"

    def run(self, **payload: Any) -> None:
        # The params choose the source: this branch moves, its siblings stay where they are.
        self.transition("done_{n}", params=[dict(self.params)], payload=dict(self.params))


class FanoutJoin(LTM):
    """Entered once per branch (as flou's join): each arrival appends what it brought, and
    the one that sees the list full moves on."""

    name = "join"
    initial_state = {"got": []}

    def run(self, **payload: Any) -> None:
        got = self.atomic_state_append("got", payload)
        if len(got) == self.root.state["width"]:
            self.transition("all_done")


class FanoutDone(LTM):
    name = "done"


class BenchFanout(LTM):
    name = "bench_ltm_fanout"
    init = [FanoutSplit]
    transitions = [
        {"from": FanoutSplit, "label": "start_{n}", "to": FanoutBranch},
        {"from": FanoutBranch, "label": "done_{n}", "to": FanoutJoin},
        {"from": FanoutJoin, "label": "all_done", "to": FanoutDone},
    ]

    def run(self, width: int = 200, **payload: Any) -> None:
        self.update_state({"width": width})


# -- a chain: states one after the other, each moving on to the next -------------------------


class _ChainState(LTM):
    then = ""  # the label to the next state

    def run(self, **payload: Any) -> None:
        count = self.root.state["count"] + 1
        self.root.update_state({"count": count})
        self.transition("stop" if count >= self.root.state["length"] else self.then)


class ChainPing(_ChainState):
    name = "ping"
    then = "pong"


class ChainPong(_ChainState):
    name = "pong"
    then = "ping"


class ChainEnd(LTM):
    name = "end"


class BenchChain(LTM):
    """`length` states in sequence (ping, pong, ping, ...), then `end`: length + 2
    executions with the root, each queued by the commit of the one before."""

    name = "bench_ltm_chain"
    init = [ChainPing]
    transitions = [
        {"from": ChainPing, "label": "pong", "to": ChainPong},
        {"from": ChainPong, "label": "ping", "to": ChainPing},
        {"from": ChainPing, "label": "stop", "to": ChainEnd},
        {"from": ChainPong, "label": "stop", "to": ChainEnd},
    ]

    def run(self, length: int = 10, **payload: Any) -> None:
        self.update_state({"count": 0, "length": length})


# -- the bare baseline: one Huey task per execution, each one small transaction ---------------
# It writes into a row of its own (an LtmRun nobody executes): the run's `seq` counts the
# tasks, each task adds an event row, the join appends to the row's `global_state`.


def small_write(run_id: Any, kind: str, **changes: Any) -> int:
    """One transaction: bump the row's counter (the write lock first), add an event row."""
    with transaction.atomic():
        LtmRun.objects.filter(pk=run_id).update(seq=F("seq") + 1, **changes)
        seq = LtmRun.objects.filter(pk=run_id).values_list("seq", flat=True).get()
        LtmEvent.objects.create(run_id=run_id, seq=seq, kind=kind, state="running", data={})
    return int(seq)


@db_task()
def bare_root(run_id: str, width: int) -> None:
    small_write(run_id, "root")
    bare_split(run_id, width)


@db_task()
def bare_split(run_id: str, width: int) -> None:
    small_write(run_id, "split")
    for n in range(width):
        bare_branch(run_id, n, width)


@db_task()
def bare_branch(run_id: str, n: int, width: int) -> None:
    small_write(run_id, "branch")
    bare_join(run_id, n, width)


@db_task()
def bare_join(run_id: str, n: int, width: int) -> None:
    """Appends to the row's list in the same transaction; the task that fills it goes on."""
    with transaction.atomic():
        LtmRun.objects.filter(pk=run_id).update(seq=F("seq") + 1)
        run = LtmRun.objects.get(pk=run_id)
        got = [*run.global_state.get("got", []), n]
        LtmRun.objects.filter(pk=run_id).update(global_state={"got": got})
        LtmEvent.objects.create(run_id=run_id, seq=run.seq, kind="join", state="running", data={})
    if len(got) == width:
        bare_done(run_id)


@db_task()
def bare_done(run_id: str) -> None:
    small_write(run_id, "done", state="complete")


# -- profiling in the consumer ---------------------------------------------------------------


def _install_profiler(path: str) -> None:
    from engine.ltm import executor

    lock, calls = threading.Lock(), [0]
    # by each thread's CPU time (BENCH_PROFILE_CLOCK=cpu), else by the wall clock
    clock = time.thread_time if os.environ.get("BENCH_PROFILE_CLOCK") == "cpu" else None
    stats: list[pstats.Stats] = []
    execute = executor.execute_execution

    def profiled(execution_id: int) -> None:
        profile = cProfile.Profile(clock) if clock else cProfile.Profile()
        profile.enable()
        try:
            execute(execution_id)
        finally:
            profile.disable()
            with lock:
                if stats:
                    stats[0].add(profile)
                else:
                    stats.append(pstats.Stats(profile))
                calls[0] += 1
                if calls[0] % 50 == 0:
                    stats[0].dump_stats(path)

    executor.execute_execution = profiled


if os.environ.get("BENCH_PROFILE"):
    _install_profiler(os.environ["BENCH_PROFILE"])
