"""Graphviz DOT text of diagram data (`model`). Every label, id and tooltip is quoted and
escaped, so user text cannot break out of it; a legend is added when statuses are drawn.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from .model import (
    HIGHLIGHT_COLOUR,
    STATUS_COLOURS,
    UNKNOWN_STATUS_COLOURS,
    Cluster,
    Edge,
    Graph,
    Node,
)


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
