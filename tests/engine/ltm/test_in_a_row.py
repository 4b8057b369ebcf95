"""A worker goes on with the state its commit queued (engine.ltm.executor.execute_execution):
the next execution is run by the same Huey task instead of going through the queue and back,
claimed by the commit that queued it, and the run's history is the same as when every
execution goes through the queue and claims for itself. Each task here is run
as a worker runs it, in this process, one at a time."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from huey.contrib.djhuey import HUEY

from engine import api
from engine.ltm import executor, store
from engine.models import LtmEvent, LtmExecution, LtmRun
from tests.engine.ltm.support import django_runtime  # noqa: F401  (autouse fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


@pytest.fixture
def through_the_queue() -> Iterator[None]:
    """Huey's real queue instead of immediate mode: what a commit dispatches waits there."""
    HUEY.immediate = False
    HUEY.storage.flush_all()
    try:
        yield
    finally:
        HUEY.storage.flush_all()
        HUEY.immediate = True


def work_off() -> int:
    """Run the queue's tasks, each as a worker does, until none is left; how many ran."""
    ran = 0
    while tasks := HUEY.pending():
        HUEY.storage.flush_all()
        for task in tasks:
            executor.execute_execution(task.args[0])
            ran += 1
    return ran


def history(run_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Each state's events in order: what happened, without when or by which execution."""
    per_state: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for event in LtmEvent.objects.filter(run_id=run_id).order_by("seq"):
        data = event.data or {}
        step = (event.kind, data.get("from"), data.get("to"), data.get("label"), data.get("value"))
        per_state[event.fqn].append(step)
    return dict(per_state)


@pytest.fixture
def claims(monkeypatch) -> list[str]:
    """The fqn of every execution claimed by a write of its own."""
    claimed: list[str] = []
    apply = store.apply

    def counted(snap, write, **options):
        applied = apply(snap, write, **options)
        if applied and write.outcome is not None:
            claimed.append(write.outcome.fqn)
        return applied

    monkeypatch.setattr(store, "apply", counted)
    return claimed


def test_a_chain_of_states_runs_in_one_task_with_the_history_it_has_through_the_queue(
    user, through_the_queue
):
    HUEY.immediate = True
    queued_each = api.start_ltm("ping_pong", user, {"rounds": 3})
    HUEY.immediate = False

    run_id = api.start_ltm("ping_pong", user, {"rounds": 3})
    assert work_off() == 1  # the root's task: every state after it ran in that task

    run = LtmRun.objects.get(pk=run_id)
    assert run.state == "complete", run.error
    executions = LtmExecution.objects.filter(run_id=run_id)
    assert executions.count() == 7  # the root, ping, pong, ping, pong, ping, stopped
    assert {(e.status, e.attempts) for e in executions} == {("done", 1)}
    assert history(run_id) == history(queued_each)
    assert api.load_ltm(run_id).state == api.load_ltm(queued_each).state
    # The time machine sees the same run after every event: a state queued by a commit,
    # then claimed by the claim that rode on it, as when the claim was a write of its own.
    last = LtmRun.objects.get(pk=run_id).seq
    assert last == LtmRun.objects.get(pk=queued_each).seq
    for seq in range(1, last + 1):
        ran, each = api.ltm_at(run_id, seq, user), api.ltm_at(queued_each, seq, user)
        assert statuses_then(ran) == statuses_then(each), seq
        assert ran.run.state == each.run.state, seq


def statuses_then(view: Any) -> dict[str, Any]:
    return {fqn: (i.status, i.state) for fqn, i in view.instances.items()}


def test_a_task_runs_at_most_in_a_row_executions_then_queues_the_next(
    user, through_the_queue, settings
):
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "LTM_IN_A_ROW": 3}
    run_id = api.start_ltm("ping_pong", user, {"rounds": 3})

    assert work_off() == 3  # 7 executions: 3, 3, then 1
    assert LtmRun.objects.get(pk=run_id).state == "complete"
    assert {(e.status, e.attempts) for e in LtmExecution.objects.filter(run_id=run_id)} == {
        ("done", 1)
    }


def test_a_fork_and_join_runs_on_one_worker_with_one_claim_and_the_history_of_one_each(
    user, through_the_queue, claims, monkeypatch
):
    HUEY.immediate = True
    queued_each = api.start_ltm("flou_join", user, {"size": 5})  # (tests/ltm_flou.py)
    HUEY.immediate = False
    claims.clear()

    rewritten: list[str] = []  # the instance rows a commit writes whole
    update_rows = store._update_rows
    monkeypatch.setattr(
        store,
        "_update_rows",
        lambda rows: [rewritten.extend(r.fqn for r in rows), update_rows(rows)],
    )

    read: list[str] = []  # the instance rows read one by one, and the open executions
    first, pks = store.INSTANCES.first, store.EXECUTIONS.pks
    monkeypatch.setattr(
        store.INSTANCES, "first", lambda db, **w: [read.append(w["fqn"]), first(db, **w)][1]
    )
    monkeypatch.setattr(
        store.EXECUTIONS, "pks", lambda db, n, **w: [read.append("open"), pks(db, n, **w)][1]
    )

    run_id = api.start_ltm("flou_join", user, {"size": 5})
    # The root's task goes on with launch, then the first branch and its arrival at gather.
    # That arrival's commit queues nothing: it takes the newest branch still queued, and so
    # on, each branch going on with its arrival, and the last arrival with finished. The
    # 4 other branches' tasks find their execution taken and do nothing.
    assert work_off() == 5

    root = api.load_ltm(run_id)
    assert root.run.state == "complete", root.run.error
    got = root.instances["flou_join.gather"].state["got"]
    assert [arrival["k"] for arrival in got] == ["1", "5", "4", "3", "2"]
    executions = LtmExecution.objects.filter(run_id=run_id)
    assert executions.count() == 13
    assert {(e.status, e.attempts) for e in executions} == {("done", 1)}
    # Claimed by a write of its own: the root's execution only. Each other came claimed by
    # the commit before it, whether that commit queued it or not.
    assert claims == ["flou_join"]
    # gather's row is made when first entered and written whole once more, completed: an
    # arrival at it active (queued and claimed again by the branch's commit) leaves its
    # row, and its list, as stored (its appends write the list).
    assert rewritten.count("flou_join.gather") == 1
    # An append takes gather's row (its list) as this worker committed it, not read again;
    # a commit that takes a queued execution knows the run stays open without asking: the
    # last one only (finished's) looks for executions still open.
    assert read == ["open"]
    # The same history, but for the order of the arrivals at gather: here each arrives once
    # the one before it is done (with all through the queue, the 5 branches ran first). An
    # arrival at gather active shows as through the queue: queued, then claimed (active).
    ran, each = history(run_id), history(queued_each)
    assert ran.pop("flou_join.gather") == [
        ("status", "init", "queued", None, None),
        ("status", "queued", "active", None, None),
        ("state.appended", None, None, None, {"k": "1"}),
        *(
            step
            for k in "5432"
            for step in [
                ("status", "active", "queued", None, None),
                ("status", "queued", "active", None, None),
                ("state.appended", None, None, None, {"k": k}),
            ]
        ),
        ("status", "active", "completed", None, None),
    ]
    each.pop("flou_join.gather")
    # The root's transitions came in that order too.
    assert sorted(map(repr, ran.pop("flou_join"))) == sorted(map(repr, each.pop("flou_join")))
    assert ran == each
    # The time machine sees each branch queued by the fork, then active from the event of
    # the claim that rode on the commit before it.
    events = LtmEvent.objects.filter(run_id=run_id).order_by("seq")
    for event in events.filter(kind="status", data__to="active", fqn__contains="branch"):
        before, then = api.ltm_at(run_id, event.seq - 1, user), api.ltm_at(run_id, event.seq, user)
        assert before.instances[event.fqn].status == "queued", event.seq
        assert then.instances[event.fqn].status == "active", event.seq


def test_a_commit_that_finds_the_queued_execution_it_takes_claimed_meanwhile_starts_again(
    user, through_the_queue, monkeypatch
):
    """Another worker's claim of a queued state writes the run, so the compare-and-set
    stops a commit that read the execution before it. Here the execution changes under the
    commit without the run (as nothing in the engine does; in the same transaction, the
    one way to get between the two on SQLite): the commit is rolled back, the change with
    it, and built again; the history has no trace of the first try. (On PostgreSQL the
    commit is one statement that commits by itself, outside any transaction: the change
    commits by itself too, and the statement, which finds the execution claimed, aborts,
    all of it; the change is undone by hand before the second try.)"""
    run_id = api.start_ltm("flou_join", user, {"size": 3})
    taken: list[str] = []
    keep_queued = executor._keep_queued

    def taken_meanwhile(snap, write):
        if len(taken) == 1:  # (undone already where it was in the commit's transaction)
            LtmExecution.objects.filter(fqn=taken[0], run_id=run_id).update(status="queued")
        keep_queued(snap, write)
        if write.keep_queued is not None:
            taken.append(write.keep_queued.fqn)
            if len(taken) == 1:
                LtmExecution.objects.filter(pk=write.keep_queued.pk).update(status="claimed")

    monkeypatch.setattr(executor, "_keep_queued", taken_meanwhile)
    assert work_off() == 3
    # The first try, rolled back, then the same commit again, then the next arrival's.
    assert taken == ["flou_join.branch_3", "flou_join.branch_3", "flou_join.branch_2"]
    root = api.load_ltm(run_id)
    assert root.run.state == "complete", root.run.error
    got = [arrival["k"] for arrival in root.instances["flou_join.gather"].state["got"]]
    assert got == ["1", "3", "2"]
    executions = LtmExecution.objects.filter(run_id=run_id)
    assert {(e.status, e.attempts) for e in executions} == {("done", 1)}
    actives = LtmEvent.objects.filter(run_id=run_id, kind="status", data__to="active")
    assert actives.filter(fqn="flou_join.branch_3").count() == 1
    seqs = list(LtmEvent.objects.filter(run_id=run_id).values_list("seq", flat=True))
    assert sorted(seqs) == list(range(1, LtmRun.objects.get(pk=run_id).seq + 1))


def test_how_many_in_a_row_is_a_setting_of_at_least_one(settings):
    from engine import config

    assert config.ltm_in_a_row() == 50  # the default (FLOWSTUDIO_LTM_IN_A_ROW)
    settings.FLOWSTUDIO = {**settings.FLOWSTUDIO, "LTM_IN_A_ROW": 0}
    assert config.ltm_in_a_row() == 1  # (a task runs at least the execution it was sent for)
