"""MkDocs hook: publish whatever ``notebooks/*.ipynb`` exist, without listing them by hand.

* ``on_config`` expands the nav entry ``Notebooks: notebooks/index.md`` into the index page
  followed by one entry per notebook (sorted by file name, titled by the notebook's first
  Markdown heading);
* ``on_files`` adds the notebooks to the site as ``notebooks/NAME.ipynb`` (before mkdocs-jupyter
  turns them into pages), so no symlink or copy is needed under ``docs/``. The executed copy
  ``build/executed/notebooks/NAME.ipynb`` (``make docs-build``: fast mode, with figures) is published
  when it is at least as new as ``notebooks/NAME.ipynb``; otherwise the stored notebook, without
  outputs, is (and the build log says so);
* ``on_page_markdown`` replaces ``<!-- notebook-list -->`` in ``notebooks/index.md`` with a
  list of the notebooks and the first sentence of what each teaches.

A notebook that is absent is simply not published, so ``mkdocs build --strict`` passes whichever
notebooks exist.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.notebooks")

MARKER = "<!-- notebook-list -->"
EXECUTED = Path("build") / "executed" / "notebooks"
INDEX = "notebooks/index.md"
_found: list[dict] = []


def _first_markdown(path: Path) -> str:
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = cell.get("source", "")
            return "".join(src) if isinstance(src, list) else src
    return ""


def _describe(path: Path) -> dict:
    """Title (first heading) and summary (first sentence of the first paragraph) of a notebook."""
    text = _first_markdown(path)
    title, summary = None, ""
    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if not block:
            continue
        if block.startswith("#") and title is None:
            title = block.splitlines()[0].lstrip("#").strip()
            rest = "\n".join(block.splitlines()[1:]).strip()
            if rest and not summary:
                summary = rest
            continue
        if not summary:
            summary = block
        if title is not None and summary:
            break
    summary = " ".join(summary.split())
    summary = re.sub(r"^\*\*[^*]+\*\*\s*", "", summary)  # a bold lead-in ("**What it teaches.**")
    summary = summary.split("$$")[0].strip()  # no display math in a one-line summary
    first = re.match(r"(.+?[.!?])(\s|$)", summary)
    summary = first.group(1) if first else summary
    if summary and summary[-1] not in ".!?":
        summary = summary.rstrip(" :;,") + "."
    if title is None:
        title = path.stem.replace("_", " ")
    return {"name": path.name, "uri": f"notebooks/{path.name}", "title": title, "summary": summary}


def on_config(config):
    root = Path(config.config_file_path).resolve().parent
    _found.clear()
    _found.extend(_describe(p) for p in sorted((root / "notebooks").glob("*.ipynb")))
    entries = [INDEX] + [{nb["title"]: nb["uri"]} for nb in _found]
    for i, item in enumerate(config.nav or []):
        if isinstance(item, dict) and item.get("Notebooks") in (INDEX, [INDEX]):
            config.nav[i] = {"Notebooks": entries}
    return config


@event_priority(100)  # before mkdocs-jupyter wraps .ipynb files into pages
def on_files(files, config):
    root = Path(config.config_file_path).resolve().parent
    for nb in _found:
        if files.get_file_from_path(nb["uri"]) is not None:
            continue
        # The executed copy lives at build/executed/<uri>, so that folder is its src_dir (a plain
        # File: mkdocs-jupyter copies files by src_dir, which File.generated does not set).
        src_dir = root
        source, executed = root / nb["uri"], root / EXECUTED.parent / nb["uri"]
        if executed.exists() and executed.stat().st_mtime >= source.stat().st_mtime:
            src_dir = root / EXECUTED.parent
        else:
            log.info(
                "%s: no executed copy in %s, publishing it without outputs", nb["name"], EXECUTED
            )
        files.append(File(nb["uri"], str(src_dir), config.site_dir, config.use_directory_urls))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != INDEX or MARKER not in markdown:
        return markdown
    if not _found:
        listing = "*No notebook found in `notebooks/`.*"
    else:
        listing = "\n".join(
            f"- [{nb['title']}]({nb['name']})" + (f" — {nb['summary']}" if nb["summary"] else "")
            for nb in _found
        )
    return markdown.replace(MARKER, listing)
