"""Headless Debian chromium driven by selenium, shared by the browser tests.

The system chromedriver is given explicitly, so selenium never tries to download one; the tests
that use it skip with `NO_BROWSER` as their reason where chromium or chromedriver is missing
(``make test`` installs both when run as root).
"""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = CHROMIUM is None or CHROMEDRIVER is None
NO_BROWSER = (
    "Debian's chromium and chromium-driver are not installed "
    "(`make test` installs them when run as root: apt-get install chromium chromium-driver)"
)


def start_chromium(*, width: int = 1280, height: int = 1000, logs: bool = False):
    """A headless chromium (selenium ``webdriver.Chrome``) with a ``width`` x ``height`` window,
    no GPU, sandbox or background networking. ``logs``: keep the console and network logs
    (``driver.get_log("browser")`` / ``("performance")``). The caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    if logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver
