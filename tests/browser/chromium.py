"""Headless Chromium driven by Selenium, through the system chromedriver only.

Selenium with Debian's `chromium` and `chromium-driver` (deploy/ensure-chromium.sh): the
driver is named by path, so selenium-manager never looks for or downloads one, and the pair
comes from one Debian package version, so they always match. (Playwright would need its
own browser builds or a driver matched to the system Chromium's version; Selenium needs
neither.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Without the background-networking flags Chromium keeps calling Google's services, which
# on a closed network floods it with refused connections and slows every start.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-default-apps", "--disable-extensions",
         "--no-default-browser-check", "--disable-dev-shm-usage", "--hide-scrollbars")


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    absent = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if absent:
        return (f"{' and '.join(absent)} missing: run deploy/ensure-chromium.sh as root "
                "(apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is missing: pip install -e '.[test]'"
    return None


@contextmanager
def chromium(width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A headless Chromium with a fresh profile, its console log readable with
    driver.get_log("browser"); quit and its profile removed on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tlog-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_problems(driver: Any) -> list[str]:
    """The console messages since the last call that report a Content-Security-Policy
    violation (Chromium logs each refused script, style, image or connection) or an error
    thrown by a script."""
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"]
            or (entry.get("source") == "javascript" and entry.get("level") == "SEVERE")]


def wait_for_result(driver: Any, timeout: float = 20) -> str:
    """data-result of #verify-status once the in-browser check ended (not "pending")."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def ended(d: Any) -> str | bool:
        result = d.find_element(By.ID, "verify-status").get_attribute("data-result")
        return result if result and result != "pending" else False

    result: str = WebDriverWait(driver, timeout).until(ended)
    return result
