"""The shape of the pure core, read from its source: its modules import one another one way
only (no cycles, imports inside functions counted), a private attribute (`x._name`) is
written only inside the class that owns it, and every module of it imports without Django,
Huey or Channels."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

CORE = ROOT / "engine" / "core"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
            (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
            or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
        ):
            skipped.update(id(sub) for sub in ast.walk(node))
    return skipped


def core_imports() -> dict[str, set[str]]:
    """Module -> the core modules it imports anywhere (functions too; TYPE_CHECKING aside)."""
    paths = {module_name(path): path for path in CORE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        skipped = type_checking_nodes(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for name in names:
                hit = resolve(name)
                if hit and hit != module and not module.startswith(hit + "."):
                    targets.add(hit)
        graph[module] = targets
    return graph


def test_the_core_modules_import_each_other_one_way_only() -> None:
    graph = core_imports()
    assert "engine.core.ltm.planner" in graph and "engine.core.graph.extract" in graph
    cycles = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(path[path.index(module) :] + [module])
            return
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []


def test_the_layers_of_the_ltm_core() -> None:
    graph = core_imports()
    below_the_node = [
        "engine.core.ltm.definition",
        "engine.core.ltm.records",
        "engine.core.ltm.tree",
        "engine.core.ltm.planner",
        "engine.core.ltm.runtime",
        "engine.core.ltm.registry",
        "engine.core.graph.extract",
    ]
    for module in below_the_node:
        assert "engine.core.ltm.node" not in graph[module], module
    assert graph["engine.core.ltm.definition"] == set()
    assert graph["engine.core.ltm.records"] == set()
    assert graph["engine.core.ltm.planner"] <= {
        "engine.core.ltm.definition",
        "engine.core.ltm.records",
        "engine.core.ltm.tree",
    }
    assert graph["engine.core.graph.model"] == set()
    for package in ("engine.core", "engine.core.flows", "engine.core.ltm", "engine.core.graph"):
        assert graph[package] == set(), f"{package} re-exports {graph[package]}"


class _PrivateWrites(ast.NodeVisitor):
    """Assignments to `<expr>._name` outside a class that itself assigns `self._name` (or
    declares `_name` in its body)."""

    def __init__(self) -> None:
        self.classes: list[set[str]] = []
        self.found: list[tuple[int, str]] = []

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        owned: set[str] = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store):
                if isinstance(sub.value, ast.Name) and sub.value.id in ("self", "cls"):
                    owned.add(sub.attr)
            elif isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
                owned.add(sub.target.id)
        self.classes.append(owned)
        self.generic_visit(node)
        self.classes.pop()

    def visit_Attribute(self, node: ast.Attribute) -> None:
        private = node.attr.startswith("_") and not node.attr.startswith("__")
        if isinstance(node.ctx, ast.Store) and private:
            owned = self.classes[-1] if self.classes else set()
            if node.attr not in owned:
                self.found.append((node.lineno, ast.unparse(node)))
        self.generic_visit(node)


def test_private_attributes_are_written_only_by_their_own_class() -> None:
    found = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        visitor = _PrivateWrites()
        visitor.visit(ast.parse(path.read_text(), str(path)))
        found += [f"{path.relative_to(ROOT)}:{line}: {text}" for line, text in visitor.found]
    assert found == []


# -- purity -------------------------------------------------------------------------------


def test_the_core_imports_no_django_huey_or_channels() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import engine.core\n"
        "names = [m.name for m in pkgutil.walk_packages(engine.core.__path__, 'engine.core.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "assert 'engine.core.ltm.node' in names and 'engine.core.graph.dot' in names, names\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'huey', 'channels')]\n"
        "assert not bad, bad\n"
        "print(len(names))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 15  # every module of the core, subpackages included
