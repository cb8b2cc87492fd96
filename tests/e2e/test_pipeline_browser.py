"""A pipeline run's admin page in a real headless Chromium on real daphne: opened while the run is queued, it draws
the phase this process then runs (its plan_updated events, through Redis and the WebSocket) without a reload, and
loads itself again for the final state when the run ends. No Content-Security-Policy violation on the way."""

import pytest

from apps.pipeline import runner
from tests.e2e.helpers import chrome, log_in_live

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) =>
    window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline")));
"""


def row_status(browser, number: int) -> str:
    from selenium.webdriver.common.by import By

    row = browser.find_element(By.CSS_SELECTOR, f'#vx11-pipeline-timeline tr.vx11-phase[data-phase="{number}"]')
    return row.get_attribute("data-status")


@pytest.mark.services
def test_the_run_page_follows_its_phases_live(daphne, admin_user, settings, tmp_path):
    from selenium.webdriver.common.by import By

    settings.VX11_EVIDENCE_ROOT = tmp_path / "evidence"
    settings.VX11_MIRROR_REMOTE = ""
    run = runner.start("admin", user=admin_user, phases="6")
    browser = chrome()
    try:
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS})
        wait = log_in_live(browser, daphne, f"/admin/pipeline/pipelinerun/{run.id}/change/")
        assert row_status(browser, 6) == "pending"
        assert row_status(browser, 1) == "skipped"
        assert browser.find_elements(By.CSS_SELECTOR, 'form[data-action="cancel-pipeline"]')
        browser.execute_script("window.__not_reloaded = true;")

        runner.run_phase(run.id, 6)

        wait.until(lambda b: row_status(b, 6) == "ok")
        assert browser.execute_script("return window.__not_reloaded === true;")  # drawn from the event
        row = browser.find_element(By.CSS_SELECTOR, '#vx11-pipeline-timeline tr.vx11-phase[data-phase="6"]')
        assert "scorecard #" in row.text
        assert row.find_elements(By.CSS_SELECTOR, "a[download]")  # the phase's evidence files, linked

        runner.finish_run(run.id)

        wait.until(lambda b: b.execute_script("return window.__not_reloaded !== true;"))  # reloaded at the end
        assert not browser.find_elements(By.CSS_SELECTOR, 'form[data-action="cancel-pipeline"]')  # nothing to cancel
        assert row_status(browser, 6) == "ok"
        assert browser.execute_script("return window.__csp;") == []
    finally:
        browser.quit()
