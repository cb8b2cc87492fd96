"""The contract with VX11's operator backend v7, as data and validators, and `check_live`: a running portal's
operator endpoints and WS /ws/{session_id} checked against it over the network (phase 5 of the autonomy pipeline).

REAL_* are v7's own keys, the ones VX11's clients read; OURS_* the portal's additions beside them (README,
"Contract with VX11"). Each validator takes one decoded answer and returns its problems, one string each naming
the key (`resources.memory_mb: expected an integer, got number 511.6`); [] means it meets the contract. An
endpoint whose upstream module cannot answer still answers 200, in the "offline" variant, which must be exactly
the offline shape (its `error` says why); any other answer is the "online" variant.

check_live never writes to the portal: over HTTP it only reads, and on the WebSocket it asks for the replay of
stored events (`?cursor=0`) and sends one unparsable frame, which the consumer answers with an error_reported
envelope for this client alone (neither stored nor broadcast).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import httpx

from apps.fleet.reference import REFERENCE_MODULES
from vx11_site import outbound

from . import upstream

# -- the contract -------------------------------------------------------------------------------

TEN = tuple(spec["slug"] for spec in REFERENCE_MODULES)  # v7's modules, in v7's order
OFFSET = re.compile(r"(Z|[+-]\d\d:\d\d)$")  # every timestamp names its zone
V7_VERSION = "7.0"

REAL_OVERVIEW = {"status", "healthy_modules", "total_modules", "modules"}
OURS_OVERVIEW = {"checked_at"}
REAL_MODULE = {"status"}
OURS_MODULE = {"state", "latency_ms", "checked_at"}
OVERVIEW_STATUSES = ("ok", "degraded", "partial")
MODULE_STATUSES = ("ok", "offline")
MODULE_STATES = ("up", "degraded", "down", "unknown", "disabled", "missing")

REAL_SHUB = {"status", "shub_health", "active_sessions", "projects", "resources"}
OURS_SHUB = {"shub_health_detail"}
REAL_PROJECT = {"id", "name"}
REAL_SHUB_RESOURCES = {"cpu_percent", "memory_mb"}
SHUB_ONLINE_STATUSES = ("ok", "initializing")  # shub's own word, passed through while it warms up

REAL_RESOURCES = {"status", "cli_tools", "local_models", "max_tokens", "available_tokens"}
REAL_CLI_TOOL = {"name", "available", "version"}
REAL_LOCAL_MODEL = {"name", "size", "loaded"}
MAX_TOKENS = 1000  # v7's token budget: constants its clients expect
AVAILABLE_TOKENS = 950
OFFLINE_CLI_TOOLS = [{"name": "deepseek_r1", "available": False, "version": "1.0"}]

OURS_OFFLINE = {"error"}  # why the module could not answer
# the offline answers, but for their `error`; compared value and JSON type (0.0 is not 0)
OFFLINE_SHUB = {
    "status": "offline",
    "shub_health": "offline",
    "shub_health_detail": None,
    "active_sessions": 0,
    "projects": [],
    "resources": {"cpu_percent": 0.0, "memory_mb": 0},
}
OFFLINE_RESOURCES = {
    "status": "offline",
    "cli_tools": OFFLINE_CLI_TOOLS,
    "local_models": [],
    "max_tokens": MAX_TOKENS,
    "available_tokens": AVAILABLE_TOKENS,
}

REAL_ERROR = {"error", "status_code"}
NO_TOKEN = (401, "auth_required")  # what every operator endpoint answers a request without X-VX11-Token

REAL_CONNECTED = {"channel", "type", "client_id"}
OURS_CONNECTED = {"session_id"}
REAL_ENVELOPE = {"type", "session_id", "timestamp", "data"}
OURS_ENVELOPE = {"cursor"}
OURS_REPLAYED = {"replayed"}  # on the stored events sent again after ?cursor=
# Written out rather than imported from apps.events: the contract is v7's list, not whatever the bus accepts.
V7_EVENT_TYPES = (
    "message_received",
    "tool_call_requested",
    "tool_result_received",
    "plan_updated",
    "status_changed",
    "error_reported",
)
SESSION_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# the envelope's keys by where it comes from: a stored event (live), a stored event replayed after ?cursor=,
# or the consumer's own answer to this client (error_reported; never stored, so no cursor)
ENVELOPE_KEYS = {
    "stored": REAL_ENVELOPE | OURS_ENVELOPE,
    "replayed": REAL_ENVELOPE | OURS_ENVELOPE | OURS_REPLAYED,
    "direct": REAL_ENVELOPE,
}

# -- validators ---------------------------------------------------------------------------------

JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def shown(value: Any) -> str:
    """A value as the problem names it: its JSON type, then itself (cut short)."""
    kind = "null" if value is None else JSON_TYPES.get(type(value), type(value).__name__)
    text = json.dumps(value, default=str)
    return kind if value is None else f"{kind} {text[:60]}{'...' if len(text) > 60 else ''}"


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _keys(body: Any, expected: set[str], where: str = "") -> list[str]:
    if not isinstance(body, dict):
        return [f"{where or 'answer'}: expected an object, got {shown(body)}"]
    problems = []
    missing = sorted(expected - set(body))
    extra = sorted(set(body) - expected)
    if missing:
        problems.append(f"missing key{'s' if len(missing) > 1 else ''}: {', '.join(_at(where, k) for k in missing)}")
    if extra:
        problems.append(f"unexpected key{'s' if len(extra) > 1 else ''}: {', '.join(_at(where, k) for k in extra)}")
    return problems


def _integer(value: Any, where: str) -> list[str]:
    return [] if type(value) is int else [f"{where}: expected an integer, got {shown(value)}"]


def _float(value: Any, where: str) -> list[str]:
    if type(value) is float and math.isfinite(value):
        return []
    return [f"{where}: expected a number with a decimal point (float), got {shown(value)}"]


def _boolean(value: Any, where: str) -> list[str]:
    return [] if type(value) is bool else [f"{where}: expected a boolean, got {shown(value)}"]


def _object(value: Any, where: str) -> list[str]:
    return [] if isinstance(value, dict) else [f"{where}: expected an object, got {shown(value)}"]


def _text(value: Any, where: str) -> list[str]:
    return [] if isinstance(value, str) and value else [f"{where}: expected a non-empty string, got {shown(value)}"]


def _one_of(value: Any, allowed: tuple, where: str) -> list[str]:
    if isinstance(value, str) and value in allowed:
        return []
    return [f"{where}: expected one of {', '.join(allowed)}, got {shown(value)}"]


def _timestamp(value: Any, where: str, nullable: bool = False) -> list[str]:
    if value is None and nullable:
        return []
    if not isinstance(value, str) or not OFFSET.search(value):
        return [f"{where}: expected an ISO 8601 timestamp with its offset (Z or +00:00), got {shown(value)}"]
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return [f"{where}: not an ISO 8601 timestamp: {shown(value)}"]
    return []


def _latency(value: Any, where: str) -> list[str]:
    if value is None or (type(value) in (int, float) and math.isfinite(value) and value >= 0):
        return []
    return [f"{where}: expected null or milliseconds (a number >= 0), got {shown(value)}"]


def _rows(value: Any, keys: set[str], where: str, booleans: tuple[str, ...] = ()) -> list[str]:
    if not isinstance(value, list):
        return [f"{where}: expected an array, got {shown(value)}"]
    problems = []
    for i, row in enumerate(value):
        problems += _keys(row, keys, f"{where}[{i}]")
        if isinstance(row, dict):
            for name in booleans:
                if name in row:
                    problems += _boolean(row[name], f"{where}[{i}].{name}")
    return problems


def _exactly(body: dict, shape: dict) -> list[str]:
    """Each key of `shape` that `body` has, equal in value and JSON type (an offline answer is constant)."""
    problems = []
    for key, expected in shape.items():
        if key in body and json.dumps(body[key], sort_keys=True) != json.dumps(expected, sort_keys=True):
            problems.append(f"{key}: the offline shape has {json.dumps(expected)}, got {shown(body[key])}")
    return problems


def variant_of(body: Any) -> str:
    """ "offline" for an answer that says its upstream module could not answer, else "online"."""
    return "offline" if isinstance(body, dict) and body.get("status") == "offline" else "online"


def overview_problems(body: Any) -> list[str]:
    """GET /operator/vx11/overview (no offline variant: the portal answers it from its own registry)."""
    problems = _keys(body, REAL_OVERVIEW | OURS_OVERVIEW)
    if not isinstance(body, dict):
        return problems
    if "status" in body:
        problems += _one_of(body["status"], OVERVIEW_STATUSES, "status")
    for key in ("healthy_modules", "total_modules"):
        if key in body:
            problems += _integer(body[key], key)
    if "checked_at" in body:
        problems += _timestamp(body["checked_at"], "checked_at")
    modules = body.get("modules")
    if "modules" in body and not isinstance(modules, dict):
        return problems + _object(modules, "modules")
    if modules is None:
        return problems
    if tuple(modules)[: len(TEN)] != TEN:
        problems.append(
            f"modules: expected v7's ten modules first, in order ({', '.join(TEN)}), got {', '.join(modules)}"
        )
    for slug, entry in modules.items():
        where = f"modules.{slug}"
        problems += _keys(entry, REAL_MODULE | OURS_MODULE | ({"version"} if slug == "operator" else set()), where)
        if not isinstance(entry, dict):
            continue
        if "status" in entry:
            problems += _one_of(entry["status"], MODULE_STATUSES, f"{where}.status")
        if "state" in entry:
            problems += _one_of(entry["state"], MODULE_STATES, f"{where}.state")
        if "latency_ms" in entry:
            problems += _latency(entry["latency_ms"], f"{where}.latency_ms")
        if "checked_at" in entry:
            problems += _timestamp(entry["checked_at"], f"{where}.checked_at", nullable=True)
    operator = modules.get("operator")
    if isinstance(operator, dict) and "version" in operator and operator["version"] != V7_VERSION:
        problems.append(f"modules.operator.version: expected {V7_VERSION!r}, got {shown(operator['version'])}")
    healthy = sum(isinstance(e, dict) and e.get("status") == "ok" for e in modules.values())
    if type(body.get("healthy_modules")) is int and body["healthy_modules"] != healthy:
        problems.append(f"healthy_modules: {body['healthy_modules']}, but {healthy} modules have status ok")
    if type(body.get("total_modules")) is int and body["total_modules"] != len(modules):
        problems.append(f"total_modules: {body['total_modules']}, but modules lists {len(modules)}")
    if body.get("status") == "ok" and healthy != len(modules):
        problems.append(f"status: ok, but only {healthy} of {len(modules)} modules have status ok")
    return problems


def shub_problems(body: Any, variant: str) -> list[str]:
    """GET /operator/shub/dashboard, as `variant` ("online" or "offline")."""
    if variant == "offline":
        problems = _keys(body, REAL_SHUB | OURS_SHUB | OURS_OFFLINE)
        if isinstance(body, dict):
            problems += _exactly(body, OFFLINE_SHUB)
            if "error" in body:
                problems += _text(body["error"], "error")
        return problems
    warming = isinstance(body, dict) and body.get("status") == "initializing" and "error" in body
    # while shub warms up its metrics may fail: then the answer says why, as the offline one does
    problems = _keys(body, REAL_SHUB | OURS_SHUB | (OURS_OFFLINE if warming else set()))
    if not isinstance(body, dict):
        return problems
    if "status" in body:
        problems += _one_of(body["status"], SHUB_ONLINE_STATUSES, "status")
    if "shub_health" in body:
        problems += _one_of(body["shub_health"], SHUB_ONLINE_STATUSES, "shub_health")
        if body["shub_health"] != body.get("status"):
            problems.append(
                f"shub_health: {shown(body['shub_health'])} differs from status {shown(body.get('status'))}"
            )
    if "shub_health_detail" in body:
        problems += _object(body["shub_health_detail"], "shub_health_detail")
    if "active_sessions" in body:
        problems += _integer(body["active_sessions"], "active_sessions")
    if "projects" in body:
        problems += _rows(body["projects"], REAL_PROJECT, "projects")
    if "resources" in body:
        problems += _keys(body["resources"], REAL_SHUB_RESOURCES, "resources")
        if isinstance(body["resources"], dict):
            if "cpu_percent" in body["resources"]:
                problems += _float(body["resources"]["cpu_percent"], "resources.cpu_percent")
            if "memory_mb" in body["resources"]:
                problems += _integer(body["resources"]["memory_mb"], "resources.memory_mb")
    if warming:
        problems += _text(body["error"], "error")
    return problems


def resources_problems(body: Any, variant: str) -> list[str]:
    """GET /operator/resources, as `variant` ("online" or "offline")."""
    offline = variant == "offline"
    problems = _keys(body, REAL_RESOURCES | (OURS_OFFLINE if offline else set()))
    if not isinstance(body, dict):
        return problems
    if offline:
        problems += _exactly(body, OFFLINE_RESOURCES)
        if "error" in body:
            problems += _text(body["error"], "error")
        return problems
    if "status" in body and body["status"] != "ok":
        problems.append(f"status: expected ok (or the offline shape), got {shown(body['status'])}")
    if "cli_tools" in body:
        problems += _rows(body["cli_tools"], REAL_CLI_TOOL, "cli_tools", booleans=("available",))
        if body["cli_tools"] == []:
            problems.append("cli_tools: empty; v7 clients expect at least one tool")
    if "local_models" in body:
        problems += _rows(body["local_models"], REAL_LOCAL_MODEL, "local_models", booleans=("loaded",))
    for key, expected in (("max_tokens", MAX_TOKENS), ("available_tokens", AVAILABLE_TOKENS)):
        if key in body:
            wrong_type = _integer(body[key], key)
            problems += wrong_type or (
                [] if body[key] == expected else [f"{key}: expected {expected}, got {body[key]}"]
            )
    return problems


def error_problems(body: Any, status_code: int) -> list[str]:
    """The v7 error answer `{error, status_code}` of an answer with HTTP status `status_code`."""
    problems = _keys(body, REAL_ERROR)
    if not isinstance(body, dict):
        return problems
    if "error" in body:
        problems += _text(body["error"], "error")
    if "status_code" in body:
        problems += _integer(body["status_code"], "status_code")
        if body["status_code"] != status_code:
            problems.append(f"status_code: {shown(body['status_code'])}, but the HTTP status is {status_code}")
    return problems


def connected_problems(message: Any, session_id: str | None = None) -> list[str]:
    """The `connected` control message that opens every WebSocket of /ws/{session_id}."""
    problems = _keys(message, REAL_CONNECTED | OURS_CONNECTED, "connected message")
    if not isinstance(message, dict):
        return problems
    for key, expected in (("channel", "control"), ("type", "connected")):
        if key in message and message[key] != expected:
            problems.append(f"{key}: expected {expected!r}, got {shown(message[key])}")
    if "client_id" in message:
        problems += _text(message["client_id"], "client_id")
    if "session_id" in message and session_id is not None and message["session_id"] != session_id:
        problems.append(f"session_id: expected {session_id!r}, got {shown(message['session_id'])}")
    return problems


def envelope_problems(message: Any, kind: str = "stored", session_id: str | None = None) -> list[str]:
    """One event envelope; `kind` is where it comes from (ENVELOPE_KEYS): "stored", "replayed" or "direct"."""
    problems = _keys(message, ENVELOPE_KEYS[kind], "envelope")
    if not isinstance(message, dict):
        return problems
    if "type" in message:
        problems += _one_of(message["type"], V7_EVENT_TYPES, "type")
    if "session_id" in message:
        sid = message["session_id"]
        if sid is not None and not (isinstance(sid, str) and SESSION_ID.match(sid)):
            problems.append(f"session_id: expected null (a broadcast) or a session id, got {shown(sid)}")
        elif session_id is not None and sid not in (session_id, None):
            problems.append(f"session_id: expected {session_id!r} or null (a broadcast), got {shown(sid)}")
    if "timestamp" in message:
        problems += _timestamp(message["timestamp"], "timestamp")
    if "data" in message:
        problems += _object(message["data"], "data")
    if "cursor" in message and (type(message["cursor"]) is not int or message["cursor"] < 1):
        problems.append(f"cursor: expected a positive integer (the stored event's id), got {shown(message['cursor'])}")
    if "replayed" in message and message["replayed"] is not True:
        problems.append(f"replayed: expected true, got {shown(message['replayed'])}")
    return problems


# -- the live check -----------------------------------------------------------------------------

ENDPOINTS = (
    ("GET /operator/vx11/overview", "/operator/vx11/overview"),
    ("GET /operator/shub/dashboard", "/operator/shub/dashboard"),
    ("GET /operator/resources", "/operator/resources"),
)
# the endpoints whose upstream module may be offline, and their validators; the overview has no offline variant
WITH_OFFLINE = {"/operator/shub/dashboard": shub_problems, "/operator/resources": resources_problems}
NO_TOKEN_CHECK = "error answer: no X-VX11-Token"
FALLBACKS = (
    ("offline fallback: /operator/shub/dashboard", upstream.shub_offline, shub_problems),
    ("offline fallback: /operator/resources", upstream.resources_offline, resources_problems),
)
WS_CONNECTED = "WS /ws/{session_id}: connected message"
WS_REPLAYED = "WS /ws/{session_id}: event envelope (replay)"
WS_DIRECT = "WS /ws/{session_id}: event envelope (the consumer's own answer)"
HTTP_NAMES = (*(name for name, _ in ENDPOINTS), NO_TOKEN_CHECK)
WS_NAMES = (WS_CONNECTED, WS_REPLAYED, WS_DIRECT)
CHECK_NAMES = (*HTTP_NAMES, *(name for name, _, _ in FALLBACKS), *WS_NAMES)
WS_BUDGET = 2.0  # seconds for the whole WebSocket exchange, at most
UNPARSABLE = "{"  # a frame the consumer answers with error_reported (invalid_json) to this client alone


def check(
    name: str,
    problems: list[str],
    status: int | None = None,
    ms: float | None = None,
    variant: str = "",
    note: str = "",
) -> dict:
    """One check's result; `note` says what an ok check could not look at (e.g. no stored event to replay)."""
    return {
        "name": name,
        "ok": not problems,
        "problems": problems,
        "status": status,
        "ms": ms,
        "variant": variant,
        "note": note,
    }


def check_live(base_url: str, token: str, *, timeout: float = 5.0, session_id: str | None = None) -> dict:
    """Check the live portal at base_url (http://127.0.0.1:8000) against the v7 contract.

    Returns {"ok": bool, "base_url": str, "checks": [{"name", "ok", "problems": [str], "status": int | None,
    "ms": float | None, "variant": "online" | "offline" | "", "note": str}], "summary": "9 of 9 checks ok"},
    the checks named as CHECK_NAMES. Never raises for an unreachable or misbehaving portal: that is a check with ok
    False and the problem said. ValueError for a timeout that is not positive or a session id /ws would refuse.
    """
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if session_id is not None and not SESSION_ID.match(session_id):
        raise ValueError(f"invalid session id {session_id!r}: 1-64 of A-Z a-z 0-9 _ . -")
    session_id = session_id or f"pipeline-check-{secrets.token_hex(4)}"
    http_base, wrong = _http_base(base_url)
    if wrong:
        checks = [check(name, [wrong]) for name, _ in ENDPOINTS] + [check(NO_TOKEN_CHECK, [wrong])]
        checks += fallback_checks()
        checks += [check(name, [wrong]) for name in WS_NAMES]
    else:
        checks = _guarded(HTTP_NAMES, http_checks, http_base, token, timeout) + fallback_checks()
        checks += _guarded(WS_NAMES, ws_checks, http_base, token, session_id, min(timeout, WS_BUDGET))
    passed = sum(c["ok"] for c in checks)
    return {
        "ok": passed == len(checks),
        "base_url": base_url,
        "checks": checks,
        "summary": f"{passed} of {len(checks)} checks ok",
    }


def _guarded(names: tuple[str, ...], run, *args) -> list[dict]:
    """`run(*args)`, or each of its checks failed with what went wrong: a portal that answers in a way nobody
    foresaw is the check's finding, never the pipeline's exception."""
    try:
        return run(*args)
    except Exception as exc:
        return [check(name, [f"the check failed: {type(exc).__name__}: {exc}"[:300]]) for name in names]


def _sendable(token: Any) -> str:
    """Why `token` cannot be sent as the X-VX11-Token header ("" if it can); never says the token itself."""
    if isinstance(token, str) and all("!" <= c <= "~" for c in token):
        return ""
    return "the token cannot be sent as an X-VX11-Token header (printable ASCII without spaces only)"


def _http_base(base_url: Any) -> tuple[str, str]:
    """(the portal's http(s) base URL, "") or ("", why base_url is not one); ws(s):// is taken as http(s)://."""
    wrong = f"base_url {base_url!r} is not an http(s) URL with a host"
    if not isinstance(base_url, str):
        return "", wrong
    try:
        parts = urlsplit(base_url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return "", wrong
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme not in outbound.SCHEMES or not parts.hostname or parts.query or parts.fragment:
        return "", wrong
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}", ""


def _elapsed(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _unreachable(base: str, exc: BaseException) -> str:
    reason = outbound.why(exc)
    if reason:
        return f"refused by the outbound guard: {reason}"
    return f"unreachable: cannot connect to {base} ({str(exc) or type(exc).__name__})"


def _fetch(http: httpx.Client, base: str, path: str, headers: dict, timeout: float):
    """(status, ms, decoded JSON body, problem): problem is "" when the portal answered JSON."""
    started = time.monotonic()
    try:
        response = http.get(base + path, headers=headers)
    except httpx.TimeoutException:
        return None, _elapsed(started), None, f"no answer within {timeout:g} s"
    except httpx.ConnectError as exc:
        return None, _elapsed(started), None, _unreachable(base, exc)
    except httpx.HTTPError as exc:
        return None, _elapsed(started), None, f"request failed: {type(exc).__name__}: {exc}"[:300]
    ms = _elapsed(started)
    content_type = response.headers.get("content-type", "")
    try:
        body = response.json()
    except ValueError:
        return response.status_code, ms, None, f"HTTP {response.status_code}, not JSON ({content_type or 'no type'})"
    if content_type.split(";")[0].strip() != "application/json":
        return response.status_code, ms, body, f"Content-Type is {content_type!r}, expected application/json"
    return response.status_code, ms, body, ""


def _not_200(status: int, body: Any) -> str:
    said = f" {body['error']}" if isinstance(body, dict) and isinstance(body.get("error"), str) else ""
    why = {
        401: ": no token was sent",
        403: ": the portal refused the token (X-VX11-Token)",
        429: ": too many wrong tokens from this address; the portal waits a minute",
    }.get(status, "")
    return f"HTTP {status}{said}{why} (expected 200)"


def http_checks(base: str, token: str, timeout: float) -> list[dict]:
    """The three endpoints with the token, each as its variant; then the error answer without a token."""
    checks = []
    unsendable = _sendable(token)
    with outbound.client(timeout=timeout) as http:
        for name, path in ENDPOINTS:
            if unsendable:
                checks.append(check(name, [unsendable]))
                continue
            status, ms, body, problem = _fetch(http, base, path, {"X-VX11-Token": token}, timeout)
            if problem:
                checks.append(check(name, [problem], status, ms))
            elif status != 200:
                checks.append(check(name, [_not_200(status, body)], status, ms))
            elif path in WITH_OFFLINE:
                variant = variant_of(body)
                checks.append(check(name, WITH_OFFLINE[path](body, variant), status, ms, variant))
            else:
                checks.append(check(name, overview_problems(body), status, ms, "online"))
        checks.append(_no_token_check(http, base, timeout))
    return checks


def _no_token_check(http: httpx.Client, base: str, timeout: float) -> dict:
    """Every endpoint answers a request without a token 401 in the v7 error shape (a wrong token is not sent:
    the portal would count it against this address)."""
    problems, statuses, total = [], set(), 0.0
    for _, path in ENDPOINTS:
        status, ms, body, problem = _fetch(http, base, path, {}, timeout)
        statuses.add(status)
        total += ms or 0.0
        if problem:
            problems.append(f"{path}: {problem}")
            continue
        if (status, body.get("error") if isinstance(body, dict) else None) != NO_TOKEN:
            problems.append(f"{path}: expected HTTP {NO_TOKEN[0]} {NO_TOKEN[1]}, got HTTP {status} {shown(body)}")
        problems += [f"{path}: {p}" for p in error_problems(body, status)]
    status = statuses.pop() if len(statuses) == 1 else None
    return check(NO_TOKEN_CHECK, problems, status, round(total, 1))


def fallback_checks() -> list[dict]:
    """What the portal answers when shub or hermes cannot: the fallback builders, through JSON as the views send it."""
    reason = "contract check: the module did not answer"
    checks = []
    for name, build, validate in FALLBACKS:
        try:
            body = json.loads(json.dumps(build(reason)))
        except Exception as exc:  # a broken builder is this check's finding, not the caller's exception
            checks.append(check(name, [f"the fallback builder failed: {type(exc).__name__}: {exc}"], variant="offline"))
            continue
        problems = validate(body, "offline")
        if variant_of(body) != "offline":
            problems.append(f"status: the fallback answer must say offline, got {shown(body.get('status'))}")
        if isinstance(body, dict) and "error" in body and body["error"] != reason:
            problems.append(f"error: expected the reason it was given ({reason!r}), got {shown(body['error'])}")
        checks.append(check(name, problems, variant="offline"))
    return checks


# -- the WebSocket ------------------------------------------------------------------------------


class _Closed(Exception):
    def __init__(self, code: int | None):
        super().__init__(f"closed by the portal (close code {code})")


async def _frame(ws: aiohttp.ClientWebSocketResponse) -> Any:
    message = await ws.receive()
    if message.type == aiohttp.WSMsgType.BINARY:
        return message.data  # /ws speaks text frames only: the validators say this is no object
    if message.type != aiohttp.WSMsgType.TEXT:
        raise _Closed(ws.close_code)
    try:
        return json.loads(message.data)
    except ValueError:
        return message.data  # the validators say it is not an object


async def _exchange(url: str, token: str, budget: float) -> dict:
    """Connect, read the connected message, send one unparsable frame, read until the consumer's answer.
    Returns what was seen: status, the ms of each step, hello, replayed (the first replayed envelope),
    answer, and problem (what stopped the exchange)."""
    seen: dict[str, Any] = {"status": None, "ms": {}, "hello": None, "replayed": None, "answer": None, "problem": ""}
    started = time.monotonic()
    try:
        async with asyncio.timeout(budget):
            async with outbound.aiohttp_session() as http:
                async with http.ws_connect(url, headers={"X-VX11-Token": token}, heartbeat=None) as ws:
                    seen["status"] = 101
                    seen["hello"] = await _frame(ws)
                    seen["ms"]["hello"] = _elapsed(started)
                    if not (isinstance(seen["hello"], dict) and seen["hello"].get("type") == "connected"):
                        return seen
                    await ws.send_str(UNPARSABLE)
                    while seen["answer"] is None:
                        frame = await _frame(ws)
                        if isinstance(frame, dict) and frame.get("replayed") is True:
                            if seen["replayed"] is None:
                                seen["replayed"] = frame
                                seen["ms"]["replayed"] = _elapsed(started)
                        elif not isinstance(frame, dict) or (
                            frame.get("type") == "error_reported" and "cursor" not in frame
                        ):
                            seen["answer"] = frame
                            seen["ms"]["answer"] = _elapsed(started)
                        # anything else is a live event of this session or a broadcast: not what was asked for
    except TimeoutError:
        seen["problem"] = f"the exchange did not finish within {budget:g} s"
    except _Closed as exc:
        seen["problem"] = str(exc)
    except aiohttp.WSServerHandshakeError as exc:
        seen["status"] = exc.status
        seen["problem"] = f"WebSocket handshake refused: HTTP {exc.status} {exc.message}"
    except (aiohttp.ClientConnectionError, OSError) as exc:
        seen["problem"] = _unreachable(url.split("/ws/")[0], exc)
    except aiohttp.ClientError as exc:
        seen["problem"] = f"WebSocket failed: {type(exc).__name__}: {exc}"[:300]
    return seen


def _run(coroutine) -> Any:
    """Run a coroutine to its end from sync code, also when the caller is itself inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def ws_checks(base: str, token: str, session_id: str, budget: float = WS_BUDGET) -> list[dict]:
    """WS /ws/{session_id}: the connected message, the first replayed stored event, the consumer's own answer.

    aiohttp's ws_connect takes the http(s) form of the URL (the handshake is an HTTP GET); the outbound guard
    allows only http and https, so that is the form used, and the guard checks the address as for any request.
    """
    unsendable = _sendable(token)
    if unsendable:
        return [check(name, [unsendable]) for name in WS_NAMES]
    url = f"{base}/ws/{quote(session_id, safe='')}?cursor=0"
    seen = _run(_exchange(url, token, budget))
    status, ms, hello, problem = seen["status"], seen["ms"], seen["hello"], seen["problem"]

    if hello is None:
        return [check(name, [problem or "no connected message"], status) for name in WS_NAMES]
    if isinstance(hello, dict) and hello.get("type") == "closing":
        refused = f"refused: {hello.get('error')} ({hello.get('detail')}), close code {hello.get('code')}"
        return [check(WS_CONNECTED, [refused], status, ms.get("hello"))] + [
            check(name, [f"not reached: {refused}"], status) for name in WS_NAMES[1:]
        ]
    checks = [check(WS_CONNECTED, connected_problems(hello, session_id), status, ms.get("hello"))]
    if seen["replayed"] is not None:
        problems = envelope_problems(seen["replayed"], "replayed", session_id)
        checks.append(check(WS_REPLAYED, problems, status, ms.get("replayed")))
    elif seen["answer"] is not None:
        # replay comes before the consumer reads any frame: an answer with no replay before it means none stored
        checks.append(check(WS_REPLAYED, [], status, ms.get("answer"), note="no stored event to replay"))
    else:
        checks.append(check(WS_REPLAYED, [problem or "no replayed event and no answer"], status))
    if seen["answer"] is not None:
        checks.append(
            check(WS_DIRECT, envelope_problems(seen["answer"], "direct", session_id), status, ms.get("answer"))
        )
    else:
        checks.append(check(WS_DIRECT, [problem or f"no answer to the frame {UNPARSABLE!r}"], status))
    return checks
