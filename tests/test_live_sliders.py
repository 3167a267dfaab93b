"""The explorer's sliders tried live: a JupyterLab server on 127.0.0.1, notebook 03 opened in
headless chromium, its cells run as a reader would, a slider moved, the figure redrawn.

Only the cells the explorer needs run (the parameters cell, the setup cell and the explorer
cell), taken from the real notebook. The kernel runs outside fast mode (``CI`` and
``SAFESCORE_FAST`` unset for it): in fast mode the explorer draws one static figure, as in the
docs, and there is no slider to move. The server, its kernel and every Jupyter/IPython directory
live in the test's tmp_path on a port the OS picks, so parallel runs (pytest-xdist) do not meet.
Set ``SAFESCORE_SCREENSHOTS=DIR`` to keep screenshots before and after the slider moved.
Skips where chromium, chromedriver, JupyterLab, ipykernel or ipywidgets is missing.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _browser import MISSING, NO_BROWSER, start_chromium

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_guidance_and_unguidance.ipynb"
JUPYTER_PACKAGES = ("jupyterlab", "ipykernel", "ipywidgets", "selenium")
MISSING_JUPYTER = [name for name in JUPYTER_PACKAGES if importlib.util.find_spec(name) is None]
# Bounds on each wait, far above what it takes (seconds on a busy 2-core machine): server up,
# page loaded, kernel idle; the cells run and the explorer drawn; the figure redrawn.
STARTUP_SECONDS = 120
RUN_SECONDS = 120
REDRAW_SECONDS = 60

pytestmark = [
    pytest.mark.skipif(MISSING, reason=NO_BROWSER),
    pytest.mark.skipif(
        bool(MISSING_JUPYTER),
        reason=f"{', '.join(MISSING_JUPYTER)} not installed (pip install -e '.[notebooks,docs]')",
    ),
]

# Server extensions the page does not need, off so that the server starts fast.
UNUSED_SERVER_EXTENSIONS = (
    "jupyter_lsp",
    "jupyter_server_terminals",
    "jupyterlab_jupytext",
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.validate_assignment",
    "nbgrader.server_extensions.assignment_list",
    "nbgrader.server_extensions.course_list",
)
# Lab settings: every cell attached to the page (a cell far down can be clicked), and nothing
# fetched from outside (news, update checks).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "contentVisibility"},
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def _code_cell(cells: list[dict], *needles: str) -> int:
    """Index of the one code cell whose source contains every needle."""
    found = [
        i
        for i, cell in enumerate(cells)
        if cell["cell_type"] == "code" and all(n in "".join(cell["source"]) for n in needles)
    ]
    assert len(found) == 1, f"{NOTEBOOK.name}: {len(found)} code cells contain {needles}"
    return found[0]


class JupyterServer:
    """A JupyterLab server for one test, started on creation; `wait_until_up` waits for it,
    `stop` ends it and its kernels."""

    def __init__(self, home: Path, root_dir: Path):
        self.token = secrets.token_hex(24)
        self.log_path = home / "server.log"
        dirs = {
            name: home / sub
            for name, sub in (
                ("JUPYTER_CONFIG_DIR", "config"),
                ("JUPYTER_DATA_DIR", "data"),
                ("JUPYTER_RUNTIME_DIR", "runtime"),
                ("IPYTHONDIR", "ipython"),
                ("HOME", "home"),
            )
        }
        for path in dirs.values():
            path.mkdir()
        self.runtime_dir = dirs["JUPYTER_RUNTIME_DIR"]
        self.runtime_marker = str(self.runtime_dir).encode()
        config = {
            "ServerApp": {
                "ip": "127.0.0.1",
                "port": 0,
                "port_retries": 0,
                "open_browser": False,
                "allow_root": True,  # CI runs as root
                "root_dir": str(root_dir),
                "jpserver_extensions": dict.fromkeys(UNUSED_SERVER_EXTENSIONS, False),
            },
            "IdentityProvider": {"token": self.token},
            "LabApp": {
                "extension_manager": "readonly",  # never asks PyPI
                "news_url": None,
                "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
            },
        }
        (dirs["JUPYTER_CONFIG_DIR"] / "jupyter_server_config.json").write_text(json.dumps(config))
        settings = dirs["JUPYTER_CONFIG_DIR"] / "lab" / "user-settings"
        for plugin, values in LAB_SETTINGS.items():
            path = settings / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY_"))}
        for name in ("CI", "SAFESCORE_FAST", "MPLBACKEND", "PYTHONSTARTUP"):
            env.pop(name, None)  # the kernel runs as a reader's: widgets, inline figures
        env.update({name: str(path) for name, path in dirs.items()})
        # The real matplotlib cache (font list), not a fresh one built in the new HOME.
        import matplotlib

        env["MPLCONFIGDIR"] = os.environ.get("MPLCONFIGDIR", matplotlib.get_configdir())
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env["OMP_NUM_THREADS"] = "1"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab"],
            cwd=root_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, ended as one by `stop`
        )
        self.url: str | None = None  # known once the server is up: `wait_until_up`

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, message: str):
        pytest.fail(f"{message}\n--- Jupyter server log (last lines) ---\n{self.log_tail()}")

    def wait_until_up(self) -> None:
        """Wait for the server's runtime file (it holds the port the OS chose), then for its
        API to answer."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.fail(f"the Jupyter server exited with code {self.process.returncode}")
            if self.url is None:
                for info in self.runtime_dir.glob("jpserver-*.json"):
                    try:
                        self.url = json.loads(info.read_text())["url"]
                    except (ValueError, KeyError):
                        pass  # written but not complete yet
            if self.url is not None:
                try:
                    self.api("status")
                    return
                except urllib.error.HTTPError as error:
                    self.fail(f"the Jupyter server answered {error.code} to api/status")
                except OSError:
                    pass  # not listening yet
            time.sleep(0.1)
        self.fail(f"the Jupyter server did not answer within {STARTUP_SECONDS} s")

    def api(self, path: str, method: str = "GET"):
        """JSON answer of the server's REST API at ``api/path``."""
        request = urllib.request.Request(
            f"{self.url}api/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = answer.read()
        return json.loads(body) if body else None

    def kernel_states(self) -> list[str]:
        return [k["execution_state"] for k in self.api("kernels")]

    def _kernel_pids(self) -> list[int]:
        """Kernels of this server: processes whose command line names its runtime folder (their
        connection file is there). They run in sessions of their own, outside its group."""
        pids = []
        proc = Path("/proc")
        for entry in proc.iterdir() if proc.is_dir() else ():
            try:
                if entry.name.isdigit() and self.runtime_marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass  # ended meanwhile
        return pids

    def stop(self) -> None:
        """End the server and its kernels: SIGTERM to both (nothing of theirs is kept), then
        SIGKILL to whatever is left after a few seconds."""
        kernels = self._kernel_pids()
        self._signal(kernels, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5
        while set(kernels) & set(self._kernel_pids()) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._signal(set(kernels) & set(self._kernel_pids()), signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()

    def _signal(self, kernels, signum) -> None:
        """Send ``signum`` to the server's process group and to the ``kernels`` (pids)."""
        for send, pid in [(os.killpg, self.process.pid)] + [(os.kill, pid) for pid in kernels]:
            try:
                send(pid, signum)
            except ProcessLookupError:
                pass  # already gone


@pytest.fixture
def notebook_dir(tmp_path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    return root


@pytest.fixture
def jupyter(tmp_path, notebook_dir):
    home = tmp_path / "jupyter"
    home.mkdir()
    server = JupyterServer(home, notebook_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser():
    driver = start_chromium(width=1280, height=1100)
    driver.set_page_load_timeout(STARTUP_SECONDS)  # JupyterLab's scripts, on a busy machine
    try:
        yield driver
    finally:
        driver.quit()


def _wait(server: JupyterServer, seconds: float, what: str, condition):
    """Poll ``condition()`` until it returns a true value (returned); fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            server.fail(f"{what}: not seen within {seconds} s")
        time.sleep(0.05)


CELL_COUNT = "return document.querySelectorAll('.jp-Notebook .jp-Cell').length"
# What the page shows of one cell: execution count, errors, the explorer's parts.
CELL_STATE = """
const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[arguments[0]];
if (!cell) return null;
const prompt = cell.querySelector('.jp-InputPrompt');
const img = cell.querySelector('.widget-output img');
const readouts = Array.from(cell.querySelectorAll('.widget-slider .widget-readout'));
const label = Array.from(cell.querySelectorAll('.widget-slider .widget-label'));
return {
  prompt: prompt ? prompt.textContent.trim() : '',
  sliders: Object.fromEntries(label.map((l, i) => [l.textContent.trim(),
                                                   readouts[i] ? readouts[i].textContent : ''])),
  img: img && img.complete && img.naturalWidth > 0 ? img.src : null,
  imgSize: img ? [img.naturalWidth, img.naturalHeight] : null,
  text: cell.querySelector('.jp-Cell-outputWrapper')?.innerText || '',
};
"""
ERRORS = """
return Array.from(document.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], ' +
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'))
  .map(e => e.innerText.slice(0, 400));
"""


def _screenshot(browser, element, name: str) -> None:
    shots = os.environ.get("SAFESCORE_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", element)
        browser.save_screenshot(str(Path(shots) / f"sliders_{name}.png"))


def test_moving_the_gamma_slider_redraws_the_explorer(jupyter, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    params = _code_cell(cells, "from safescore.config import FAST", "N_SAMPLES")
    setup = _code_cell(cells, "problem = toy.ring_problem()")
    explorer = _code_cell(cells, "ring_explorer(")

    jupyter.wait_until_up()  # it started before the browser did
    browser.get(f"{jupyter.url}lab/tree/{NOTEBOOK.name}?reset&token={jupyter.token}")
    _wait(
        jupyter,
        STARTUP_SECONDS,
        f"notebook 03 with its {len(cells)} cells in JupyterLab",
        lambda: browser.execute_script(CELL_COUNT) == len(cells),
    )
    _wait(jupyter, STARTUP_SECONDS, "an idle kernel for the notebook", _idle(jupyter))

    # Run the three cells as a reader would: click the cell's prompt, press Ctrl+Enter.
    page_cells = browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")
    for index in (params, setup, explorer):
        prompt = page_cells[index].find_element(By.CSS_SELECTOR, ".jp-InputPrompt")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", prompt)
        prompt.click()
        ActionChains(browser).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(
            Keys.CONTROL
        ).perform()

    def drawn():
        state = browser.execute_script(CELL_STATE, explorer)
        if browser.execute_script(ERRORS):
            return state  # stop waiting: the errors are reported below
        return state if state["img"] and "γ" in state["sliders"] else None

    before = _wait(jupyter, RUN_SECONDS, "the explorer's sliders and figure", drawn)
    assert not browser.execute_script(ERRORS), browser.execute_script(ERRORS)
    _wait(jupyter, RUN_SECONDS, "the kernel idle after the explorer cell", _idle(jupyter))
    # Drawing the sliders resamples nothing (a log slider sends its value back, rounded).
    assert _shown(browser.execute_script(CELL_STATE, explorer)) == _shown(before)
    widget = page_cells[explorer].find_element(By.CSS_SELECTOR, ".widget-vbox")
    _screenshot(browser, widget, "before")

    # Move γ as a keyboard user would: focus its slider handle, press Home (γ to its minimum).
    gamma = next(
        slider
        for slider in page_cells[explorer].find_elements(By.CSS_SELECTOR, ".widget-slider")
        if slider.find_element(By.CSS_SELECTOR, ".widget-label").text.strip() == "γ"
    )
    gamma.find_element(By.CSS_SELECTOR, ".noUi-handle").send_keys(Keys.HOME)

    def redrawn():
        state = browser.execute_script(CELL_STATE, explorer)
        if browser.execute_script(ERRORS):
            return state
        return state if state["img"] and state["img"] != before["img"] else None

    after = _wait(jupyter, REDRAW_SECONDS, "the figure redrawn after γ moved", redrawn)
    assert not browser.execute_script(ERRORS), browser.execute_script(ERRORS)
    _wait(jupyter, REDRAW_SECONDS, "the kernel idle after the redraw", _idle(jupyter))
    final = browser.execute_script(CELL_STATE, explorer)
    assert _shown(final) == _shown(after)  # one move, one redraw
    _screenshot(browser, widget, "after")

    # The readout went down to γ/100 (the slider spans two decades below the default, one
    # above), the other sliders did not move, and the figure is a new image.
    g_before, g_after = float(before["sliders"]["γ"]), float(after["sliders"]["γ"])
    assert g_before == pytest.approx(0.003) and g_after == pytest.approx(g_before / 100), (
        g_before,
        g_after,
    )
    del before["sliders"]["γ"], after["sliders"]["γ"]
    assert after["sliders"] == before["sliders"]
    assert min(after["imgSize"]) > 100 and after["img"] != before["img"]
    # γ 100 times smaller corrects far less: many more samples end in the harmful modes, drawn
    # red (HARMFUL_COLOR), and more red crosses mark corrected x̂0 on their paths.
    red_before, red_after = _red_pixels(before["img"]), _red_pixels(after["img"])
    assert red_after > 3 * max(red_before, 50), (red_before, red_after)
    assert "redrawn in" in final["text"]
    prompts = [browser.execute_script(CELL_STATE, i)["prompt"] for i in (params, setup, explorer)]
    assert prompts == ["[1]:", "[2]:", "[3]:"], prompts


def _red_pixels(data_url: str) -> int:
    """Pixels of a PNG data URL close to the harmful red #d62728 (drawn opaque or nearly)."""
    import numpy as np
    from PIL import Image

    png = base64.b64decode(data_url.split(",", 1)[1])
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((r > 150) & (g < 110) & (b < 110)).sum())


def _shown(state: dict) -> tuple:
    """The figure and the slider readouts of a cell state (not the redraw time)."""
    return state["img"], state["sliders"]


def _idle(server: JupyterServer):
    """A condition for `_wait`: the server's one kernel is idle. While the kernel starts, the
    server can answer its kernel list with a 500 (seen on a busy machine): not idle yet, ask
    again (`_wait` bounds the time and fails with the server log)."""

    def idle() -> bool:
        try:
            return server.kernel_states() == ["idle"]
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                return False
            raise

    return idle
