import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
# `make test` builds the site (docs-build) while pytest runs and writes "EXIT_CODE SECONDS" to
# this file when it is done; the tests that need the site wait for it (see `built_site`).
SITE_DONE_WAIT_S = 1800


@pytest.fixture(autouse=True)
def _one_thread():
    # Tests are many small ops; one thread avoids busy-waiting on a shared 2-core machine.
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def built_site() -> Path | None:
    """The site `make docs-build` wrote (``SAFESCORE_SITE``), or None when it is not given.

    When ``SAFESCORE_SITE_DONE`` names a file, the build runs alongside pytest: wait until the
    file appears, then fail with the build's log if the build failed.
    """
    given = os.environ.get("SAFESCORE_SITE")
    if not given:
        return None
    done = os.environ.get("SAFESCORE_SITE_DONE")
    if done:
        done_path = ROOT / done
        deadline = time.monotonic() + SITE_DONE_WAIT_S
        while not done_path.exists():
            if time.monotonic() > deadline:
                pytest.fail(f"docs-build did not finish within {SITE_DONE_WAIT_S} s ({done})")
            time.sleep(1)
        exit_code = done_path.read_text().split()[0]
        if exit_code != "0":
            pytest.fail(f"docs-build failed (exit {exit_code}): see build/docs-build.log")
    path = (ROOT / given).resolve()
    assert (path / "index.html").exists(), f"SAFESCORE_SITE={given} has no index.html"
    return path


@pytest.fixture(scope="session")
def executed_notebooks(built_site) -> Path | None:
    """The notebooks docs-build executed in fast mode (``build/executed/notebooks``), once the
    build is done; None when pytest runs without the site (the tests then execute what they need).
    """
    if built_site is None:
        return None
    folder = ROOT / "build" / "executed" / "notebooks"
    assert folder.is_dir(), f"docs-build wrote no executed notebooks to {folder}"
    return folder


@pytest.fixture(scope="session")
def modules_in_a_fresh_process() -> dict[str, set[str]]:
    """The modules a fresh interpreter has loaded after each of a few imports (one process)."""
    code = (
        "import sys\n"
        "import safescore\n"
        "print('## import safescore', *sys.modules, sep='\\n')\n"
        "import safescore.sd, safescore.cli.generate\n"
        "print('## import safescore.sd, safescore.cli.generate', *sys.modules, sep='\\n')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    snapshots: dict[str, set[str]] = {}
    for block in out.stdout.split("## ")[1:]:
        title, *names = block.strip().split("\n")
        snapshots[title] = set(names)
    return snapshots


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "full: a slow variation that proves nothing more for a contributor; run by "
        "`make test-full` (SAFESCORE_TEST_FULL=1), deselected otherwise",
    )


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SAFESCORE_TEST_FULL", "") != "1":
        slow = [item for item in items if item.get_closest_marker("full")]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if not item.get_closest_marker("full")]
    # Tests that need the built site run last, on one xdist worker (--dist loadgroup), so the
    # site is ready (or nearly) when they start and the browser starts once.
    needs_site = [item for item in items if "built_site" in item.fixturenames]
    for item in needs_site:
        item.add_marker(pytest.mark.xdist_group("built_site"))
    last = {id(item) for item in needs_site}
    items[:] = [item for item in items if id(item) not in last] + needs_site
