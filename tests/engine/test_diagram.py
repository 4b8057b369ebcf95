"""engine.diagram: SVG from DOT text, a clear error without Graphviz, and user labels that
cannot break out of the DOT string or the page."""

from __future__ import annotations

import shutil

import pytest

from engine import diagram
from engine.core.graph.dot import to_dot
from engine.core.graph.extract import routine_graph

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed")
EVIL = 'evil" ]; x [label="pwned"]; </script><script>alert(1)</script>\\'


@needs_dot
def test_render_svg_strips_the_prolog():
    svg = diagram.render_svg("digraph g { a -> b }")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "<?xml" not in svg and "<!DOCTYPE" not in svg


@needs_dot
def test_hostile_label_stays_one_escaped_label():
    graph = routine_graph([(EVIL, "greet", True)], current=0, states=["waiting"])
    dot = to_dot(graph)
    svg = diagram.render_svg(dot)
    assert "</script>" not in svg and "<script" not in svg
    assert "&lt;/script&gt;" in svg
    # The quote did not end the label: no node named x, no label "pwned" on its own.
    assert ">pwned<" not in svg and "<title>x</title>" not in svg
    # The start dot, the one step and one legend entry: the label made no node of its own.
    assert svg.count('class="node"') == 3


@needs_dot
def test_render_graph_draws_the_steps():
    svg = diagram.render_graph(routine_graph([("Ask", "ask_approval", True)]))
    assert "1. Ask" in svg


def test_missing_dot_raises_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    diagram._render.cache_clear()
    with pytest.raises(diagram.DiagramUnavailable, match="install Graphviz"):
        diagram.render_svg("digraph g { only_without_dot }")
    diagram._render.cache_clear()


@needs_dot
def test_bad_dot_text_is_a_diagram_error():
    with pytest.raises(diagram.DiagramUnavailable, match="could not draw"):
        diagram.render_svg("digraph { this is not dot ")


def test_missing_dot_is_a_notice_on_the_page(monkeypatch, client, django_user_model):
    user = django_user_model.objects.create_user("carol", password="pw")
    client.force_login(user)
    monkeypatch.setenv("PATH", "/nonexistent")
    diagram._render.cache_clear()
    response = client.post(
        "/routines/preview/", {"name": "x", "step_script": ["t_echo"], "step_label": ["y"]}
    )
    diagram._render.cache_clear()
    assert response.status_code == 200
    assert "Diagram unavailable" in response.content.decode()
    assert "install Graphviz" in response.content.decode()


pytestmark = pytest.mark.django_db
