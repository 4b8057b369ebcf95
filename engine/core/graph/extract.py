"""Diagram data from what is drawn: a linear routine's steps (`routine_graph`), an LTM class's
definition, or a run's records with their statuses (`ltm_graph`). Plain data in, `Graph`
out; rendering is `dot`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from engine.core.ltm.tree import RecordTree

from .model import Cluster, Edge, Graph, Node

if TYPE_CHECKING:
    from engine.core.ltm.node import LTM
    from engine.core.ltm.records import InstanceRecord


def routine_graph(
    steps: Sequence[tuple[str, str, bool]],
    current: int | None = None,
    states: Sequence[str | None] | None = None,
    title: str = "routine",
) -> Graph:
    """A linear routine: one node per `(label, script_name, blocking)` step in sequence,
    `current` (an index) highlighted, `states` (one status per step) coloured."""
    nodes = [Node("start", "", kind="start")]
    edges = []
    previous = "start"
    for index, (label, script, blocking) in enumerate(steps):
        node_id = f"step_{index}"
        text = f"{index + 1}. {label}" + (f"\n{script}" if script != label else "")
        status = states[index] if states is not None and index < len(states) else None
        nodes.append(
            Node(
                node_id,
                text,
                kind="blocking_step" if blocking else "step",
                status=status,
                attrs={"script": script, "blocking": "yes" if blocking else "no"},
                highlighted=index == current,
            )
        )
        edges.append(Edge(previous, node_id, kind="init" if previous == "start" else "sequence"))
        previous = node_id
    return Graph(tuple(nodes), tuple(edges), (), title)


def ltm_graph(
    machine: type[LTM], records: Iterable[InstanceRecord] | None = None, fqn: str | None = None
) -> Graph:
    """Diagram data of an LTM class's definition (no `records`), or of a run of the root
    class `machine` from its records, with statuses (parameterised instances as nodes of
    their own), drawn from the instance `fqn` down (default: the root)."""
    tree: RecordTree | None = None
    if records is None:
        cls, top = machine, None
        top_id = title = cls.name
    else:
        tree = RecordTree(machine, records)
        top = tree.root if fqn is None else tree.find(fqn)
        cls = tree.class_of(top)
        top_id = title = top
    status = tree.record(top).status if tree is not None and top is not None else None
    if not cls.definition().is_machine:
        node = Node(top_id, title, status=status, attrs=_attrs(cls, tree, top))
        return Graph((node,), (), (), title, status)
    edges: list[Edge] = []
    nodes, clusters = _machine_contents(cls, tree, top, top_id, edges)
    return Graph(nodes, tuple(edges), clusters, title, status)


def _machine_contents(
    cls: type[LTM], tree: RecordTree | None, fqn: str | None, path: str, edges: list[Edge]
) -> tuple[tuple[Node, ...], tuple[Cluster, ...]]:
    # `tree` is None for a definition; `fqn` is None for a machine of a run not created yet.
    definition = cls.definition()
    start_id = f"{path}.__start__"
    nodes = [Node(start_id, "", kind="start")]
    clusters: list[Cluster] = []
    ids: dict[type[LTM], list[str]] = {}
    existing = (
        [(child, tree.record(child).name, tree.class_of(child)) for child in tree.children(fqn)]
        if tree is not None and fqn is not None
        else []
    )
    for declared, child_cls in definition.children.items():
        slots: list[tuple[str, str | None]]
        if child_cls.placeholders:
            slots = [(name, child) for child, name, kind in existing if kind is child_cls]
            slots = slots or [(declared, None)]
        else:
            named = next((child for child, name, _ in existing if name == declared), None)
            slots = [(declared, named)]
        for name, child in slots:
            child_id = f"{path}.{name}"
            ids.setdefault(child_cls, []).append(child_id)
            status = None
            if tree is not None:
                status = tree.record(child).status if child is not None else "init"
            template = child_cls.placeholders and child is None
            if template:
                status = None
            if child_cls.definition().is_machine:
                sub_nodes, sub_clusters = _machine_contents(child_cls, tree, child, child_id, edges)
                clusters.append(Cluster(child_id, name, sub_nodes, sub_clusters, status))
            else:
                kind = "template" if template else "state"
                attrs = _attrs(child_cls, tree, child)
                nodes.append(Node(child_id, name, kind=kind, status=status, attrs=attrs))
    for state in definition.init:
        edges.extend(Edge(start_id, child_id, kind="init") for child_id in ids[state])
    for transition in definition.transitions:
        label = transition.label
        if transition.namespace not in (None, path):
            label = f"{label} [{transition.namespace}]"
        for source_cls in transition.sources:
            for target_cls in transition.targets:
                edges.extend(
                    Edge(source, target, label)
                    for source in ids[source_cls]
                    for target in ids[target_cls]
                )
    return tuple(nodes), tuple(clusters)


def _attrs(cls: type[LTM], tree: RecordTree | None, fqn: str | None) -> dict[str, str]:
    attrs = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    params = tree.record(fqn).params if tree is not None and fqn is not None else None
    if params:
        attrs["params"] = ", ".join(f"{k}={v!r}" for k, v in params.items())
    return attrs
