"""A real headless browser for tests, screenshots and benchmarks: Debian's ``chromium``
driven through ``chromedriver`` (package ``chromium-driver``) by Selenium.

:func:`browser_paths` finds both programs (None when one is missing: the caller decides
whether that skips, fails or ends a script); :func:`headless` starts the browser, with
its console log kept so :func:`console_errors` can read it, and quits it for sure.
Waiting on the page is :func:`wait_for`: a condition polled with a deadline.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service

__all__ = ["BROWSER_HINT", "browser_paths", "console_errors", "headless", "wait_for"]

BROWSER_HINT = "install Debian's chromium and chromium-driver (apt-get install chromium-driver)"
T = TypeVar("T")


def browser_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) as found on PATH, or None if either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@contextlib.contextmanager
def headless(
    paths: tuple[str, str], width: int = 1400, height: int = 1000
) -> Iterator[webdriver.Chrome]:
    """Headless chromium at ``paths`` (from :func:`browser_paths`), its window
    ``width`` x ``height``; quit when the block ends."""
    chromium, driver = paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",  # run as root in containers; the pages loaded are the test's own
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield browser
    finally:
        browser.quit()


def console_errors(browser: webdriver.Chrome) -> list[str]:
    """The browser console's errors since the last call (failed loads, script errors)."""
    return [e["message"] for e in browser.get_log("browser") if e.get("level") == "SEVERE"]


def wait_for(
    check: Callable[[], T | None],
    what: str,
    *,
    deadline: float = 20.0,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` (a look at the page) until it returns something true; fail after
    ``deadline`` seconds naming ``what``.  An element replaced while looked at (the page
    re-renders every refresh) counts as not yet."""
    end = time.monotonic() + deadline
    last: Any = None
    while True:
        try:
            result = check()
        except (StaleElementReferenceException, AssertionError) as exc:
            result, last = None, exc
        if result:
            return result
        if time.monotonic() >= end:
            message = f"timed out after {deadline:.0f}s waiting for {what}"
            if last is not None:
                message += f"\nlast check: {last}"
            if details is not None:
                message += "\n" + details()
            raise AssertionError(message)
        time.sleep(0.1)


def page_ready(browser: webdriver.Chrome) -> bool:
    """Whether the console has rendered its first full answer."""
    try:
        return bool(browser.execute_script("return document.documentElement.dataset.rendered"))
    except WebDriverException:
        return False
