"""Graphviz SVG of diagram DOT text (see `engine.core.graph` for the data and the DOT).

`render_svg` runs the `dot` binary. Without it, it raises `DiagramUnavailable` with a message
saying what to install; the studio shows that message where the diagram would be.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import lru_cache

from engine.core.graph.dot import to_dot
from engine.core.graph.model import Graph

__all__ = ["DiagramUnavailable", "render_graph", "render_svg"]

INSTALL_HINT = (
    "install Graphviz to see diagrams (Debian/Ubuntu: `apt-get install graphviz`; "
    "macOS: `brew install graphviz`)"
)
_PROLOG = re.compile(r"\A\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?(<!--.*?-->\s*)*", re.S)


class DiagramUnavailable(RuntimeError):
    """The diagram could not be drawn (Graphviz missing, or `dot` failed)."""


def render_svg(dot_text: str) -> str:
    """The SVG element drawn by Graphviz `dot` from `dot_text`, without XML prolog, DOCTYPE
    or leading comments, ready to embed in an HTML page."""
    return _render(dot_text)


def render_graph(graph: Graph) -> str:
    """The SVG of a `engine.core.graph.model.Graph` (its DOT text escapes every label)."""
    return render_svg(to_dot(graph))


@lru_cache(maxsize=256)
def _render(dot_text: str) -> str:
    # The same routine is drawn again and again (every page view, every poll): cache by text.
    if shutil.which("dot") is None:
        raise DiagramUnavailable(f"Graphviz `dot` was not found: {INSTALL_HINT}")
    try:
        done = subprocess.run(
            ["dot", "-Tsvg"],
            input=dot_text.encode("utf-8"),
            capture_output=True,
            timeout=10,
            check=False,
        )
    except FileNotFoundError:
        raise DiagramUnavailable(f"Graphviz `dot` was not found: {INSTALL_HINT}") from None
    except subprocess.TimeoutExpired:
        raise DiagramUnavailable("Graphviz took more than 10 s to draw this diagram") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()
        raise DiagramUnavailable(f"Graphviz could not draw this diagram: {message}")
    return _PROLOG.sub("", done.stdout.decode("utf-8", "replace"), count=1).strip()
