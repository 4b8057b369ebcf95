"""Diagram data of LTMs and routines (engine.core.graph.extract, through `LTM.graph()` and
`routine_graph`). No Django involved."""

from __future__ import annotations

from engine.core.graph.dot import to_dot
from engine.core.graph.extract import routine_graph
from engine.core.graph.model import Graph, Node
from engine.core.ltm.node import LTM
from engine.core.ltm.runtime import InMemoryRuntime
from tests import ltm_catalog as catalog


def started(cls: type[LTM], **payload: object) -> LTM:
    root = cls(runtime=InMemoryRuntime())
    root.start(**payload)
    return root


def edges_of(graph: Graph, kind: str) -> set[tuple[str, str, str | None]]:
    return {(e.source, e.target, e.label) for e in graph.edges if e.kind == kind}


# -- LTM definitions ----------------------------------------------------------------------


def test_the_definition_graph_of_a_machine() -> None:
    graph = catalog.MyLtm.graph()

    assert graph.title == "my_ltm" and graph.status is None
    assert [(n.id, n.kind, n.status) for n in graph.nodes] == [
        ("my_ltm.__start__", "start", None),
        ("my_ltm.my_state", "state", None),
        ("my_ltm.end_state", "state", None),
    ]
    assert edges_of(graph, "init") == {("my_ltm.__start__", "my_ltm.my_state", None)}
    assert edges_of(graph, "transition") == {
        ("my_ltm.my_state", "my_ltm.end_state", "my_transition")
    }
    assert graph.node("my_ltm.my_state").attrs["class"] == "tests.ltm_catalog.MyState"


def test_sub_machines_are_nested_clusters() -> None:
    graph = catalog.Deep.graph()

    assert [c.id for c in graph.all_clusters()] == [
        "deep.level1",
        "deep.level1.level2",
        "deep.level1.level2.level3",
    ]
    assert edges_of(graph, "init") >= {
        ("deep.__start__", "deep.level1", None),
        ("deep.level1.level2.level3.__start__", "deep.level1.level2.level3.leaf", None),
    }
    assert (
        "deep.level1.level2.level3",
        "deep.level1.level2.level2_done",
        "level3_done",
    ) in edges_of(graph, "transition")


def test_a_declared_namespace_shows_in_the_label() -> None:
    graph = catalog.Broadcast.graph()

    labels = {e.source: e.label for e in graph.edges if e.kind == "transition"}
    assert labels["broadcast.sub_a.waiting"] == "go [global]"
    assert labels["broadcast.sub_c.waiting"] == "go"
    assert labels["broadcast.kick"] == "kick"


def test_a_parameterised_state_is_a_template_in_the_definition() -> None:
    graph = catalog.FanOut.graph()

    node = graph.node("fan_out.batch.work_{n}")
    assert node.kind == "template" and node.label == "work_{n}"
    assert ("fan_out.batch.split", "fan_out.batch.work_{n}", "split") in edges_of(
        graph, "transition"
    )


def test_a_simple_state_is_a_single_node() -> None:
    graph = catalog.EndState.graph()
    assert graph.nodes == (Node("end_state", "end_state", attrs=graph.nodes[0].attrs),)
    assert graph.edges == () and graph.clusters == ()


# -- LTM instances ------------------------------------------------------------------------


def test_an_unstarted_instance_shows_every_state_as_init() -> None:
    graph = catalog.MyLtm().graph()

    assert graph.status == "init"
    assert {n.id: n.status for n in graph.nodes if n.kind == "state"} == {
        "my_ltm.my_state": "init",
        "my_ltm.end_state": "init",
    }


def test_a_run_shows_its_statuses() -> None:
    root = started(catalog.Deep)
    graph = root.graph()

    assert graph.status == "active"
    clusters = {c.id: c.status for c in graph.all_clusters()}
    assert clusters == {
        "deep.level1": "active",
        "deep.level1.level2": "active",
        "deep.level1.level2.level3": "completed",
    }
    assert graph.node("deep.level1.level2.level2_done").status == "active"
    assert graph.statuses() == ["active", "completed"]


def test_parameterised_instances_are_nodes_of_their_own() -> None:
    root = started(catalog.FanOut, size=3)
    graph = root.graph()

    workers = [n for n in graph.all_nodes() if ".work_" in n.id]
    assert [(n.id, n.status, n.attrs["params"]) for n in workers] == [
        (f"fan_out.batch.work_{n}", "completed", f"n={n}") for n in range(3)
    ]
    assert edges_of(graph, "transition") >= {
        ("fan_out.batch.split", "fan_out.batch.work_1", "split"),
        ("fan_out.batch.work_1", "fan_out.batch.collect", "join"),
    }


def test_a_child_instance_draws_its_own_subtree() -> None:
    root = started(catalog.Deep)
    graph = root.find("deep.level1.level2").graph()

    assert graph.title == "deep.level1.level2"
    assert [c.id for c in graph.all_clusters()] == ["deep.level1.level2.level3"]


# -- routines -----------------------------------------------------------------------------


def test_a_routine_is_a_sequence_with_the_current_step_highlighted() -> None:
    graph = routine_graph(
        [("Fetch", "fetch_data", True), ("clean", "clean", False), ("Report", "report", True)],
        current=1,
        states=["complete", "running", None],
    )

    steps = [n for n in graph.nodes if n.kind != "start"]
    assert [(n.id, n.label, n.kind, n.status, n.highlighted) for n in steps] == [
        ("step_0", "1. Fetch\nfetch_data", "blocking_step", "complete", False),
        ("step_1", "2. clean", "step", "running", True),
        ("step_2", "3. Report\nreport", "blocking_step", None, False),
    ]
    assert [(e.source, e.target, e.kind) for e in graph.edges] == [
        ("start", "step_0", "init"),
        ("step_0", "step_1", "sequence"),
        ("step_1", "step_2", "sequence"),
    ]
    dot = to_dot(graph)
    assert 'peripheries="2"' in dot and 'penwidth="3"' in dot


def test_an_empty_routine_is_just_a_start_point() -> None:
    graph = routine_graph([])
    assert [n.kind for n in graph.nodes] == ["start"] and graph.edges == ()
