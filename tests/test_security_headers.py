"""Headers and settings for a deployment: every page carries a Content-Security-Policy that allows scripts
only from the portal's own files, and no page needs more (no inline script, no on*= handler); behind TLS,
Secure cookies, HSTS and the https redirect make `manage.py check --deploy` clean; "testserver" is not a
host the portal serves."""

import os
import secrets
import subprocess
import sys
from html.parser import HTMLParser

from django.test import Client
from django.urls import reverse

from tests.helpers import ROOT, admin_pages, docs_urls

DATA_BLOCKS = {"application/json", "application/ld+json"}  # never executed, so CSP does not apply


class InlineCode(HTMLParser):
    """What a script-src without 'unsafe-inline' would block: inline scripts, on*= handlers, javascript: URLs."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._inline_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self._inline_script = tag == "script" and "src" not in attributes and attributes.get("type") not in DATA_BLOCKS
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value!r}>")

    def handle_data(self, data):
        if self._inline_script and data.strip():
            self.found.append(f"<script>{data.strip()[:60]}...")

    def handle_endtag(self, tag):
        self._inline_script = False


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.found


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in header.split(";")) if d}


def test_every_page_has_the_policy_and_needs_nothing_it_forbids(superuser_client, admin_user, sample_rows):
    pages = admin_pages(admin_user) + [reverse("operator:operator-console"), *docs_urls()]
    assert reverse("admin:power_console") in pages
    assert reverse("admin:flows_flow_load") in pages
    assert "/api/docs" in pages
    fetched = {reverse("admin:login"): Client().get(reverse("admin:login"))}
    fetched.update((page, superuser_client.get(page)) for page in pages)
    problems = []
    for page, response in fetched.items():
        assert response.status_code == 200, f"{page}: {response.status_code}"
        csp = policy(response)
        assert csp["script-src"] == ["'self'"], page
        assert csp["object-src"] == ["'none'"], page
        assert csp["frame-ancestors"] == ["'none'"], page
        problems += [f"{page}: {found}" for found in inline_code(response.content.decode())]
    assert not problems, "code a strict script-src blocks:\n" + "\n".join(problems)


def test_json_answers_carry_the_policy_too(client):
    r = client.get("/api/modules")
    assert r.status_code == 401
    assert policy(r)["default-src"] == ["'self'"]


def settings_process(env: dict, code: str = "", *args: str) -> subprocess.CompletedProcess:
    """manage.py (or a snippet) in a fresh interpreter: settings are read from the environment at start-up."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VX11_", "ALLOWED_HOSTS", "SECRET_KEY", "DEBUG"))}
    command = (
        [sys.executable, "-c", f"import django; django.setup(); {code}"]
        if code
        else [sys.executable, "manage.py", *args]
    )
    return subprocess.run(
        command,
        check=False,
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "vx11_site.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


BEHIND_TLS = {
    "VX11_SECURE_COOKIES": "1",
    "VX11_HSTS_SECONDS": "31536000",
    "VX11_HSTS_PRELOAD": "1",
    "VX11_SSL_REDIRECT": "1",
    "VX11_PROXY_SSL_HEADER": "1",
}


def test_deploy_check_is_clean_behind_tls(tmp_path):
    env = {"VX11_VAR_DIR": str(tmp_path), "SECRET_KEY": secrets.token_urlsafe(50)}
    plain = settings_process(env, "", "check", "--deploy", "--fail-level", "WARNING")
    assert plain.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):  # what the variables answer
        assert warning in plain.stderr, plain.stderr
    behind_tls = settings_process({**env, **BEHIND_TLS}, "", "check", "--deploy", "--fail-level", "WARNING")
    assert behind_tls.returncode == 0, behind_tls.stderr
    assert "System check identified no issues" in behind_tls.stdout


def test_security_settings_come_from_the_environment(tmp_path):
    show = (
        "from django.conf import settings as s; print(s.ALLOWED_HOSTS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_HSTS_SECONDS, s.SECURE_SSL_REDIRECT, s.SECURE_PROXY_SSL_HEADER)"
    )
    default = settings_process({"VX11_VAR_DIR": str(tmp_path)}, show)
    assert default.stdout.strip() == "['127.0.0.1', 'localhost'] False False 0 False None", default.stderr
    on = settings_process({"VX11_VAR_DIR": str(tmp_path), **BEHIND_TLS}, show)
    assert (
        on.stdout.strip() == "['127.0.0.1', 'localhost'] True True 31536000 True ('HTTP_X_FORWARDED_PROTO', 'https')"
    ), on.stderr


def test_behind_the_proxy_a_forwarded_https_request_is_secure(client, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    plain = client.get("/admin/login/")
    assert plain.status_code == 301
    assert plain["Location"] == "https://testserver/admin/login/"
    assert client.get("/health").status_code != 301  # a load balancer's plain-http health check still answers
    forwarded = client.get("/admin/login/", headers={"X-Forwarded-Proto": "https"})
    assert forwarded.status_code == 200
    assert forwarded["Strict-Transport-Security"] == "max-age=3600; includeSubDomains"
    assert forwarded.cookies["csrftoken"]["secure"] is True
