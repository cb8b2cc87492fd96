"""The portal works with no internet: no page loads anything from another host.

A superuser fetches every page (the admin's index, login, app and password pages, each model's list, add,
change, history and delete page, the admin's own views, the operator console and every API's docs) and
every src= and href= must stay on the portal's host; the docs' scripts and styles are served by the
portal itself. Also: `/` leads to the admin (its "View site" link) and /favicon.ico is a real icon.
"""

import re
import struct
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import resolve, reverse

from tests.helpers import admin_pages, docs_urls, ninja_namespaces

HOST = "testserver"  # the test client's host: the portal's own
# a CSS url(...) or @import with an authority (http://host, //host) is a load from that host
CSS_URL = re.compile(r"""(?:url\(\s*|@import\s+)["']?((?:[a-z][a-z0-9+.-]*:)?//[^"')\s]+)""", re.IGNORECASE)


class Links(HTMLParser):
    """Every src= and href= of a page (srcset too), the <link>s by rel, the anchors' text, and the inline
    CSS (<style> and style=)."""

    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, url)
        self.links: list[tuple[str, str]] = []  # <link>: (rel, href)
        self.anchors: list[tuple[str, str]] = []  # (href, text)
        self.styles: list[str] = []
        self._anchor: list | None = None
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name in ("src", "href"):
                self.urls.append((tag, name, value.strip()))
            elif name == "srcset":
                self.urls.extend((tag, name, item.split()[0]) for item in value.split(",") if item.strip())
            elif name == "style":
                self.styles.append(value)
        if tag == "link":
            self.links.append((dict(attrs).get("rel") or "", dict(attrs).get("href") or ""))
        if tag == "a":
            self._anchor = [dict(attrs).get("href"), ""]
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "a" and self._anchor is not None:
            self.anchors.append((self._anchor[0], self._anchor[1].strip()))
            self._anchor = None
        self._in_style = False

    def handle_data(self, data):
        if self._anchor is not None:
            self._anchor[1] += data
        if self._in_style:
            self.styles.append(data)

    def scripts(self) -> list[str]:
        return [url for tag, attribute, url in self.urls if tag == "script" and attribute == "src"]

    def linked(self, rel: str) -> list[str]:
        return [href for rels, href in self.links if rel in rels.lower().split()]


def parse(html: str) -> Links:
    links = Links()
    links.feed(html)
    links.close()
    return links


def foreign(url: str) -> bool:
    """A URL with an authority (http://host/..., //host/...) that is not the portal's; relative
    paths, data:, javascript: and mailto: name no host."""
    netloc = urlsplit(url).netloc
    return bool(netloc) and netloc.lower() != HOST


def body(response) -> bytes:
    # static files come back streamed (whitenoise, FileResponse)
    return b"".join(response.streaming_content) if response.streaming else response.content


def foreign_urls(page: str, html: str) -> list[str]:
    links = parse(html)
    found = [f"{page}: <{tag} {attribute}={url!r}>" for tag, attribute, url in links.urls if foreign(url)]
    found += [f"{page}: CSS {url!r}" for style in links.styles for url in CSS_URL.findall(style) if foreign(url)]
    return found


def test_no_page_loads_anything_from_another_host(superuser_client, admin_user, sample_rows):
    pages = admin_pages(admin_user) + [reverse("operator:operator-console"), *docs_urls()]
    # guard against a crawl that silently shrank: the admin's own views and change pages are in it
    for expected in (
        reverse("admin:power_console"),
        reverse("admin:flows_flow_load"),
        reverse("admin:fleet_module_change", args=[sample_rows[0].pk]),
        reverse("admin:metrics_scorecard_page"),
    ):
        assert expected in pages
    problems, missing_icon = [], []
    fetched = {reverse("admin:login"): Client().get(reverse("admin:login"))}
    fetched.update((page, superuser_client.get(page)) for page in pages)
    fetched[reverse("admin:password_change_done")] = superuser_client.get(reverse("admin:password_change_done"))
    fetched[reverse("admin:logout")] = superuser_client.post(reverse("admin:logout"))  # last: it ends the session
    for page, response in fetched.items():
        assert response.status_code == 200, f"{page}: {response.status_code}"
        assert response["Content-Type"].startswith("text/html"), f"{page}: {response['Content-Type']}"
        html = response.content.decode()
        problems += foreign_urls(page, html)
        if page.startswith(("/admin/", "/operator/")) and not parse(html).linked("icon"):
            missing_icon.append(page)
    assert not problems, "assets from outside the portal:\n" + "\n".join(problems)
    assert not missing_icon, f"admin pages without the portal's icon: {missing_icon}"


@pytest.mark.parametrize("namespace", ninja_namespaces())
def test_api_docs_assets_are_served_by_the_portal(client, namespace):
    response = client.get(reverse(f"{namespace}:openapi-view"))
    assert response.status_code == 200
    links = parse(response.content.decode())
    assets = {"javascript": links.scripts(), "text/css": links.linked("stylesheet"), "image/": links.linked("icon")}
    assert any(src.endswith("swagger-ui-bundle.js") for src in assets["javascript"]), assets
    assert any(href.endswith("swagger-ui.css") for href in assets["text/css"]), assets
    for content_type, urls in assets.items():
        for url in urls:
            assert not foreign(url), url
            asset = client.get(url)
            assert asset.status_code == 200, f"{url}: {asset.status_code}"
            assert content_type in asset["Content-Type"], f"{url}: {asset['Content-Type']}"
            content = body(asset)
            assert content, url
            if content_type == "text/css":
                # a stylesheet's own url(...) and @import would be loads too
                assert not [u for u in CSS_URL.findall(content.decode()) if foreign(u)], url
    # the schema the page renders comes from the portal too
    assert client.get(reverse(f"{namespace}:openapi-json")).status_code == 200


def test_root_redirects_to_the_admin_and_view_site_links_there(client, superuser_client):
    response = client.get("/")
    assert response.status_code == 302  # temporary: a later home page must not be hidden by a cached 301
    assert response["Location"] == reverse("admin:index")
    assert client.get("/", follow=True).redirect_chain[-1][0].startswith(reverse("admin:login"))
    assert superuser_client.get("/", follow=True).status_code == 200

    index = superuser_client.get(reverse("admin:index"))
    view_site = [href for href, text in parse(index.content.decode()).anchors if text == "View site"]
    assert view_site == ["/"]
    # the other routes, the operator's mounted at "" too, are still theirs
    assert resolve("/operator/console").view_name == "operator:operator-console"
    assert resolve("/operator/vx11/overview").view_name == "operator:vx11-overview"
    assert resolve("/health").url_name == "portal-health"
    assert superuser_client.get("/operator/console").status_code == 200


def test_favicon_is_a_real_icon(client, superuser_client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("image/")
    icon = body(response)
    reserved, kind, count = struct.unpack("<HHH", icon[:6])
    assert (reserved, kind, count) == (0, 1, 1)  # an ICO file with one image
    width, height, _, _, _, _, size, offset = struct.unpack("<BBBBHHII", icon[6:22])
    assert (width, height) == (32, 32)
    image = icon[offset : offset + size]
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", image[16:24]) == (32, 32)
    assert client.head("/favicon.ico").status_code == 200

    # the admin pages link the same icon, as a static file the portal serves
    linked = parse(superuser_client.get(reverse("admin:index")).content.decode()).linked("icon")
    assert len(linked) == 1
    assert body(client.get(linked[0])) == icon
