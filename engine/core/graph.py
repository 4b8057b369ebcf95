"""Diagram data as plain dataclasses, and its Graphviz DOT text.

Extract first (`ltm_graph` for LTM classes and runs, `routine_graph` for linear routines),
render second (`to_dot`). Tests assert on the data; the studio renders the DOT text.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ltm import LTM

# status -> (fill, border). LTM statuses first, then the flow states of routines.
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "init": ("#eeeeee", "#9e9e9e"),
    "queued": ("#fff3b0", "#c9a800"),
    "active": ("#bbdefb", "#1e88e5"),
    "completed": ("#c8e6c9", "#43a047"),
    "failed": ("#ffcdd2", "#e53935"),
    "pending": ("#eeeeee", "#9e9e9e"),
    "running": ("#bbdefb", "#1e88e5"),
    "waiting": ("#fff3b0", "#c9a800"),
    "complete": ("#c8e6c9", "#43a047"),
    "killed": ("#d7ccc8", "#6d4c41"),
}
UNKNOWN_STATUS_COLOURS = ("#ffffff", "#616161")
HIGHLIGHT_COLOUR = "#e65100"


@dataclass(frozen=True)
class Node:
    """A box. `kind`: state, start (entry point), template (parameterised state without
    instances), step, blocking_step. `attrs` is metadata, shown as the tooltip."""

    id: str
    label: str
    kind: str = "state"
    status: str | None = None
    attrs: Mapping[str, str] = field(default_factory=dict)
    highlighted: bool = False


@dataclass(frozen=True)
class Edge:
    """An arrow between node or cluster ids. `kind`: transition, init, sequence."""

    source: str
    target: str
    label: str | None = None
    kind: str = "transition"


@dataclass(frozen=True)
class Cluster:
    """A box of nodes: a sub-machine."""

    id: str
    label: str
    nodes: tuple[Node, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    status: str | None = None


@dataclass(frozen=True)
class Graph:
    """A whole diagram."""

    nodes: tuple[Node, ...] = ()
    edges: tuple[Edge, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    title: str = ""
    status: str | None = None

    def all_clusters(self) -> list[Cluster]:
        """Every cluster, nested ones included, parents first."""

        def walk(clusters: tuple[Cluster, ...]) -> Iterator[Cluster]:
            for cluster in clusters:
                yield cluster
                yield from walk(cluster.clusters)

        return list(walk(self.clusters))

    def all_nodes(self) -> list[Node]:
        """Every node, the ones in clusters included."""
        return [*self.nodes, *(n for c in self.all_clusters() for n in c.nodes)]

    def node(self, node_id: str) -> Node:
        for node in self.all_nodes():
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def statuses(self) -> list[str]:
        """The statuses drawn, in palette order (unknown ones last, by name)."""
        found = {n.status for n in self.all_nodes()} | {c.status for c in self.all_clusters()}
        found.add(self.status)
        found.discard(None)
        known = [s for s in STATUS_COLOURS if s in found]
        return known + sorted(s for s in found if s is not None and s not in STATUS_COLOURS)


# -- extraction -------------------------------------------------------------------------


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


def ltm_graph(target: type[LTM] | LTM) -> Graph:
    """Diagram data of an LTM class (its definition) or of an instance (its run's tree, with
    statuses; parameterised instances as nodes of their own)."""
    if isinstance(target, type):
        cls, instance, live = target, None, False
        top_id = title = cls.name
    else:
        cls, instance, live = type(target), target, True
        top_id = title = target.fqn
    status = instance.status if instance is not None else None
    if not cls.definition().is_machine:
        node = Node(top_id, title, status=status, attrs=_attrs(cls, instance))
        return Graph((node,), (), (), title, status)
    edges: list[Edge] = []
    nodes, clusters = _machine_contents(cls, instance, top_id, live, edges)
    return Graph(nodes, tuple(edges), clusters, title, status)


def _machine_contents(
    cls: type[LTM], instance: LTM | None, path: str, live: bool, edges: list[Edge]
) -> tuple[tuple[Node, ...], tuple[Cluster, ...]]:
    definition = cls.definition()
    start_id = f"{path}.__start__"
    nodes = [Node(start_id, "", kind="start")]
    clusters: list[Cluster] = []
    ids: dict[type[LTM], list[str]] = {}
    for declared, child_cls in definition.children.items():
        slots: list[tuple[str, LTM | None]]
        existing = list(instance.children.values()) if instance is not None else []
        if child_cls.placeholders:
            slots = [(c.name, c) for c in existing if type(c) is child_cls] or [(declared, None)]
        else:
            slots = [(declared, instance.children.get(declared) if instance is not None else None)]
        for name, child in slots:
            child_id = f"{path}.{name}"
            ids.setdefault(child_cls, []).append(child_id)
            status = (child.status if child is not None else "init") if live else None
            template = child_cls.placeholders and child is None
            if template:
                status = None
            if child_cls.definition().is_machine:
                sub_nodes, sub_clusters = _machine_contents(child_cls, child, child_id, live, edges)
                clusters.append(Cluster(child_id, name, sub_nodes, sub_clusters, status))
            else:
                kind = "template" if template else "state"
                attrs = _attrs(child_cls, child)
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


def _attrs(cls: type[LTM], instance: LTM | None) -> dict[str, str]:
    attrs = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    if instance is not None and instance.params:
        attrs["params"] = ", ".join(f"{k}={v!r}" for k, v in instance.params.items())
    return attrs


# -- rendering --------------------------------------------------------------------------


def quote(text: str) -> str:
    """A DOT double-quoted string; backslashes, quotes and line breaks are escaped, so
    user text cannot break out of it."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")
    return f'"{text}"'


def _attr_list(attrs: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={quote(value)}" for key, value in attrs.items())


def _colours(status: str) -> tuple[str, str]:
    return STATUS_COLOURS.get(status, UNKNOWN_STATUS_COLOURS)


def _anchor(cluster: Cluster) -> str:
    # DOT cannot point at a cluster: edges go to a node inside, clipped with lhead/ltail.
    return cluster.nodes[0].id if cluster.nodes else f"{cluster.id}.__anchor__"


def _node_line(node: Node, indent: str) -> str:
    if node.kind == "start":
        attrs = {"label": "", "shape": "circle", "width": "0.18", "fixedsize": "true"}
        attrs.update(style="filled", fillcolor="#424242", color="#424242")
    else:
        attrs = {"label": node.label}
        if node.status is not None:
            attrs["fillcolor"], attrs["color"] = _colours(node.status)
        if node.kind == "template":
            attrs["style"] = "rounded,dashed"
        if node.kind == "blocking_step":
            attrs["peripheries"] = "2"
        if node.highlighted:
            attrs.update(color=HIGHLIGHT_COLOUR, penwidth="3")
    if node.attrs:
        attrs["tooltip"] = "\n".join(f"{key}: {value}" for key, value in node.attrs.items())
    return f"{indent}{quote(node.id)} [{_attr_list(attrs)}];"


def _cluster_lines(cluster: Cluster, indent: str) -> list[str]:
    inner = indent + "  "
    attrs = {"label": cluster.label, "style": "rounded", "color": "#9e9e9e"}
    if cluster.status is not None:
        attrs.update(label=f"{cluster.label} [{cluster.status}]", penwidth="2")
        attrs["color"] = _colours(cluster.status)[1]
    lines = [f"{indent}subgraph {quote('cluster_' + cluster.id)} {{"]
    lines += [f"{inner}{key}={quote(value)};" for key, value in attrs.items()]
    if not cluster.nodes:
        lines.append(f'{inner}{quote(_anchor(cluster))} [shape="point", style="invis"];')
    lines += [_node_line(node, inner) for node in cluster.nodes]
    for sub in cluster.clusters:
        lines += _cluster_lines(sub, inner)
    lines.append(f"{indent}}}")
    return lines


def _edge_line(edge: Edge, clusters: Mapping[str, Cluster]) -> str:
    attrs: dict[str, str] = {}
    source, target = edge.source, edge.target
    if source in clusters:
        source, attrs["ltail"] = _anchor(clusters[source]), f"cluster_{source}"
    if target in clusters:
        target, attrs["lhead"] = _anchor(clusters[target]), f"cluster_{target}"
    if edge.label:
        attrs["label"] = edge.label
    if edge.kind == "init":
        attrs["arrowsize"] = "0.7"
    suffix = f" [{_attr_list(attrs)}]" if attrs else ""
    return f"  {quote(source)} -> {quote(target)}{suffix};"


def _legend_lines(statuses: list[str]) -> list[str]:
    lines = ['  subgraph "cluster___legend" {', '    label="status";', '    style="rounded";']
    lines.append('    color="#bdbdbd";')
    ids = [f"__legend_{index}" for index in range(len(statuses))]
    for node_id, status in zip(ids, statuses, strict=True):
        fill, border = _colours(status)
        attrs = {"label": status, "fillcolor": fill, "color": border, "fontsize": "9"}
        lines.append(f"    {quote(node_id)} [{_attr_list(attrs)}];")
    lines += [f'    {quote(a)} -> {quote(b)} [style="invis"];' for a, b in itertools.pairwise(ids)]
    lines.append("  }")
    return lines


def to_dot(graph: Graph) -> str:
    """Graphviz DOT text of a graph; a status legend is added when statuses are drawn."""
    title = graph.title + (f" [{graph.status}]" if graph.status else "")
    node_style = {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff"}
    node_style.update(fontname="Helvetica", fontsize="11")
    lines = [
        f"digraph {quote(graph.title or 'graph')} {{",
        '  compound="true";',
        '  rankdir="LR";',
        '  fontname="Helvetica";',
        f"  label={quote(title)};",
        '  labelloc="t";',
        f"  node [{_attr_list(node_style)}];",
        '  edge [fontname="Helvetica", fontsize="10"];',
    ]
    lines += [_node_line(node, "  ") for node in graph.nodes]
    for cluster in graph.clusters:
        lines += _cluster_lines(cluster, "  ")
    clusters = {cluster.id: cluster for cluster in graph.all_clusters()}
    lines += [_edge_line(edge, clusters) for edge in graph.edges]
    statuses = graph.statuses()
    if statuses:
        lines += _legend_lines(statuses)
    lines.append("}")
    return "\n".join(lines) + "\n"
