"""The package's layers, read from the syntax tree: no import cycle (module-level or inside
functions), no lower layer importing an upper one, and a light ``import safescore``.

Layers, bottom to top: core (and the version/config leaves) -> toy, plotting -> sd -> eval, course ->
cli; the façades ``safescore`` (``__init__``), ``safescore.densities`` and ``__main__`` gather
names from every layer and are imported by none of them.
"""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "safescore"

LAYERS = {"core": 0, "_version": 0, "config": 0, "toy": 1, "plotting": 1, "sd": 2, "eval": 3}
LAYERS["course"] = 3  # exercise checks and the nbgrader tooling: teaching, above toy and sd
LAYERS["widgets"] = 1  # the interactive explorers: plotting with sliders
LAYERS.update({"cli": 4, "__main__": 5, "__init__": 5, "densities": 5})


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names a ``from ... import ...`` brings in (submodules included)."""
    if node.level:
        base = module.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        root = ".".join(base + ([node.module] if node.module else []))
    else:
        root = node.module or ""
    return [root] + [f"{root}.{alias.name}" for alias in node.names]


def imports_of(path: Path) -> set[str]:
    """Every safescore module a file imports, at any depth of the syntax tree."""
    module, tree = module_name(path), ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update(resolve(module, path.name == "__init__.py", node))
    return {name for name in found if name.split(".")[0] == "safescore"}


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def existing(name: str, known: dict[str, Path]) -> str | None:
    """The module a dotted name refers to (a name inside a module maps to that module)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {}
    for name, path in known.items():
        targets = {existing(t, known) for t in imports_of(path)}
        edges[name] = {t for t in targets if t and t != name and not name.startswith(t + ".")}
    return edges


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS["__init__"] if len(parts) == 1 else LAYERS[parts[1]]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_has_a_layer():
    assert all(layer(name) >= 0 for name in modules())


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_only_import_downward():
    upward = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in graph().items()
        for b in targets
        if layer(b) > layer(a)
    ]
    assert not upward, "\n".join(upward)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = "def f():\n    from ..sd.pipeline import X\n    import safescore.eval.runner\n"
    path = PACKAGE / "core" / "_probe_.py"
    tree_imports = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            tree_imports.update(resolve(module_name(path), False, node))
        elif isinstance(node, ast.Import):
            tree_imports.update(a.name for a in node.names)
    assert "safescore.sd.pipeline" in tree_imports and "safescore.eval.runner" in tree_imports
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("heavy", ["diffusers", "transformers", "matplotlib", "sklearn", "pandas"])
def test_import_safescore_is_light(heavy, modules_in_a_fresh_process):
    loaded = modules_in_a_fresh_process["import safescore"]
    assert "safescore" in loaded
    assert heavy not in loaded


@pytest.mark.parametrize("module", ["safescore", "safescore.cli"])  # .cli: the old module path
def test_python_dash_m_safescore_runs(module, monkeypatch, capsys):
    # `python -m MODULE --version` in this process (runpy is what -m runs); a real process runs
    # `python -m safescore` in tests/test_cli.py
    monkeypatch.setattr(sys, "argv", [module, "--version"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exit_.value.code in (0, None)
    assert capsys.readouterr().out.startswith("safescore ")
