"""The admin's scorecard page in a real headless Chromium on real daphne: it opens on the empty state, a snapshot is
computed here (take_snapshot, as the CLI and the button do), and the page shows the new scorecard's verdict and
values without a reload (the status_changed event from "metrics" through Redis and the WebSocket); then a second
snapshot replaces the first. No Content-Security-Policy violation on the way."""

import pytest

from apps.metrics.board import shown
from apps.metrics.snapshot import take_snapshot
from tests.e2e.helpers import chrome, log_in_live

# Runs in every document before the page's own scripts (as in test_csp_browser.py).
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) =>
    window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline")));
"""
PAGE = "/admin/metrics/scorecard/page/"


def board_shows(browser, scorecard) -> bool:
    from selenium.webdriver.common.by import By

    board = browser.find_element(By.ID, "vx11-scorecard")
    return board.get_attribute("data-scorecard") == str(scorecard.pk)


@pytest.mark.services
def test_the_page_follows_new_snapshots_without_reload(daphne, admin_user, settings, tmp_path):
    from selenium.webdriver.common.by import By

    settings.VX11_EVIDENCE_ROOT = tmp_path / "evidence"
    browser = chrome()
    try:
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS})
        wait = log_in_live(browser, daphne, PAGE)
        assert "No scorecard has been computed yet." in browser.find_element(By.ID, "vx11-scorecard").text

        first = take_snapshot(actor="browser-test")

        wait.until(lambda b: board_shows(b, first))
        assert browser.find_element(By.ID, "vx11-verdict").text == first.verdict
        cards = browser.find_elements(By.CSS_SELECTOR, ".vx11-metric")
        assert len(cards) == first.metrics.count() > 0
        for metric in first.metrics.all():
            card = browser.find_element(By.CSS_SELECTOR, f'.vx11-metric[data-metric="{metric.name}"]')
            value = card.find_element(By.CSS_SELECTOR, ".vx11-metric-value").text
            assert value == shown(metric.value) + ("" if metric.value is None else "%"), metric.name
            assert card.get_attribute("data-status") == metric.status
            chart = card.find_element(By.CSS_SELECTOR, "svg.vx11-trend")
            assert chart.get_attribute("data-points") == "1"
        assert "updated" in browser.find_element(By.ID, "vx11-scorecard-updated").text

        second = take_snapshot(actor="browser-test")

        wait.until(lambda b: board_shows(b, second))
        charts = browser.find_elements(By.CSS_SELECTOR, "svg.vx11-trend")
        assert {chart.get_attribute("data-points") for chart in charts} == {"2"}  # both snapshots in the trend
        assert browser.execute_script("return window.__not_reloaded === true;")
        assert browser.execute_script("return window.__csp;") == []
    finally:
        browser.quit()
