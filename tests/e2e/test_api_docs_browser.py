"""The API docs render in a real headless Chromium that can reach no other host: Swagger UI, its
styles and the schema all come from the portal (real daphne, whitenoise)."""

from urllib.parse import urlsplit

import pytest

from tests.e2e.helpers import chrome, requested_urls

# Every host name but the portal's fails to resolve: the browser is as offline as the portal's machine,
# also where CI has internet (a CDN would answer there and hide the bug).
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
RENDERED = """
const title = document.querySelector(".swagger-ui .info .title");
return typeof window.SwaggerUIBundle === "function" && title !== null
    && document.querySelectorAll(".swagger-ui .opblock").length > 0 ? title.textContent : null;
"""


DOCS = [("/api/docs", "VX11 Ops Portal API"), ("/madre/power/docs", "VX11 madre power manager")]


@pytest.mark.services
@pytest.mark.parametrize("docs, title", DOCS)
def test_api_docs_render_without_internet(daphne, docs, title):
    from selenium.webdriver.support.ui import WebDriverWait

    portal = daphne.replace("ws://", "http://")
    browser = chrome(OFFLINE, network_log=True)
    try:
        browser.get(f"{portal}{docs}")
        # polls until Swagger UI has drawn the schema's title and operations
        shown = WebDriverWait(browser, 20).until(lambda b: b.execute_script(RENDERED))
        assert shown.startswith(title)
        requested = requested_urls(browser)
        portal_host = urlsplit(portal).netloc
        elsewhere = [
            url
            for url in requested
            if urlsplit(url).scheme in ("http", "https", "ws", "wss") and urlsplit(url).netloc != portal_host
        ]
        assert not elsewhere, f"requests that left the portal: {elsewhere}"
        assert any(url.endswith("/swagger-ui-bundle.js") for url in requested), requested
        assert any(url.endswith("/openapi.json") for url in requested), requested
    finally:
        browser.quit()
