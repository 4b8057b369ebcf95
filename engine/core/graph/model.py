"""Diagram data as plain dataclasses: nodes, edges, clusters, a graph, and the colours of
statuses. `extract` builds them (from routines, LTM classes and runs' records), `dot` renders
them as Graphviz DOT text. Tests assert on the data; the studio renders the DOT text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

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
    "retrying": ("#ffe0b2", "#ef6c00"),
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
