"""A run's history as plain data (engine.core.ltm.history): changes that carry only what
changed, appends as the value appended, and changes of the earlier format replayed alike."""

from __future__ import annotations

import json
from dataclasses import replace

from engine.core.ltm.history import (
    PointInTime,
    append_change,
    change_of,
    record_to_json,
    replay,
)
from engine.core.ltm.records import InstanceRecord

JOIN = InstanceRecord(
    fqn="run.join",
    name="join",
    declared_name="join",
    status="active",
    state={"got": [{"n": n} for n in range(50)]},
    entry=1,
)
ROOT = InstanceRecord(fqn="run", name="run", declared_name="run", status="active")


def stored(change):
    """The change as the database gives it back."""
    return json.loads(json.dumps(change))


def test_a_change_of_a_known_instance_carries_only_the_fields_that_changed():
    queued = replace(JOIN, status="queued", entry=2)
    change = change_of({JOIN.fqn: JOIN}, [queued], state="running", error="")

    assert change["records"] == [{"fqn": "run.join", "status": "queued", "entry": 2}]
    assert "got" not in json.dumps(change)  # the join's list is not in it
    point = replay(PointInTime({JOIN.fqn: JOIN, ROOT.fqn: ROOT}).snapshot(), [stored(change)])
    assert point.records == {JOIN.fqn: queued, ROOT.fqn: ROOT}


def test_a_new_instance_is_whole_and_a_changed_state_is_the_state():
    branch = InstanceRecord("run.branch_1", "branch_1", "branch_{n}", "queued", params={"n": 1})
    emptied = replace(JOIN, state={"got": []}, error="boom")
    change = change_of({JOIN.fqn: JOIN}, [branch, emptied], state="running", error="")

    assert change["records"] == [
        record_to_json(branch),
        {"fqn": "run.join", "state": {"got": []}, "error": "boom"},
    ]
    point = replay(PointInTime({JOIN.fqn: JOIN}).snapshot(), [stored(change)])
    assert point.records == {JOIN.fqn: emptied, branch.fqn: branch}


def test_an_append_carries_the_value_alone_and_replays_onto_the_list():
    change = append_change("run.join", "got", {"n": 50}, state="running", error="")

    assert change["records"] == [] and change["appended"] == [
        {"fqn": "run.join", "key": "got", "value": {"n": 50}}
    ]
    before = PointInTime({JOIN.fqn: JOIN})
    point = replay(before.snapshot(), [stored(change), stored(change)])
    assert point.records[JOIN.fqn].state["got"] == [{"n": n} for n in range(51)] + [{"n": 50}]
    assert JOIN.state["got"] == [{"n": n} for n in range(50)]  # the record replayed on is as it was


def test_changes_of_the_earlier_format_whole_records_replay_alike():
    queued = replace(JOIN, status="queued")
    longer = replace(JOIN, state={"got": [*JOIN.state["got"], 7]})
    earlier = [
        {"records": [record_to_json(queued)], "removed": [], "run": {"state": "running"}},
        {"records": [record_to_json(longer)], "removed": [], "run": {"state": "running"}},
    ]
    point = replay(PointInTime({JOIN.fqn: JOIN}).snapshot(), [stored(c) for c in earlier])
    assert point.records == {JOIN.fqn: longer}


def test_a_partial_record_with_nothing_before_it_is_left_out():
    change = {"records": [{"fqn": "run.gone", "status": "queued"}], "run": {"state": "running"}}
    assert replay(None, [change]).records == {}
