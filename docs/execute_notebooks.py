"""Execute notebooks in fast mode and write the executed copies for the docs site.

    CI=1 .venv/bin/python docs/execute_notebooks.py notebooks/*.ipynb --out build/executed/notebooks

``notebooks/`` stays without outputs (tests/test_repo_hygiene.py); the site publishes these
copies instead (docs/_hooks/notebooks.py), so its notebook pages show their figures. Errors are
not allowed: a failing cell fails the build. Widget state and widget views are dropped from the
copies (they would need a widget manager from a CDN); each widget output keeps its text form.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def strip_widgets(nb) -> None:
    """Remove saved widget state and widget-view outputs, keeping their text/plain fallback."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data is not None and WIDGET_VIEW in data:
                data.pop(WIDGET_VIEW)
                text = data.get("text/plain", "")
                # A progress bar's text is kept; an empty widget repr is dropped.
                if not data or not text.strip() or text.strip().endswith("Box(...)"):
                    continue
            kept.append(out)
        cell.outputs = kept


def execute(path: Path, out_dir: Path, timeout: int = 600) -> float:
    """Run ``path`` in its own folder, write ``out_dir / path.name``; return the seconds taken."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    strip_widgets(nb)
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("build/executed/notebooks"))
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    os.environ.setdefault("CI", "1")  # fast mode (safescore.config.FAST) in the kernel
    for path in args.notebooks:
        seconds = execute(path, args.out, args.timeout)
        print(f"executed {path} in {seconds:.1f} s -> {args.out / path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
