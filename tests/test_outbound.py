"""The outbound guard: the portal is no proxy into the network it sits in.

Refused targets are refused at save time (422, form errors) and, for rows that got past that (an
older row, a policy changed since), at request time by every caller, each with the reason. The
sim fleet on 127.0.0.1 is allowed by default, so most tests deny the loopback range in a settings
override and show that a target which really answers is no longer called.
"""

import asyncio
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import httpx
import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from apps.daughters.models import DaughterTask
from apps.fleet import notify
from apps.fleet.models import Delivery, Module, NotificationChannel, StateChange
from apps.fleet.probe import run_round
from apps.flows.models import Flow
from apps.operator import upstream
from apps.power import backends
from tests.helpers import ROOT
from vx11_site import outbound

METADATA = "http://169.254.169.254/latest/meta-data/"
LOOPBACK_DENIED = ["127.0.0.0/8"]


@pytest.fixture
def deny_loopback(settings):
    settings.VX11_OUTBOUND_DENY = [*settings.VX11_OUTBOUND_DENY, *LOOPBACK_DENIED]


def point(slug: str, url: str) -> Module:
    """Store a base URL behind validation, as an old row or a policy tightened since would have it."""
    Module.objects.filter(slug=slug).update(base_url=url)
    return Module.objects.get(slug=slug)


# -- the policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url,reason",
    [
        (METADATA, "169.254.169.254 is in VX11_OUTBOUND_DENY (169.254.0.0/16)"),
        ("http://[fe80::1]:8080/", "fe80::1 is in VX11_OUTBOUND_DENY (fe80::/10)"),
        ("http://[::ffff:169.254.169.254]/", "is in VX11_OUTBOUND_DENY (169.254.0.0/16)"),
        ("http://8.8.8.8/", "8.8.8.8 is not in VX11_OUTBOUND_ALLOW"),
        ("http://0.0.0.0:5432/", "0.0.0.0 is not in VX11_OUTBOUND_ALLOW"),
        ("ftp://127.0.0.1/", "scheme 'ftp' is not http or https"),
        ("file:///etc/passwd", "scheme 'file' is not http or https"),
    ],
)
def test_refused_urls(url, reason):
    with pytest.raises(outbound.Refused, match=re.escape(reason)):
        outbound.check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://[::1]:8001/",
        "http://10.1.2.3",
        "https://192.168.1.5:443",
        "http://172.20.0.2:8002",
        "http://[fd00::2]:80",
        "http://localhost:8003",
    ],
)
def test_the_fleet_ranges_are_allowed_by_default(url):
    outbound.check_url(url)


def test_a_host_name_is_checked_by_every_address_it_resolves_to(settings):
    settings.VX11_OUTBOUND_DENY = ["127.0.0.0/8"]
    with pytest.raises(
        outbound.Refused, match=r"localhost \(127\.0\.0\.1\) is in VX11_OUTBOUND_DENY \(127\.0\.0\.0/8\)"
    ):
        outbound.check_url("http://localhost:8000/")


def test_deny_wins_over_allow_and_names_work_both_ways(settings):
    settings.VX11_OUTBOUND_ALLOW = ["10.0.0.0/8", "localhost"]
    settings.VX11_OUTBOUND_DENY = ["10.9.0.0/16"]
    outbound.check_url("http://localhost:8000/")  # allowed by name, though loopback is not in ALLOW now
    with pytest.raises(outbound.Refused, match="127.0.0.1 is not in VX11_OUTBOUND_ALLOW"):
        outbound.check_url("http://127.0.0.1:8000/")
    with pytest.raises(outbound.Refused, match=re.escape("10.9.1.1 is in VX11_OUTBOUND_DENY (10.9.0.0/16)")):
        outbound.check_url("http://10.9.1.1/")
    settings.VX11_OUTBOUND_DENY = ["localhost"]
    with pytest.raises(outbound.Refused, match="localhost is in VX11_OUTBOUND_DENY"):
        outbound.check_url("http://localhost:8000/")


def test_a_bad_entry_is_a_configuration_error(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.VX11_OUTBOUND_DENY = ["169.254.0.0/16", "not a host!"]
    with pytest.raises(
        ImproperlyConfigured, match="VX11_OUTBOUND_DENY: 'not a host!' is neither a CIDR nor a host name"
    ):
        outbound.rules()


# -- save time -----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "base_url,needle",
    [
        (METADATA.rstrip("/"), "169.254.169.254 is in VX11_OUTBOUND_DENY"),
        ("http://[fe80::1]:5432", "fe80::1 is in VX11_OUTBOUND_DENY"),
        ("http://8.8.8.8:80", "8.8.8.8 is not in VX11_OUTBOUND_ALLOW"),
    ],
)
def test_the_api_refuses_a_module_the_portal_may_not_call(api, base_url, needle):
    response = api.post(
        "/api/modules", {"slug": "probe-me", "name": "x", "base_url": base_url}, content_type="application/json"
    )
    assert response.status_code == 422
    assert needle in response.json()["detail"]
    assert not Module.objects.filter(slug="probe-me").exists()
    response = api.patch("/api/modules/hermes", {"base_url": base_url}, content_type="application/json")
    assert response.status_code == 422
    assert needle in response.json()["detail"]
    assert Module.objects.get(slug="hermes").base_url != base_url


@pytest.mark.django_db
def test_the_api_refuses_a_name_resolving_into_a_denied_range(api, deny_loopback):
    response = api.post(
        "/api/modules",
        {"slug": "local", "name": "x", "base_url": "http://localhost:5432"},
        content_type="application/json",
    )
    assert response.status_code == 422
    assert "localhost (127.0.0.1) is in VX11_OUTBOUND_DENY (127.0.0.0/8)" in response.json()["detail"]


@pytest.mark.django_db
def test_the_admin_form_refuses_it(admin_user):
    client = Client()
    client.force_login(admin_user)
    form = {
        "slug": "meta",
        "name": "meta",
        "base_url": METADATA.rstrip("/"),
        "health_path": "/health",
        "accepted_statuses": '["ok"]',
        "timeout": "3",
        "down_after": "3",
        "up_after": "2",
        "owned_tables": "[]",
    }
    response = client.post("/admin/fleet/module/add/", form)
    assert response.status_code == 200
    assert "169.254.169.254 is in VX11_OUTBOUND_DENY" in response.content.decode()
    assert not Module.objects.filter(slug="meta").exists()


@pytest.mark.django_db
def test_a_webhook_into_a_denied_range_is_refused(admin_user):
    channel = NotificationChannel(name="meta", kind="webhook", target=METADATA)
    with pytest.raises(ValidationError, match="169.254.169.254 is in VX11_OUTBOUND_DENY"):
        channel.full_clean()
    client = Client()
    client.force_login(admin_user)
    response = client.post(
        "/admin/fleet/notificationchannel/add/",
        {"name": "meta", "kind": "webhook", "target": METADATA, "enabled": "on"},
    )
    assert response.status_code == 200
    assert "169.254.169.254 is in VX11_OUTBOUND_DENY" in response.content.decode()
    assert not NotificationChannel.objects.exists()


# -- request time: every caller ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_probe_of_a_refused_target_fails_with_the_reason(fleet, deny_loopback):
    (result,), _ = run_round([fleet["hermes"]])  # the sim answers on 127.0.0.1: it is not called
    assert result.outcome == "fail"
    assert result.error == "outbound request refused: 127.0.0.1 is in VX11_OUTBOUND_DENY (127.0.0.0/8)"
    (meta,), _ = run_round([point("switch", "http://169.254.169.254")])
    assert meta.error == "outbound request refused: 169.254.169.254 is in VX11_OUTBOUND_DENY (169.254.0.0/16)"


@pytest.mark.django_db
def test_the_probe_command_shows_the_reason(fleet, capsys):
    point("hermes", "http://169.254.169.254")
    call_command("vx11_probe", "hermes", json=True)
    (row,) = json.loads(capsys.readouterr().out)
    assert row["error"] == "outbound request refused: 169.254.169.254 is in VX11_OUTBOUND_DENY (169.254.0.0/16)"


@pytest.mark.django_db
def test_a_probe_of_a_name_resolving_into_a_denied_range_fails(fleet, sim, settings):
    module = point("hermes", sim.base_url("hermes").replace("127.0.0.1", "localhost"))
    (ok,), _ = run_round([module])
    assert ok.outcome == "ok"
    settings.VX11_OUTBOUND_DENY = LOOPBACK_DENIED
    (result,), _ = run_round([module])
    assert result.outcome == "fail"
    assert "localhost (127.0.0.1) is in VX11_OUTBOUND_DENY (127.0.0.0/8)" in result.error


@pytest.mark.django_db(transaction=True)
def test_an_http_daughter_never_reads_a_refused_target(fleet, sim, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.VX11_DAUGHTER_HEARTBEAT_SECONDS = 0.05
    point("hermes", sim.base_url("hermes").replace("127.0.0.1", "localhost"))
    settings.VX11_OUTBOUND_DENY = LOOPBACK_DENIED
    daughter = DaughterTask.spawn("http", {"module": "hermes", "path": "/tools"}, max_retries=0).daughters.get()
    daughter.refresh_from_db()
    assert daughter.status == "failed"
    assert daughter.result is None
    assert "localhost (127.0.0.1) is in VX11_OUTBOUND_DENY (127.0.0.0/8)" in daughter.attempts.get().error


@pytest.mark.django_db
def test_a_flow_step_fails_with_the_reason_and_stores_no_answer(fleet, deny_loopback):
    flow = Flow.save_spec({"name": "D", "steps": [{"module": "hermes", "path": "/tools"}]})
    run = flow.run()
    step = run.steps.get()
    assert run.status == "failed"
    assert step.status == "failed"
    assert step.reason == (
        f"hermes at {fleet['hermes'].base_url}/tools: outbound request refused: "
        "127.0.0.1 is in VX11_OUTBOUND_DENY (127.0.0.0/8)"
    )
    assert step.response_excerpt == ""
    assert step.response_status is None


@pytest.mark.django_db
def test_an_operator_upstream_gives_its_offline_shape_with_the_reason(fleet, settings, deny_loopback):
    body = upstream.hermes_resources()
    assert body["status"] == "offline"
    assert (
        body["error"]
        == "hermes GET /health: outbound request refused: 127.0.0.1 is in VX11_OUTBOUND_DENY (127.0.0.0/8)"
    )


@pytest.mark.django_db
def test_a_webhook_delivery_fails_with_the_reason(deny_loopback):
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    threading.Thread(target=receiver.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        NotificationChannel.objects.create(
            name="hook", kind="webhook", target=f"http://127.0.0.1:{receiver.server_port}/hook"
        )
        StateChange.objects.create(
            module=Module.objects.get(slug="madre"), at=timezone.now(), from_state="up", to_state="down", reason="test"
        )
        notify.sweep()
    finally:
        receiver.shutdown()
        receiver.server_close()
    delivery = Delivery.objects.get()
    assert delivery.status == "pending"
    assert delivery.attempts == 1
    assert delivery.last_error == "outbound request refused: 127.0.0.1 is in VX11_OUTBOUND_DENY (127.0.0.0/8)"


@pytest.mark.django_db
def test_the_power_managers_health_wait_does_not_call_a_refused_target(fleet, settings):
    url = fleet["hermes"].health_url
    assert backends.health_answers(url)
    settings.VX11_OUTBOUND_DENY = LOOPBACK_DENIED
    assert not backends.health_answers(url)


# -- redirects and DNS rebinding -----------------------------------------------------------------


class Server:
    """An HTTP server on `host`: /secret answers "secret", anything else redirects to `location`."""

    def __init__(self, host: str, location: str = ""):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/secret":
                    self.send_response(200)
                    self.send_header("Content-Length", "6")
                    self.end_headers()
                    self.wfile.write(b"secret")
                    return
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def redirect_into_denied(settings):
    """A URL on 127.0.0.1 that redirects to a server on 127.0.0.2, which the policy denies."""
    settings.VX11_OUTBOUND_DENY = ["127.0.0.2/32"]
    inner = Server("127.0.0.2")
    outer = Server("127.0.0.1", location=inner.url + "/secret")
    yield outer.url + "/start"
    outer.close()
    inner.close()


def test_a_redirect_into_a_denied_range_is_refused_by_httpx(redirect_into_denied):
    start = redirect_into_denied
    assert httpx.get(start, follow_redirects=True).text == "secret"  # what an unguarded client would fetch
    with outbound.client() as client:
        assert client.get(start).status_code == 302  # not followed by default
        with pytest.raises(httpx.ConnectError, match=re.escape("127.0.0.2 is in VX11_OUTBOUND_DENY (127.0.0.2/32)")):
            client.get(start, follow_redirects=True)


def test_a_redirect_into_a_denied_range_is_refused_by_aiohttp(redirect_into_denied):
    async def fetch():
        async with outbound.aiohttp_session() as session, session.get(redirect_into_denied) as response:
            return await response.text()

    with pytest.raises(aiohttp.ClientConnectorError) as refused:
        asyncio.run(fetch())
    assert outbound.why(refused.value) == "outbound request refused: 127.0.0.2 is in VX11_OUTBOUND_DENY (127.0.0.2/32)"


@pytest.fixture
def rebinding_name(monkeypatch):
    """`rebind.test` resolves to 127.0.0.1 the first time, to the metadata address after (a DNS rebinding attack)."""
    real = socket.getaddrinfo
    answers = ["127.0.0.1"]

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        address = answers.pop() if answers else "169.254.169.254"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return "rebind.test"


def test_httpx_connects_to_the_address_it_checked(rebinding_name):
    server = Server("127.0.0.1")
    try:
        with outbound.client(timeout=2) as client:
            assert client.get(f"http://{rebinding_name}:{server.server.server_port}/secret").text == "secret"
        with (
            outbound.client(timeout=2) as client,
            pytest.raises(
                httpx.ConnectError, match=re.escape("rebind.test (169.254.169.254) is in VX11_OUTBOUND_DENY")
            ),
        ):
            client.get(f"http://{rebinding_name}:{server.server.server_port}/secret")  # the next lookup: refused
    finally:
        server.close()


def test_aiohttp_connects_to_the_address_it_checked(rebinding_name):
    server = Server("127.0.0.1")

    async def fetch():
        url = f"http://{rebinding_name}:{server.server.server_port}/secret"
        async with outbound.aiohttp_session() as session, session.get(url) as response:
            return await response.text()

    try:
        assert asyncio.run(fetch()) == "secret"
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            asyncio.run(fetch())
        assert "rebind.test (169.254.169.254) is in VX11_OUTBOUND_DENY" in outbound.why(refused.value)
    finally:
        server.close()


# -- no call site can forget ---------------------------------------------------------------------

UNGUARDED = re.compile(
    r"\bhttpx\.(get|post|put|patch|delete|head|options|request|stream|Client|AsyncClient)\(|"
    r"\baiohttp\.(ClientSession|TCPConnector)\(|\burllib\.request\b|\burlopen\(|\brequests\."
)


def test_every_outbound_request_of_the_portal_goes_through_the_guard():
    """Only vx11_site/outbound.py builds HTTP clients; the simulator (the demo fleet itself) is not the portal."""
    offenders = []
    for path in [*ROOT.joinpath("apps").rglob("*.py"), *ROOT.joinpath("vx11_site").rglob("*.py")]:
        relative = path.relative_to(ROOT).as_posix()
        if relative == "vx11_site/outbound.py" or relative.startswith("apps/simfleet/"):
            continue
        offenders += [
            f"{relative}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1) if UNGUARDED.search(line)
        ]
    assert offenders == []
