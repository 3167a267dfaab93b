"""Repository hygiene: notebooks are stored without outputs, and the package never unpickles.

* every ``notebooks/*.ipynb`` has code cells with ``outputs == []`` and
  ``execution_count is None`` (nbstripout's result), so an executed notebook can't be
  committed by accident;
* no module in ``safescore/`` calls ``pickle.load``/``loads``/``Unpickler`` (or
  ``pandas.read_pickle``, ``joblib.load``, ``numpy.load(allow_pickle=True)``), and every
  ``torch.load`` passes ``weights_only=True``. Found by reading the syntax tree, aliases
  included (``import pickle as pk``, ``from torch import load``).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
MODULES = sorted((REPO / "safescore").rglob("*.py"))

# (module, function) pairs that unpickle whatever the arguments.
FORBIDDEN = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("_pickle", "load"),
    ("_pickle", "loads"),
    ("cPickle", "load"),
    ("dill", "load"),
    ("dill", "loads"),
    ("joblib", "load"),
    ("pandas", "read_pickle"),
}


# --------------------------------------------------------------------------- notebooks
def notebook_problems(path: Path) -> list[str]:
    """Cells of a notebook that carry outputs or an execution count."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"{path.name}: cell {i} has {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"{path.name}: cell {i} has execution_count {cell['execution_count']}")
    return problems


def test_notebooks_are_stored_without_outputs():
    problems = [p for path in NOTEBOOKS for p in notebook_problems(path)]
    assert not problems, (
        "notebooks must be committed without outputs (run `nbstripout notebooks/*.ipynb`):\n"
        + "\n".join(problems)
    )


def test_notebook_checker_flags_outputs(tmp_path):
    cell = {"cell_type": "code", "source": "1", "metadata": {}}
    clean = {"cells": [{**cell, "outputs": [], "execution_count": None}]}
    dirty = {"cells": [{**cell, "outputs": [{"output_type": "stream"}], "execution_count": 3}]}
    (tmp_path / "clean.ipynb").write_text(json.dumps(clean))
    (tmp_path / "dirty.ipynb").write_text(json.dumps(dirty))
    assert notebook_problems(tmp_path / "clean.ipynb") == []
    assert len(notebook_problems(tmp_path / "dirty.ipynb")) == 2


# --------------------------------------------------------------------------- unpickling
def _dotted(node: ast.AST) -> str | None:
    """'a.b.c' for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _is_true(call: ast.Call, keyword: str) -> bool:
    return any(
        k.arg == keyword and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def unsafe_loads(source: str, filename: str = "<string>") -> list[str]:
    """Calls in ``source`` that may unpickle untrusted data, as 'file:line: call' strings."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}  # local name -> fully qualified name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = (
                    a.name if a.asname else a.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name is None:
            continue
        head, _, rest = name.partition(".")
        full = aliases.get(head, head) + (f".{rest}" if rest else "")
        module, _, func = full.rpartition(".")
        where = f"{filename}:{node.lineno}: {name}(...)"
        if (module, func) in FORBIDDEN:
            found.append(where)
        elif full == "torch.load" and not _is_true(node, "weights_only"):
            found.append(where + " without weights_only=True")
        elif full == "numpy.load" and _is_true(node, "allow_pickle"):
            found.append(where + " with allow_pickle=True")
    return found


@pytest.mark.parametrize(
    "source, bad",
    [
        ("import pickle\npickle.load(f)", True),
        ("import pickle as pk\npk.loads(b)", True),
        ("from pickle import load\nload(f)", True),
        ("import torch\ntorch.load(p)", True),
        ("import torch\ntorch.load(p, weights_only=False)", True),
        ("from torch import load\nload(p, map_location='cpu')", True),
        ("import numpy as np\nnp.load(p, allow_pickle=True)", True),
        ("import pandas as pd\npd.read_pickle(p)", True),
        ("import torch\ntorch.load(p, map_location='cpu', weights_only=True)", False),
        ("import numpy as np\nnp.load(p)", False),
        ("import json\njson.load(f)", False),
        ("from safetensors.torch import load_file\nload_file(p)", False),
    ],
)
def test_unpickling_checker(source, bad):
    assert bool(unsafe_loads(source)) is bad


def test_package_never_unpickles():
    assert MODULES, "no module found under safescore/"
    found = [
        hit
        for path in MODULES
        for hit in unsafe_loads(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]
    assert not found, (
        "never unpickle: no pickle.load, and torch.load only with weights_only=True:\n"
        + "\n".join(found)
    )
