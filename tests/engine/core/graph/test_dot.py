"""The DOT text of diagram data (engine.core.graph.dot): clusters, legends, escaping, and
what Graphviz makes of it. No Django involved."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from engine.core.graph.dot import quote, to_dot
from engine.core.graph.extract import routine_graph
from engine.core.graph.model import Cluster, Edge, Graph, Node
from tests import ltm_catalog as catalog
from tests.engine.core.graph.test_extract import started


def test_dot_text_of_a_machine() -> None:
    dot = catalog.Deep.to_dot()

    assert dot.startswith('digraph "deep" {\n') and dot.endswith("}\n")
    assert 'subgraph "cluster_deep.level1" {' in dot
    # DOT cannot point at a cluster: the edge goes to a node inside, clipped at the border.
    assert '"deep.__start__" -> "deep.level1.__start__" [lhead="cluster_deep.level1"' in dot
    assert 'ltail="cluster_deep.level1.level2.level3"' in dot
    assert "cluster___legend" not in dot  # no statuses, no legend


def test_dot_text_of_a_run_has_a_legend() -> None:
    dot = started(catalog.MyLtm).to_dot()

    assert 'label="my_ltm [active]"' in dot
    assert 'subgraph "cluster___legend"' in dot
    assert '"__legend_0" [label="active"' in dot and '"__legend_1" [label="completed"' in dot


def test_labels_are_escaped() -> None:
    assert quote('say "hi" \\ then\nnext') == '"say \\"hi\\" \\\\ then\\nnext"'
    graph = Graph(
        nodes=(Node('a"];x[', 'label "quoted"\\', status="mystery"),),
        edges=(Edge('a"];x[', "empty", label='"'),),
        clusters=(Cluster("empty", "nothing in it"),),
        title='t"itle',
    )
    dot = to_dot(graph)

    assert 'digraph "t\\"itle" {' in dot
    assert '"a\\"];x[" [label="label \\"quoted\\"\\\\"' in dot
    assert '"empty.__anchor__" [shape="point", style="invis"];' in dot
    assert '[lhead="cluster_empty", label="\\""]' in dot
    assert '"__legend_0" [label="mystery", fillcolor="#ffffff"' in dot


GRAPHS = {
    "definition": lambda: catalog.Deep.graph(),
    "run": lambda: started(catalog.FanOut).graph(),
    "namespaces": lambda: started(catalog.Broadcast).graph(),
    "routine": lambda: routine_graph([("a", "a", True), ("b", "b", False)], current=0),
    "escaping": lambda: Graph(
        nodes=(Node("x", 'say "hi" \\ <b>&amp;</b>\nnext', status="failed"),),
        clusters=(Cluster("c", "empty"),),
        edges=(Edge("x", "c", 'to "c"'),),
        title='a "title"',
    ),
}


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
@pytest.mark.parametrize("which", sorted(GRAPHS))
def test_dot_renders_svg(which: str) -> None:
    done = subprocess.run(
        ["dot", "-Tsvg"], input=to_dot(GRAPHS[which]()), capture_output=True, text=True
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "<svg" in done.stdout
