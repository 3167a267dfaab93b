"""The docs site in a real browser: headless Debian chromium, driven by selenium, offline.

The site is the one ``make docs-build`` wrote (``SAFESCORE_SITE``, set by ``make test``), or is
built here with ``mkdocs build`` from the executed notebooks in ``build/executed/notebooks``. It is
served from 127.0.0.1, and every page is checked for what a reader would notice: raw TeX, math
that did not render, notebook figures that did not load, Sphinx roles printed literally, console
errors, and requests that leave the site. Set ``SAFESCORE_SCREENSHOTS=DIR`` to keep screenshots.
Skips only when chromium or chromedriver is missing (``make test`` installs them as root).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
from _browser import MISSING, NO_BROWSER, start_chromium

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(MISSING, reason=NO_BROWSER)

# Text that means TeX was not typeset: \( \) \[ \] delimiters, $$, or $...$ around a command.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\$[^$\s][^$]*\\[a-zA-Z]+[^$]*\$")
SPHINX_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|obj|data|exc|ref):`")
THEORY = "theory/"
API = "api/core/"


@pytest.fixture(scope="module")
def site(tmp_path_factory, built_site) -> Path:
    if built_site is not None:  # SAFESCORE_SITE, waited for (tests/conftest.py)
        return built_site
    assert (ROOT / "docs/js/vendor/mathjax/tex-svg.js").exists(), (
        "MathJax is not vendored: run `make docs-assets` (or `make docs-build`)"
    )
    path = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(path)],
        cwd=ROOT,
        check=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    return path


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.search_index = None  # bytes served instead of search/search_index.json, when set
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.split("?")[0].endswith("/search/search_index.json"):
            return super().do_GET()
        body = self.server.search_index
        if body is None:
            body = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # each page asks this server again
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def browser():
    driver = start_chromium(logs=True)
    yield driver
    driver.quit()


def _pages(site: Path) -> list[str]:
    """Every HTML page of the site, as paths relative to its root ('' is the home page)."""
    pages = []
    for html in sorted(site.rglob("index.html")):
        rel = html.parent.relative_to(site).as_posix()
        if rel == "." or not rel.startswith(("assets", "js", "css", "search")):
            pages.append("" if rel == "." else rel + "/")
    return pages


def _notebook_pages(site: Path) -> list[str]:
    return [p for p in _pages(site) if p.startswith("notebooks/") and p != "notebooks/"]


def _open(browser, url: str) -> dict:
    """Load ``url``, wait until MathJax has typeset and images have loaded; return what the page
    shows: visible text, math and image counts, console errors and the URLs it requested."""
    browser.get_log("performance")  # drop the log of the previous page
    browser.get_log("browser")
    browser.get(url)
    state = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const images = () => Promise.all(Array.from(document.images).map(img =>
            img.complete ? null : new Promise(r => { img.onload = img.onerror = r; })));
        const typeset = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)
            ? MathJax.startup.promise : Promise.resolve();
        Promise.all([typeset(), images()]).then(() => document.fonts.ready).then(() => {
          const imgs = Array.from(document.querySelectorAll('.jp-OutputArea-output img, article img'));
          done({
            text: document.body.innerText,
            math: document.querySelectorAll('mjx-container').length,
            mathErrors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length,
            outputImages: Array.from(document.querySelectorAll('.jp-OutputArea-output img')).map(
                img => ({src: img.src.slice(0, 60), w: img.naturalWidth, h: img.naturalHeight})),
            brokenImages: imgs.filter(img => img.naturalWidth === 0).map(img => img.src.slice(0, 80)),
          });
        });
        """
    )
    requests = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    state["requests"] = requests
    state["console"] = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    return state


@pytest.fixture(scope="module")
def seen(site, server, browser) -> dict:
    """Open every page once; {page: state}. Screenshots of three pages if asked for."""
    browser.set_script_timeout(60)
    shots = os.environ.get("SAFESCORE_SCREENSHOTS")
    states = {}
    for i, page in enumerate(_pages(site)):
        states[page] = _open(browser, _url(server) + page)
        if i == 0:
            # The first page loads the whole search index (and any error in it shows); the other
            # pages get the same index with no entries, so that the search worker does not
            # rebuild 0.9 MB of index on each of them (about 0.5 CPU-second a page).
            index = json.loads((site / "search" / "search_index.json").read_text("utf-8"))
            server.search_index = json.dumps({**index, "docs": []}).encode()
        if shots and page in (THEORY, API):
            Path(shots).mkdir(parents=True, exist_ok=True)
            name = page.strip("/").replace("/", "_") or "home"
            browser.save_screenshot(str(Path(shots) / f"{name}.png"))
    notebooks = _notebook_pages(site)
    if shots and notebooks:  # one notebook page, scrolled to its first figure: 04 (CDTC) if any
        page = next((p for p in notebooks if "/04_" in p), notebooks[0])
        _open(browser, _url(server) + page)
        browser.execute_script(
            "const img = document.querySelector('.jp-OutputArea-output img');"
            "if (img) img.scrollIntoView();"
        )
        browser.save_screenshot(str(Path(shots) / "notebook.png"))
    return states


def test_site_has_the_pages(site):
    pages = _pages(site)
    assert THEORY in pages and API in pages, pages
    assert _notebook_pages(site), "no notebook page was built"


def test_no_raw_tex_and_math_renders(seen):
    for page, state in seen.items():
        raw = RAW_TEX.findall(state["text"])
        assert not raw, f"{page}: raw TeX in the visible text: {raw[:5]}"
        assert state["mathErrors"] == 0, f"{page}: {state['mathErrors']} MathJax errors"
    assert seen[THEORY]["math"] > 20, "the theory page shows no typeset math"
    assert seen[""]["math"] > 0, "the home page shows no typeset math"


def _figures_in_notebook(site: Path, page: str) -> int:
    """Figures stored in the notebook the page was built from (published beside it): image
    outputs, and HTML outputs that inline an image (the animations, as base64 GIFs)."""
    name = page.rstrip("/").split("/")[-1]
    nb = json.loads((site / page / f"{name}.ipynb").read_text(encoding="utf-8"))
    unexecuted = [c for c in nb["cells"] if c["cell_type"] == "code" and not c["execution_count"]]
    assert not unexecuted, f"{page}: built from a notebook that was not executed (make docs-build)"

    def figures(data: dict) -> int:
        if any(k.startswith("image/") for k in data):
            return 1
        html = data.get("text/html", "")
        return ("".join(html) if isinstance(html, list) else html).count("<img ")

    return sum(figures(out.get("data", {})) for c in nb["cells"] for out in c.get("outputs", []))


def test_notebook_pages_show_math_and_figures(site, seen):
    total = 0
    for page in _notebook_pages(site):
        state = seen[page]
        assert state["math"] > 0, f"{page}: no typeset math"
        images = state["outputImages"]
        expected = _figures_in_notebook(site, page)
        assert len(images) == expected, f"{page}: {len(images)} figures shown, {expected} stored"
        empty = [img for img in images if img["w"] == 0 or img["h"] == 0]
        assert not empty, f"{page}: figures that did not load: {empty[:3]}"
        total += len(images)
    # The pages come from executed notebooks: the figure-making ones show their figures.
    assert total >= len(_notebook_pages(site)), "notebook pages show almost no figures"
    for page, state in seen.items():
        assert not state["brokenImages"], (
            f"{page}: images that did not load: {state['brokenImages']}"
        )


def test_no_sphinx_roles(seen):
    for page, state in seen.items():
        found = SPHINX_ROLE.findall(state["text"])
        assert not found, f"{page}: Sphinx roles printed literally: {found[:5]}"


def test_no_console_errors(seen):
    for page, state in seen.items():
        assert not state["console"], f"{page}: console errors: {state['console'][:3]}"


def test_no_request_leaves_the_site(seen):
    for page, state in seen.items():
        outside = [
            url
            for url in state["requests"]
            if urlparse(url).scheme not in ("data", "blob", "about", "chrome-extension")
            and urlparse(url).hostname != "127.0.0.1"
        ]
        assert not outside, f"{page}: requests outside the site: {outside[:5]}"
