"""WS /ws/{session_id} through channels' communicator: auth, connected message, events, replay, limits."""

import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from apps.events.models import Event, publish
from tests.helpers import TOKEN
from vx11_site.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def run(fn):
    return override_settings(VX11_TOKEN=TOKEN)(async_to_sync(fn))()


def connect(path=f"/ws/s1?token={TOKEN}", headers=None):
    return WebsocketCommunicator(application, path, headers=headers or [])


async def receive(comm):
    return json.loads(await comm.receive_from(timeout=3))


async def open_session(path=f"/ws/s1?token={TOKEN}", headers=None):
    comm = connect(path, headers)
    connected, _ = await comm.connect()
    assert connected
    hello = await receive(comm)
    assert hello["channel"] == "control"
    assert hello["type"] == "connected"
    assert hello["client_id"]
    return comm


async def refused(comm) -> tuple[dict, dict]:
    """The control message that says why, then the close frame."""
    notice = await receive(comm)
    closed = await comm.receive_output(timeout=3)
    assert notice["channel"] == "control"
    assert notice["type"] == "closing"
    assert closed["type"] == "websocket.close"
    assert notice["code"] == closed["code"]
    return notice, closed


@pytest.mark.parametrize(
    "path, code, reason", [("/ws/s1", 4401, "auth_required"), ("/ws/s1?token=wrong", 4403, "forbidden")]
)
def test_missing_or_wrong_token_is_refused_with_a_reason(path, code, reason):
    async def body():
        comm = connect(path)
        await comm.connect()
        notice, closed = await refused(comm)
        assert notice["error"] == reason
        assert closed["code"] == code
        assert closed["reason"].startswith(reason)

    run(body)


def test_token_in_header_and_api_key_are_accepted(operator_key):
    async def body():
        comm = await open_session("/ws/s1", headers=[(b"x-vx11-token", TOKEN.encode())])
        await comm.disconnect()
        comm = await open_session(f"/ws/s1?token={operator_key}")
        await comm.disconnect()

    run(body)


def test_valid_event_is_echoed_in_the_envelope_and_stored():
    async def body():
        comm = await open_session()
        await comm.send_to(text_data=json.dumps({"event_type": "plan_updated", "data": {"plan_id": "p1"}}))
        env = await receive(comm)
        assert env["type"] == "plan_updated"
        assert env["session_id"] == "s1"
        assert env["data"]["plan_id"] == "p1"
        assert env["timestamp"].endswith("Z")
        assert set(env) >= {"type", "session_id", "timestamp", "data"}
        await comm.disconnect()

    run(body)
    assert Event.objects.get().type == "plan_updated"


def test_plain_text_unknown_type_and_bad_json():
    async def body():
        comm = await open_session()
        await comm.send_to(text_data="hello madre")
        env = await receive(comm)
        assert (env["type"], env["data"]["message"]) == ("message_received", "hello madre")

        await comm.send_to(text_data=json.dumps({"event_type": "teleport", "data": {"x": 1}}))
        env = await receive(comm)
        assert env["type"] == "status_changed"
        assert "teleport" in env["data"]["note"]
        assert env["data"]["x"] == 1

        await comm.send_to(text_data="{not json")
        env = await receive(comm)
        assert env["type"] == "error_reported"
        assert env["data"]["error"] == "invalid_json"
        assert env["data"]["raw"] == "{not json"
        await comm.disconnect()

    run(body)
    assert Event.objects.count() == 2  # the error went to this client only


def test_events_reach_their_session_and_broadcasts_reach_everyone():
    async def body():
        a = await open_session("/ws/alpha?token=" + TOKEN)
        b = await open_session("/ws/beta?token=" + TOKEN)
        await a.send_to(text_data="only alpha")
        assert (await receive(a))["data"]["message"] == "only alpha"
        assert await b.receive_nothing(timeout=0.3)
        from apps.events.models import apublish

        await apublish("status_changed", {"module": "madre", "to": "down"})
        assert (await receive(a))["data"]["module"] == "madre"
        assert (await receive(b))["data"]["module"] == "madre"
        await a.disconnect()
        await b.disconnect()

    run(body)


def test_replay_after_cursor():
    first = publish("plan_updated", {"n": 1}, "s1")
    publish("plan_updated", {"n": 2}, "s1")
    publish("plan_updated", {"n": 3}, "other")
    publish("status_changed", {"n": 4})

    async def body():
        comm = await open_session(f"/ws/s1?token={TOKEN}&cursor={first['cursor']}")
        got = [await receive(comm), await receive(comm)]
        assert [e["data"]["n"] for e in got] == [2, 4]
        assert all(e["replayed"] for e in got)
        assert await comm.receive_nothing(timeout=0.3)
        await comm.disconnect()

        comm = await open_session(f"/ws/s1?token={TOKEN}&cursor=abc")
        assert (await receive(comm))["error"] == "invalid_cursor"
        await comm.disconnect()

    run(body)


@override_settings(VX11_WS_MAX_FRAME=1024)
def test_oversized_frame_is_refused():
    async def body():
        comm = await open_session()
        await comm.send_to(text_data="x" * 2048)
        notice, closed = await refused(comm)
        assert notice["error"] == "frame_too_big"
        assert closed["code"] == 4009

    run(body)
    assert not Event.objects.exists()


@override_settings(VX11_WS_RATE=1.0, VX11_WS_BURST=3)
def test_flood_is_rate_limited_then_cut_off():
    async def body():
        comm = await open_session()
        for i in range(3):
            await comm.send_to(text_data=f"m{i}")
            assert (await receive(comm))["type"] == "message_received"
        await comm.send_to(text_data="m3")
        limited = await receive(comm)
        assert limited["type"] == "error_reported"
        assert limited["data"]["error"] == "rate_limited"
        for _ in range(5):
            await comm.send_to(text_data="flood")
        outputs = []
        while True:
            out = await comm.receive_output(timeout=3)
            outputs.append(out)
            if out["type"] == "websocket.close":
                break
        assert outputs[-1]["code"] == 4008
        assert json.loads(outputs[-2]["text"])["error"] == "rate_limited"

    run(body)
    assert Event.objects.count() == 3


def test_invalid_session_id_is_refused():
    async def body():
        comm = connect(f"/ws/{'x' * 80}?token={TOKEN}")
        await comm.connect()
        notice, closed = await refused(comm)
        assert closed["code"] == 4008
        assert notice["error"] == "invalid_session_id"

    run(body)


def test_publish_refuses_unknown_types():
    with pytest.raises(ValueError, match="canonical types"):
        publish("teleported", {})


def test_staff_session_from_our_origin_needs_no_token(admin_user, client):
    client.force_login(admin_user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    async def body():
        ours = [(b"cookie", cookie), (b"host", b"127.0.0.1:8080"), (b"origin", b"http://127.0.0.1:8080")]
        comm = await open_session("/ws/live", headers=ours)
        await comm.disconnect()
        # the same cookie from another site's page is not enough
        comm = connect("/ws/live", headers=[*ours[:2], (b"origin", b"http://evil.example")])
        await comm.connect()
        notice, closed = await refused(comm)
        assert notice["error"] == "auth_required"

    run(body)


@pytest.mark.parametrize(
    "host, origin, ours",
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080", True),
        ("LOCALHOST:8080", "http://localhost:8080", True),  # host names compare case-blind
        ("127.0.0.1", "http://127.0.0.1:80", True),  # the default port, spelt or not
        ("portal.example.com", "https://portal.example.com", True),  # in CSRF_TRUSTED_ORIGINS, whatever the Host
        ("127.0.0.1:8080", "https://ops.example.org", True),  # a subdomain of a wildcard trusted origin
        # another port or scheme of an allowed host is another origin (another service on the same machine)
        ("127.0.0.1:8080", "http://127.0.0.1:9999", False),
        ("127.0.0.1:8080", "https://127.0.0.1:8080", False),
        ("127.0.0.1:8080", "http://localhost:8080", False),  # allowed host, but not the one this request came to
        ("evil.example:8080", "http://evil.example:8080", False),  # a Host that ALLOWED_HOSTS does not list
        ("", "http://127.0.0.1:8080", False),
        ("127.0.0.1:8080", "null", False),
        ("127.0.0.1:8080", "http://evil.example@127.0.0.1:8080", False),
        ("127.0.0.1:8080", "http://127.0.0.1:8080.evil.example", False),
        ("127.0.0.1:8080", "https://portal.example.com:8443", False),  # the trusted origin's port is part of it
        ("127.0.0.1:8080", "http://portal.example.com", False),  # and its scheme
    ],
)
@override_settings(
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "portal.example.com"],
    CSRF_TRUSTED_ORIGINS=["https://portal.example.com", "https://*.example.org"],
)
def test_staff_cookie_counts_only_from_the_portals_own_scheme_host_and_port(admin_user, client, host, origin, ours):
    client.force_login(admin_user)
    headers = [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()), (b"origin", origin.encode())]
    if host:
        headers.append((b"host", host.encode()))

    async def body():
        comm = connect("/ws/live", headers=headers)
        await comm.connect()
        first = await receive(comm)
        if ours:
            assert first["type"] == "connected"
            await comm.disconnect()
        else:
            closed = await comm.receive_output(timeout=3)
            assert (first["type"], first["error"], closed["code"]) == ("closing", "auth_required", 4401)

    run(body)


def test_a_read_only_key_subscribes_but_may_not_publish(readonly_key, operator_key):
    async def body():
        viewer = await open_session(f"/ws/s1?token={readonly_key}")
        for sent in ("hello", json.dumps({"event_type": "plan_updated", "data": {"plan_id": "p1"}}), "{not json"):
            await viewer.send_to(text_data=sent)
            refusal = await receive(viewer)
            assert refusal["type"] == "error_reported", refusal
            assert refusal["data"]["error"] == "read_only", refusal
        # still subscribed: what a read-write client publishes reaches it
        writer = await open_session(f"/ws/s1?token={operator_key}")
        await writer.send_to(text_data=json.dumps({"event_type": "plan_updated", "data": {"plan_id": "p2"}}))
        assert (await receive(viewer))["data"]["plan_id"] == "p2"
        assert (await receive(writer))["data"]["plan_id"] == "p2"
        await viewer.disconnect()
        await writer.disconnect()

    run(body)
    assert [e.data["plan_id"] for e in Event.objects.all()] == ["p2"]  # nothing of the read-only key's was stored


@override_settings(VX11_WS_POLL_SECONDS=0.05)
def test_events_stored_by_another_process_arrive_once_by_polling():
    async def body():
        from channels.db import database_sync_to_async

        from apps.events.models import apublish

        comm = await open_session()
        # as the Celery worker does with the in-memory layer: stored, never sent to this process's layer
        await database_sync_to_async(Event.objects.create)(
            type="status_changed", data={"module": "madre", "to": "down"}
        )
        assert (await receive(comm))["data"]["module"] == "madre"
        # published here: arrives by the layer and is stored; the poller must not send it again
        await apublish("status_changed", {"module": "hermes"})
        assert (await receive(comm))["data"]["module"] == "hermes"
        assert await comm.receive_nothing(timeout=0.3)
        await comm.disconnect()

    run(body)


def test_live_pages_are_wired(admin_user, client):
    """The admin pages load the live script; the console needs a staff login."""
    from apps.fleet.models import Module
    from apps.fleet.reference import reference_rows

    Module.objects.get_or_create(
        slug="madre", defaults=reference_rows()[1]
    )  # this module's tests start from a flushed db
    assert client.get("/operator/console").status_code == 302
    client.force_login(admin_user)
    page = client.get("/admin/fleet/module/").content.decode()
    assert "vx11/live.js" in page
    assert 'data-module="madre"' in page
    assert 'data-count="up"' in page
    assert "vx11/live.js" in client.get("/admin/").content.decode()
    console = client.get("/operator/console").content.decode()
    assert "status_changed" in console
    assert "vx11/operator-console.js" in console
    assert b"/ws/" in b"".join(client.get("/static/vx11/operator-console.js").streaming_content)
    assert client.get("/static/vx11/live.js").status_code == 200
