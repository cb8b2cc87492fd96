"""The simulated fleet against real HTTP clients: contracts, modes, control server, the vx11_sim command.

`sim` (tests/conftest.py) is one SimFleet on ephemeral ports, reset to "ok" after each test.
"""

import asyncio
import io
import json
import socket
import threading
import time
from datetime import datetime

import aiohttp
import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.simfleet.management.commands.vx11_sim import Command as Vx11SimCommand
from apps.simfleet.sim import MISBEHAVIOURS, PORTS, SimFleet
from tests.helpers import free_port

T = 2.0  # client timeout for calls that should answer at once

EXPECTED_HEALTH = {
    "tentaculo_link": {"status": "ok", "module": "tentaculo_link", "version": "7.0"},
    "switch": {
        "status": "ok",
        "module": "switch",
        "active_model": "general-7b",
        "warm_model": "deepseek-r1-7b",
        "queue_size": 0,
    },
    "hermes": {"status": "ok", "module": "hermes", "version": "minimal"},
    "hormiguero": {"status": "ok", "service": "hormiguero", "version": "v7"},
    "manifestator": {"status": "healthy", "service": "manifestator"},
    "mcp": {"status": "ok"},
    "shub": {"status": "ok", "module": "shubniggurath", "version": "7.0-FASE1"},
    "spawner": {"status": "ok", "service": "spawner", "version": "v7.0"},
    "operator": {"status": "ok", "module": "operator", "version": "7.0"},
}


def health(sim, slug, timeout=T):
    return httpx.get(sim.base_url(slug) + "/health", timeout=timeout)


def control_post(sim, slug, **kwargs):
    return httpx.post(f"{sim.control_url}/_sim/{slug}", timeout=T, **kwargs)


def refused(port):
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# -- contracts ---------------------------------------------------------------------------------


def test_ten_modules_on_distinct_ports(sim):
    assert set(sim.ports) == set(PORTS)
    assert len(set(sim.ports.values())) == 10
    assert sim.base_url("madre") == f"http://127.0.0.1:{sim.ports['madre']}"


@pytest.mark.parametrize("slug", sorted(EXPECTED_HEALTH))
def test_health_has_the_real_shape(sim, slug):
    response = health(sim, slug)
    assert response.status_code == 200
    assert response.headers["X-VX11-Simulated"] == "1"
    assert response.json() == EXPECTED_HEALTH[slug]


def test_madre_health_reports_its_deps_from_sibling_modes(sim):
    body = health(sim, "madre").json()
    assert list(body) == ["module", "status", "version", "time", "deps"]
    assert (body["module"], body["status"], body["version"]) == ("madre", "ok", "7.0")
    assert datetime.fromisoformat(body["time"]).utcoffset().total_seconds() == 0
    assert body["deps"] == {"switch": "up", "hormiguero": "up", "spawner": "up"}

    sim.set_mode("switch", "error")
    sim.set_mode("spawner", "down")
    sim.set_mode("hormiguero", "slow", delay=0.1)
    assert health(sim, "madre").json()["deps"] == {"switch": "down", "hormiguero": "up", "spawner": "down"}


def test_shub_is_initializing_during_warmup(monkeypatch):
    """The end of warm-up is judged at a time given to warming_up(), never by waiting: a warm-up longer than any
    slow start keeps the first answer "initializing" on a loaded machine."""
    with SimFleet(ephemeral=True, shub_warmup=60) as fleet:
        assert health(fleet, "shub").json() == {
            "status": "initializing",
            "module": "shubniggurath",
            "version": "7.0-FASE1",
        }
        warming_up = fleet.warming_up
        # the handler asks as if a minute had passed
        monkeypatch.setattr(fleet, "warming_up", lambda: warming_up(now=time.monotonic() + 60))
        assert health(fleet, "shub").json() == EXPECTED_HEALTH["shub"]


def test_hermes_tools(sim):
    body = httpx.get(sim.base_url("hermes") + "/tools", timeout=T).json()
    assert {"name": "deepseek_r1", "available": True, "version": "1.0"} in body["cli_tools"]
    assert body["local_models"]
    assert all(set(m) == {"name", "size", "loaded"} and isinstance(m["loaded"], bool) for m in body["local_models"])


def test_shub_metrics_answers_only_the_included_keys(sim):
    url = sim.base_url("shub") + "/metrics"
    full = httpx.post(url, json={"include": ["sessions", "resources", "queue"]}, timeout=T).json()
    assert set(full) == {"active_sessions", "projects", "resources", "queue"}
    assert isinstance(full["active_sessions"], int)
    assert all(set(p) == {"id", "name"} for p in full["projects"])
    assert isinstance(full["resources"]["cpu_percent"], float)
    assert isinstance(full["resources"]["memory_mb"], float)
    assert isinstance(full["queue"]["pending"], int)
    assert set(httpx.post(url, json={"include": ["queue"]}, timeout=T).json()) == {"queue"}


@pytest.mark.parametrize(
    "content", [b"not json", b'{"include": "sessions"}', b'{"include": ["sessions", "weather"]}', b"[1]", b"{}"]
)
def test_shub_metrics_rejects_a_bad_body(sim, content):
    response = httpx.post(sim.base_url("shub") + "/metrics", content=content, timeout=T)
    assert response.status_code == 400
    assert "detail" in response.json()


def test_unknown_path_is_a_json_404(sim):
    response = httpx.get(sim.base_url("mcp") + "/nope", timeout=T)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


# -- modes -------------------------------------------------------------------------------------


def test_slow_adds_the_delay(sim):
    sim.set_mode("switch", "slow", delay=0.3)
    started = time.monotonic()
    response = health(sim, "switch")
    assert time.monotonic() - started >= 0.3
    assert response.json() == EXPECTED_HEALTH["switch"]
    assert sim.get_modes()["switch"] == {"mode": "slow", "delay": 0.3}
    sim.set_mode("switch", "slow")
    assert sim.get_modes()["switch"]["delay"] == 1.0


def test_hang_times_out_the_client(sim):
    sim.set_mode("hermes", "hang")
    with pytest.raises(httpx.ReadTimeout):
        health(sim, "hermes", timeout=0.3)

    async def aiohttp_probe():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as session:
            await session.get(sim.base_url("hermes") + "/tools")

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(aiohttp_probe())


def test_error_is_a_json_500_on_every_endpoint(sim):
    sim.set_mode("hermes", "error")
    for path in ("/health", "/tools"):
        response = httpx.get(sim.base_url("hermes") + path, timeout=T)
        assert response.status_code == 500
        assert "detail" in response.json()
        assert response.headers["X-VX11-Simulated"] == "1"


def test_garbage_is_200_but_not_json(sim):
    sim.set_mode("mcp", "garbage")
    response = health(sim, "mcp")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_wrong_status_keeps_the_shape(sim):
    sim.set_mode("manifestator", "wrong_status")
    assert health(sim, "manifestator").json() == {"status": "broken", "service": "manifestator"}


def test_down_refuses_connections_then_comes_back_on_the_same_port(sim):
    port = sim.ports["spawner"]
    with httpx.Client(timeout=T) as client:  # a kept-alive connection must not survive "down" either
        assert client.get(sim.base_url("spawner") + "/health").status_code == 200
        sim.set_mode("spawner", "down")
        assert refused(port)
        with pytest.raises(httpx.ConnectError):
            client.get(sim.base_url("spawner") + "/health")
    sim.set_mode("spawner", "ok")
    assert sim.ports["spawner"] == port
    assert health(sim, "spawner").json() == EXPECTED_HEALTH["spawner"]


def test_set_mode_rejects_nonsense(sim):
    with pytest.raises(ValueError, match="unknown module"):
        sim.set_mode("nope", "ok")
    with pytest.raises(ValueError, match="unknown mode"):
        sim.set_mode("madre", "sleepy")
    with pytest.raises(ValueError, match="delay"):
        sim.set_mode("madre", "slow", delay=-1)
    assert sim.get_modes()["madre"] == {"mode": "ok", "delay": None}


# -- control server ----------------------------------------------------------------------------


def test_control_lists_the_fleet(sim):
    body = httpx.get(sim.control_url + "/_sim", timeout=T).json()
    assert body["simulator"] is True
    assert body["modules"]["madre"] == {"port": sim.ports["madre"], "mode": "ok", "delay": None}


def test_control_sets_a_mode(sim):
    response = control_post(sim, "operator", json={"mode": "slow", "delay": 0.2})
    assert response.status_code == 200
    assert response.json() == {"module": "operator", "port": sim.ports["operator"], "mode": "slow", "delay": 0.2}
    assert sim.get_modes()["operator"]["mode"] == "slow"

    assert control_post(sim, "operator", json={"mode": "down"}).status_code == 200
    assert refused(sim.ports["operator"])
    assert control_post(sim, "operator", json={"mode": "ok"}).status_code == 200
    assert health(sim, "operator").status_code == 200


def test_control_is_never_affected_by_modes(sim):
    for slug in PORTS:
        sim.set_mode(slug, "hang")
    assert httpx.get(sim.control_url + "/_sim", timeout=T).status_code == 200


@pytest.mark.parametrize(
    "slug, content, status",
    [
        ("nope", b'{"mode": "ok"}', 404),
        ("madre", b"not json", 400),
        ("madre", b'["ok"]', 400),
        ("madre", b'{"mode": "sleepy"}', 400),
        ("madre", b"{}", 400),
        ("madre", b'{"mode": "slow", "delay": -1}', 400),
        ("madre", b'{"mode": "slow", "delay": "soon"}', 400),
    ],
)
def test_control_rejects_bad_input(sim, slug, content, status):
    response = control_post(sim, slug, content=content)
    assert response.status_code == status
    assert response.json()["detail"]
    assert sim.get_modes()["madre"]["mode"] == "ok"


# -- life cycle --------------------------------------------------------------------------------


def test_stop_releases_every_port_quickly_even_with_a_hanging_request(monkeypatch):
    fleet = SimFleet(ephemeral=True).start()
    fleet.set_mode("madre", "hang")
    fleet.set_mode("mcp", "down")
    # madre's handler reads its mode first: once it has, the request is in the handler and hangs there
    handling = threading.Event()
    mode_of = fleet.mode_of

    def watched_mode_of(slug):
        if slug == "madre":
            handling.set()
        return mode_of(slug)

    monkeypatch.setattr(fleet, "mode_of", watched_mode_of)
    in_flight = threading.Thread(target=lambda: pytest.raises(httpx.HTTPError, health, fleet, "madre", 10), daemon=True)
    in_flight.start()
    assert handling.wait(10), "the request to madre never reached its handler"
    started = time.monotonic()
    fleet.stop()
    assert time.monotonic() - started < 2
    for port in [*fleet.ports.values(), fleet.control_port]:
        assert refused(port)
        with socket.socket() as sock:  # free again for a new server (which, like ours, sets SO_REUSEADDR)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
    in_flight.join(2)


def test_a_taken_port_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        fleet = SimFleet(ephemeral=True, control_port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="control server cannot listen"):
            fleet.start()
    with SimFleet(ephemeral=True) as again:  # nothing leaked: the same object kind starts fine
        assert health(again, "mcp").status_code == 200


# -- the vx11_sim command ----------------------------------------------------------------------


def vx11_sim(*args, **options):
    out = io.StringIO()
    call_command(Vx11SimCommand(), *args, stdout=out, **options)
    return out.getvalue()


def test_command_sets_a_mode(sim):
    out = vx11_sim("switch", "slow", delay=0.2, control_url=sim.control_url)
    assert "switch" in out
    assert "slow" in out
    assert sim.get_modes()["switch"] == {"mode": "slow", "delay": 0.2}
    assert "switch" in vx11_sim(control_url=sim.control_url)


def test_command_lists_modes():
    out = vx11_sim(list=True)
    assert all(mode in out for mode in MISBEHAVIOURS)


def test_command_errors_are_one_line():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{free.getsockname()[1]}"
    with pytest.raises(CommandError, match="no simulated fleet"):
        vx11_sim("madre", "hang", control_url=nobody)
    with pytest.raises(CommandError, match="unknown module"):
        vx11_sim("nope", "hang", control_url=nobody)
    with pytest.raises(CommandError, match="unknown or missing mode"):
        vx11_sim("madre", "sleepy", control_url=nobody)


def test_an_excluded_module_is_left_to_its_own_process():
    """The demo's power modules: the simulator leaves their ports free and refuses to set their modes."""
    for _ in range(
        50
    ):  # fixed ports (an excluded module's process must know its own): find an offset where all are free
        offset = free_port() - PORTS["mcp"]  # mcp's port is free; the others follow it by their reference distances
        if not all(1024 < port + offset < 65535 for port in PORTS.values()):
            continue
        try:
            fleet = SimFleet(port_offset=offset, control_port=0, exclude=["mcp"]).start()
            break
        except RuntimeError:  # one of the other ports is taken on this machine: another offset
            continue
    else:
        pytest.fail("no offset with ten free ports in 50 tries")
    try:
        assert "mcp" not in fleet.ports
        assert fleet.base_url("mcp") == f"http://127.0.0.1:{PORTS['mcp'] + offset}"
        with socket.socket() as s:
            s.bind(("127.0.0.1", PORTS["mcp"] + offset))  # free for serve_one
        assert httpx.get(fleet.base_url("madre") + "/health", timeout=T).status_code == 200
        with pytest.raises(ValueError, match="its own process under the power manager"):
            fleet.set_mode("mcp", "down")
        assert fleet.describe()["modules"]["mcp"]["mode"] == "own process (power manager)"
        answer = httpx.post(f"{fleet.control_url}/_sim/mcp", json={"mode": "down"}, timeout=T)
        assert answer.status_code == 400
        assert "power manager" in answer.json()["detail"]
    finally:
        fleet.stop()
    with pytest.raises(ValueError, match="unknown module"):
        SimFleet(exclude=["nope"])
    with pytest.raises(ValueError, match="fixed ports"):
        SimFleet(ephemeral=True, exclude=["mcp"])
