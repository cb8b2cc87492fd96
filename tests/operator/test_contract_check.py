"""Phase 5 of the autonomy pipeline, the operator check: `contract.check_live` against a real daphne serving the
test database (the fleet simulated), up and with shub down, with a wrong token, and with nothing listening; and the
contract's validators, each naming the key a broken answer gets wrong."""

import copy

import pytest

from apps.events.models import publish
from apps.operator import contract, upstream
from tests.helpers import TOKEN, free_port

HTTP_CHECKS = [name for name, _ in contract.ENDPOINTS] + [contract.NO_TOKEN_CHECK]
WS_CHECKS = [contract.WS_CONNECTED, contract.WS_REPLAYED, contract.WS_DIRECT]
FALLBACK_CHECKS = [name for name, _, _ in contract.FALLBACKS]


def by_name(result: dict) -> dict[str, dict]:
    assert [c["name"] for c in result["checks"]] == list(contract.CHECK_NAMES)
    return {c["name"]: c for c in result["checks"]}


@pytest.mark.services
def test_the_live_portal_meets_the_v7_contract_up_offline_and_with_a_wrong_token(daphne, fleet, sim):
    portal = daphne.replace("ws://", "http://")
    # first, before any request has probed the fleet (which stores events): nothing to replay is no failure
    replay = contract.ws_checks(portal, TOKEN, "contract-check")[1]
    assert (replay["name"], replay["ok"], replay["note"]) == (contract.WS_REPLAYED, True, "no stored event to replay")

    result = contract.check_live(portal, TOKEN, session_id="contract-check")
    checks = by_name(result)
    assert result["ok"], [c for c in result["checks"] if not c["ok"]]
    assert (result["base_url"], result["summary"]) == (portal, "9 of 9 checks ok")
    assert [checks[name]["variant"] for name, _ in contract.ENDPOINTS] == ["online"] * 3
    assert [checks[name]["status"] for name in HTTP_CHECKS] == [200, 200, 200, 401]
    assert all(checks[name]["variant"] == "offline" for name in FALLBACK_CHECKS)
    assert all(checks[name]["status"] == 101 and checks[name]["ms"] < 2000 for name in WS_CHECKS)

    # a stored broadcast: the replay now has an envelope to check (the check itself never writes)
    publish("status_changed", {"module": "shub", "from": "up", "to": "down", "reason": "contract test"})
    sim.set_mode("shub", "down")
    result = contract.check_live(portal, TOKEN)
    checks = by_name(result)
    assert result["ok"], [c for c in result["checks"] if not c["ok"]]
    assert checks["GET /operator/shub/dashboard"]["variant"] == "offline"
    assert checks[contract.WS_REPLAYED]["note"] == ""

    # last: each wrong token counts against this address
    result = contract.check_live(portal, "wrong-token")
    checks = by_name(result)
    assert not result["ok"]
    for name, _ in contract.ENDPOINTS:
        assert checks[name]["problems"] == [
            "HTTP 403 forbidden: the portal refused the token (X-VX11-Token) (expected 200)"
        ]
    assert checks[contract.NO_TOKEN_CHECK]["ok"]
    assert checks[contract.WS_CONNECTED]["problems"] == ["refused: forbidden (invalid token), close code 4403"]
    assert checks[contract.WS_DIRECT]["problems"][0].startswith("not reached: refused: forbidden")
    assert result["summary"] == "3 of 9 checks ok"


def test_nothing_listening_is_a_failed_check_for_each_request_never_an_exception():
    portal = f"http://127.0.0.1:{free_port()}"
    result = contract.check_live(portal, TOKEN, timeout=1.0)
    checks = by_name(result)
    assert not result["ok"]
    for name in HTTP_CHECKS + WS_CHECKS:
        assert checks[name]["problems"]
        assert all(f"unreachable: cannot connect to {portal} (" in problem for problem in checks[name]["problems"])
    assert len(checks[contract.NO_TOKEN_CHECK]["problems"]) == 3  # one per endpoint, each naming its path
    assert all(checks[name]["ok"] for name in FALLBACK_CHECKS)  # the builders need no portal
    assert result["summary"] == "2 of 9 checks ok"


@pytest.mark.parametrize("base_url", ["ftp://127.0.0.1:8000", "not a url", "http://", "http://127.0.0.1:99999"])
def test_a_base_url_that_is_no_portal_address_fails_every_network_check(base_url):
    checks = by_name(contract.check_live(base_url, TOKEN))
    for name in HTTP_CHECKS + WS_CHECKS:
        assert checks[name]["problems"] == [f"base_url {base_url!r} is not an http(s) URL with a host"]


def test_an_address_the_outbound_guard_refuses_is_said(settings):
    settings.VX11_OUTBOUND_DENY = ["127.0.0.0/8"]
    checks = by_name(contract.check_live("http://127.0.0.1:9", TOKEN, timeout=1.0))
    assert checks["GET /operator/resources"]["problems"] == [
        "refused by the outbound guard: outbound request refused: 127.0.0.1 is in VX11_OUTBOUND_DENY (127.0.0.0/8)"
    ]
    assert checks[contract.WS_CONNECTED]["problems"][0].startswith("refused by the outbound guard: ")


@pytest.mark.parametrize("token", ["bad\ntoken", "tökén", "two words"])
def test_a_token_that_is_no_header_value_is_said_without_showing_it(token):
    result = contract.check_live(f"http://127.0.0.1:{free_port()}", token, timeout=1.0)
    checks = by_name(result)
    for name in [name for name, _ in contract.ENDPOINTS] + WS_CHECKS:
        assert checks[name]["problems"] == [
            "the token cannot be sent as an X-VX11-Token header (printable ASCII without spaces only)"
        ]
    assert token not in str(result)


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"session_id": "a/b"}, {"session_id": "x" * 65}])
def test_bad_arguments_are_a_clear_value_error(kwargs):
    with pytest.raises(ValueError, match="timeout must be|invalid session id"):
        contract.check_live("http://127.0.0.1:8000", TOKEN, **kwargs)


# -- the validators -----------------------------------------------------------------------------

SHUB_ONLINE = {
    "status": "ok",
    "shub_health": "ok",
    "shub_health_detail": {"status": "ok"},
    "active_sessions": 2,
    "projects": [{"id": "p1", "name": "Demo mix"}],
    "resources": {"cpu_percent": 12.5, "memory_mb": 512},
}
RESOURCES_ONLINE = {
    "status": "ok",
    "cli_tools": [{"name": "deepseek_r1", "available": True, "version": "1.0"}],
    "local_models": [{"name": "general-7b", "size": "4.1GB", "loaded": True}],
    "max_tokens": 1000,
    "available_tokens": 950,
}
ENTRY = {"status": "ok", "state": "up", "latency_ms": 1.5, "checked_at": "2025-01-01T00:00:00+00:00"}
OVERVIEW = {
    "status": "ok",
    "healthy_modules": 10,
    "total_modules": 10,
    "modules": {slug: dict(ENTRY, **({"version": "7.0"} if slug == "operator" else {})) for slug in contract.TEN},
    "checked_at": "2025-01-01T00:00:00+00:00",
}
ENVELOPE = {"type": "plan_updated", "session_id": "s1", "timestamp": "2025-01-01T00:00:00Z", "data": {}, "cursor": 7}
CONNECTED = {"channel": "control", "type": "connected", "client_id": "abc", "session_id": "s1"}


def changed(body: dict, path: str, value=None, delete: bool = False) -> dict:
    """A deep copy of `body` with the key at dotted `path` set to `value` (or deleted)."""
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return body


def test_good_answers_have_no_problems():
    assert contract.overview_problems(OVERVIEW) == []
    assert contract.shub_problems(SHUB_ONLINE, "online") == []
    assert contract.resources_problems(RESOURCES_ONLINE, "online") == []
    assert contract.shub_problems(upstream.shub_offline("down"), "offline") == []
    assert contract.resources_problems(upstream.resources_offline("down"), "offline") == []
    assert contract.error_problems({"error": "forbidden", "status_code": 403}, 403) == []
    assert contract.connected_problems(CONNECTED, "s1") == []
    assert contract.envelope_problems(ENVELOPE, "stored", "s1") == []
    assert contract.envelope_problems({**ENVELOPE, "replayed": True, "session_id": None}, "replayed", "s1") == []
    assert contract.fallback_checks() == [contract.check(name, [], variant="offline") for name in FALLBACK_CHECKS]


@pytest.mark.parametrize(
    "validate, body, problem",
    [
        (
            lambda b: contract.shub_problems(b, "online"),
            changed(SHUB_ONLINE, "resources.memory_mb", 511.6),
            "resources.memory_mb: expected an integer, got number 511.6",
        ),
        (
            lambda b: contract.shub_problems(b, "online"),
            changed(SHUB_ONLINE, "resources.cpu_percent", 7),
            "resources.cpu_percent: expected a number with a decimal point (float), got integer 7",
        ),
        (
            lambda b: contract.shub_problems(b, "online"),
            changed(SHUB_ONLINE, "active_sessions", delete=True),
            "missing key: active_sessions",
        ),
        (
            lambda b: contract.shub_problems(b, "online"),
            changed(SHUB_ONLINE, "projects.0.owner", "me"),
            "unexpected key: projects[0].owner",
        ),
        (
            lambda b: contract.shub_problems(b, "offline"),
            changed(upstream.shub_offline("down"), "resources.memory_mb", 0.0),
            'resources: the offline shape has {"cpu_percent": 0.0, "memory_mb": 0}, '
            'got object {"cpu_percent": 0.0, "memory_mb": 0.0}',
        ),
        (
            lambda b: contract.shub_problems(b, "offline"),
            changed(upstream.shub_offline("down"), "error", delete=True),
            "missing key: error",
        ),
        (
            lambda b: contract.resources_problems(b, "online"),
            changed(RESOURCES_ONLINE, "extra", 1),
            "unexpected key: extra",
        ),
        (
            lambda b: contract.resources_problems(b, "online"),
            changed(RESOURCES_ONLINE, "cli_tools.0.available", "yes"),
            'cli_tools[0].available: expected a boolean, got string "yes"',
        ),
        (
            lambda b: contract.resources_problems(b, "offline"),
            changed(upstream.resources_offline("down"), "error", ""),
            'error: expected a non-empty string, got string ""',
        ),
        (
            contract.overview_problems,
            changed(OVERVIEW, "checked_at", "2025-01-01T00:00:00"),
            "checked_at: expected an ISO 8601 timestamp with its offset (Z or +00:00), got string "
            '"2025-01-01T00:00:00"',
        ),
        (
            contract.overview_problems,
            changed(OVERVIEW, "modules.madre.status", "down"),
            'modules.madre.status: expected one of ok, offline, got string "down"',
        ),
        (
            contract.overview_problems,
            changed(OVERVIEW, "healthy_modules", 9),
            "healthy_modules: 9, but 10 modules have status ok",
        ),
        (
            contract.overview_problems,
            changed(OVERVIEW, "modules.operator.version", delete=True),
            "missing key: modules.operator.version",
        ),
        (
            lambda b: contract.error_problems(b, 401),
            {"detail": "no"},
            "missing keys: error, status_code",
        ),
        (
            lambda b: contract.connected_problems(b, "s1"),
            changed(CONNECTED, "client_id", delete=True),
            "missing key: connected message.client_id",
        ),
        (
            lambda b: contract.envelope_problems(b, "stored"),
            changed(ENVELOPE, "cursor", delete=True),
            "missing key: envelope.cursor",
        ),
        (
            lambda b: contract.envelope_problems(b, "stored"),
            changed(ENVELOPE, "type", "chat"),
            "type: expected one of message_received, tool_call_requested, tool_result_received, plan_updated, "
            'status_changed, error_reported, got string "chat"',
        ),
        (
            lambda b: contract.envelope_problems(b, "direct"),
            ENVELOPE,
            "unexpected key: envelope.cursor",
        ),
    ],
)
def test_a_broken_answer_gets_a_problem_naming_its_key(validate, body, problem):
    assert problem in validate(body)


def test_an_answer_that_is_no_object_is_one_problem():
    assert contract.overview_problems([1]) == ["answer: expected an object, got array [1]"]
    assert contract.variant_of("offline") == "online"
