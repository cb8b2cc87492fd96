"""Helpers of the browser tests: a headless Chromium (selenium + chromedriver from the system)."""

import json
import os
import shutil

import pytest


def chrome(*flags: str, network_log: bool = False):
    """A headless Chromium; skipped where none is installed, except in CI (VX11_REQUIRE_SERVICES=1).

    `flags`: extra command-line switches. `network_log`: keep the DevTools network events, read with
    `requested_urls(browser)`."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.environ.get("VX11_REQUIRE_SERVICES") == "1":
            pytest.fail("chromium and chromedriver are required in CI (.ci/run installs them)")
        pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        *flags,
    ):
        options.add_argument(flag)
    if network_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def requested_urls(browser) -> list[str]:
    """Every URL the pages asked for since the last call (needs `chrome(network_log=True)`)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def log_in_live(browser, daphne: str, page: str):
    """Log in as the admin, open `page`, and wait until its live indicator says the WebSocket is up."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{daphne.replace('ws://', 'http://')}/admin/login/?next={page}")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("admin-pass-123")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait = WebDriverWait(browser, 15)
    wait.until(lambda b: "●" in b.find_element(By.ID, "vx11-live").text)
    browser.execute_script("window.__not_reloaded = true;")
    return wait
