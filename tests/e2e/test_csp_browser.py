"""Under the portal's Content-Security-Policy, in a real headless Chromium on real daphne: the admin, the
power and operator consoles, the flow upload, a periodic task's form and both API docs render, their
scripts run (live WebSocket indicators, Swagger UI, the crontab helper) and the browser reports no violation;
an inline script slipped into a page is blocked and reported, so the check is not blind."""

import pytest

from tests.e2e.helpers import chrome, log_in_live

# Runs in every document before the page's own scripts; DevTools' scripts are not subject to the page's CSP.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) =>
    window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline")));
"""
LIVE = 'return document.getElementById("vx11-live").textContent.includes("●");'
# (page, a script that returns true once the page's own scripts have done their work)
PAGES = [
    ("/admin/", LIVE),
    ("/admin/fleet/module/", LIVE),
    ("/admin/power/servicecontrol/console/", LIVE),
    ("/operator/console", 'return document.getElementById("state").textContent.includes("● connected");'),
    ("/admin/flows/flow/load/", 'return document.readyState === "complete";'),
    (
        "/admin/django_celery_beat/periodictask/add/",
        (
            'return document.querySelector(".field-crontab_translation") !== null'
            ' && getComputedStyle(document.querySelector(".field-crontab_translation")).display === "none";'
        ),
    ),
    ("/api/docs", 'return document.querySelectorAll(".swagger-ui .opblock").length > 0;'),
    ("/madre/power/docs", 'return document.querySelectorAll(".swagger-ui .opblock").length > 0;'),
]


@pytest.mark.services
def test_pages_work_under_the_policy_without_violations(daphne, admin_user):
    from selenium.webdriver.support.ui import WebDriverWait

    portal = daphne.replace("ws://", "http://")
    browser = chrome()
    try:
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS})
        log_in_live(browser, daphne, "/admin/")
        violations = {}
        for page, ready in PAGES:
            browser.get(f"{portal}{page}")
            WebDriverWait(browser, 20).until(
                lambda b, ready=ready: b.execute_script(ready), message=f"{page} did not come alive"
            )
            violations[page] = browser.execute_script("return window.__csp;")
        assert violations == {page: [] for page, _ in PAGES}

        # the control: an inline script added to the page is refused, and the refusal is seen
        browser.execute_script(
            'const s = document.createElement("script"); s.textContent = "window.__ran = 1;"; document.body.append(s);'
        )
        WebDriverWait(browser, 5).until(lambda b: b.execute_script("return window.__csp.length > 0;"))
        assert (
            browser.execute_script("return window.__ran === undefined && window.__csp[0];") == "script-src-elem inline"
        )
    finally:
        browser.quit()
