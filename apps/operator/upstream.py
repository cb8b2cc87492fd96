"""What the three v7 operator endpoints answer, built from the fleet registry and the modules themselves.

Each builder returns the body the v7 operator backend answers: GET /operator/vx11/overview the fleet's
status with one entry per module, GET /operator/shub/dashboard shub's health, sessions, projects and
resources, GET /operator/resources hermes' CLI tools and local models with the token budget. A module that
is missing from the registry, offline, too slow, or answering nonsense gives the v7 fallback body (status
"offline", empty or zero figures) with an "error" note, never an exception: old VX11 clients render these
bodies as they are, so the v7 keys keep v7's types (shub_health a status string, memory_mb an integer,
cpu_percent a float); what the portal adds sits beside them under keys of its own.
"""

from __future__ import annotations

import json
import math
import time
from datetime import timedelta
from typing import Any

import httpx
from django.conf import settings
from django.utils import timezone

from apps.fleet.models import Module, State
from apps.fleet.probe import run_round
from apps.fleet.reference import CORE_SLUGS, REFERENCE_MODULES
from vx11_site import outbound

MAX_BODY = 1024 * 1024
HEALTHY_STATES = (State.UP, State.DEGRADED)
V7_VERSION = "7.0"  # the operator API version the portal serves; v7 lists it on the overview's operator entry

# The v7 token budget: no module reports one, and v7 clients expect these two numbers, so they are constants.
MAX_TOKENS = 1000
AVAILABLE_TOKENS = 950

SHUB_METRICS_REQUEST = {"include": ["sessions", "resources", "queue"]}


# -- calling a module ---------------------------------------------------------------------------


class UpstreamError(Exception):
    """Why a module could not give us an answer; becomes the fallback's "error" note."""


def _refused(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ConnectionRefusedError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


class Upstream:
    """One module, called through its registry address, with one time budget for all calls of a request.

    The budget is the module's own timeout capped by VX11_UPSTREAM_TIMEOUT, shared by every call made
    through this object, so an endpoint that makes two calls still answers within about one timeout.
    """

    def __init__(self, slug: str):
        module = Module.objects.filter(slug=slug).first()
        if module is None:
            raise UpstreamError(f"module {slug!r} is not in the registry")
        if not module.enabled:
            raise UpstreamError(f"module {slug!r} is not in the registry (it is disabled)")
        cap = settings.VX11_UPSTREAM_TIMEOUT
        self.slug = slug
        self.base_url = module.base_url.rstrip("/")
        self.timeout = min(module.timeout, cap) if module.timeout else cap
        self.deadline = time.monotonic() + self.timeout

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: dict) -> Any:
        return self.call("POST", path, body)

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        """The decoded JSON of a 200 answer, or UpstreamError saying what went wrong."""
        where = f"{self.slug} {method} {path}"
        try:
            status_code, content = self._send(method, path, body)
        except httpx.TimeoutException:
            raise UpstreamError(f"{where}: timeout after {self.timeout:g} s") from None
        except httpx.ConnectError as exc:
            refused = outbound.why(exc) or ("connection refused" if _refused(exc) else f"connection failed: {exc}")
            raise UpstreamError(f"{where}: {refused}") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{where}: {type(exc).__name__}: {exc}"[:500]) from None
        if status_code != 200:
            raise UpstreamError(f"{where}: HTTP {status_code}")
        try:
            return json.loads(content)
        except (ValueError, UnicodeDecodeError):
            raise UpstreamError(f"{where}: invalid JSON") from None

    def _send(self, method: str, path: str, body: dict | None) -> tuple[int, bytes]:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise httpx.TimeoutException("budget spent")
        with outbound.client(timeout=remaining) as client:
            with client.stream(method, self.base_url + path, json=body) as response:
                content = b""
                for chunk in response.iter_bytes():
                    content += chunk
                    if time.monotonic() > self.deadline:  # a module that trickles bytes
                        raise httpx.TimeoutException("budget spent while reading")
                    if len(content) > MAX_BODY:
                        raise UpstreamError(f"{self.slug} {method} {path}: answer larger than {MAX_BODY // 1024} KiB")
                return response.status_code, content


def _object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise UpstreamError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _health(upstream: Upstream, accepted: tuple[str, ...]) -> dict:
    """The module's /health body, if its status is one of `accepted`."""
    health = _object(upstream.get("/health"), f"{upstream.slug} GET /health")
    if health.get("status") not in accepted:
        raise UpstreamError(f"{upstream.slug} /health reports status {health.get('status')!r}")
    return health


def _rows(value: Any, fields: dict[str, Any], what: str) -> list[dict]:
    """A list of objects cut down to `fields` (name -> default), or UpstreamError."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise UpstreamError(f"{what}: expected a list of objects")
    return [{name: item.get(name, default) for name, default in fields.items()} for item in value]


def _number(value: Any, what: str) -> float:
    # json.loads accepts NaN and Infinity, which no JSON client can read back
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UpstreamError(f"{what}: expected a number, got {value!r}"[:200])
    return value


# -- GET /operator/vx11/overview ----------------------------------------------------------------


def fleet_overview() -> dict:
    """The ten VX11 modules (then any other enabled registry module) as the fleet last saw them; modules
    not seen lately are probed first.

    A module is "ok" when its fleet state is up or degraded (the state follows the fleet's
    down_after/up_after thresholds, so one failed probe does not flip an up module); a reference module
    that is disabled or not in the registry is "offline", as v7 shows a module it cannot reach.
    Overall status:
      ok        every module is healthy;
      degraded  every core module is healthy, some other module is not;
      partial   at least one core module is not healthy.
    """
    enabled = {m.slug: m for m in _fresh_modules()}
    disabled = set(Module.objects.filter(enabled=False).values_list("slug", flat=True))
    reference = [spec["slug"] for spec in REFERENCE_MODULES]
    entries: dict[str, dict] = {}
    core_offline = False
    for slug in [*reference, *(slug for slug in enabled if slug not in reference)]:
        module = enabled.get(slug)
        if module is None:
            entries[slug] = _absent_entry("disabled" if slug in disabled else "missing")
        else:
            entries[slug] = _overview_entry(module)
        core = module.core if module else slug in CORE_SLUGS
        core_offline = core_offline or (core and entries[slug]["status"] != "ok")
    entries["operator"]["version"] = V7_VERSION
    healthy = sum(entry["status"] == "ok" for entry in entries.values())
    return {
        "status": "partial" if core_offline else "ok" if healthy == len(entries) else "degraded",
        "healthy_modules": healthy,
        "total_modules": len(entries),
        "modules": entries,
        "checked_at": timezone.now().isoformat(),
    }


def _fresh_modules() -> list[Module]:
    """Enabled modules, after probing now those never checked or checked too long ago."""
    modules = list(Module.objects.filter(enabled=True))
    cutoff = timezone.now() - timedelta(seconds=settings.VX11_OVERVIEW_STALE_SECONDS)
    stale = [m for m in modules if m.last_checked_at is None or m.last_checked_at < cutoff]
    if not stale:
        return modules
    run_round(stale)
    return list(Module.objects.filter(enabled=True))


def _overview_entry(module: Module) -> dict:
    return {
        "status": "ok" if module.state in HEALTHY_STATES else "offline",
        "state": module.state,
        "latency_ms": None if module.last_latency_ms is None else round(module.last_latency_ms, 2),
        "checked_at": module.last_checked_at.isoformat() if module.last_checked_at else None,
    }


def _absent_entry(state: str) -> dict:
    """A reference module the portal does not probe: "disabled" in the registry, or "missing" from it."""
    return {"status": "offline", "state": state, "latency_ms": None, "checked_at": None}


# -- GET /operator/shub/dashboard ---------------------------------------------------------------


def shub_offline(error: str) -> dict:
    return {
        "status": "offline",
        "shub_health": "offline",
        "shub_health_detail": None,
        "active_sessions": 0,
        "projects": [],
        "resources": {"cpu_percent": 0.0, "memory_mb": 0},
        "error": error,
    }


def shub_dashboard() -> dict:
    """shub's health and metrics; "initializing" while shub warms up, with whatever it gave us.

    `shub_health` is shub's own status word, as v7 reports it ("ok", "initializing", or "offline" when
    shub cannot answer); `shub_health_detail` is shub's whole /health body.
    """
    try:
        upstream = Upstream("shub")
        health = _health(upstream, ("ok", "initializing"))
    except UpstreamError as exc:
        return shub_offline(str(exc))
    status = health["status"]
    try:
        metrics = _shub_metrics(upstream)
    except UpstreamError as exc:
        if status != "initializing":
            return shub_offline(str(exc))
        return {**shub_offline(str(exc)), "status": status, "shub_health": status, "shub_health_detail": health}
    return {"status": status, "shub_health": status, "shub_health_detail": health, **metrics}


def _shub_metrics(upstream: Upstream) -> dict:
    what = "shub POST /metrics"
    metrics = _object(upstream.post("/metrics", SHUB_METRICS_REQUEST), what)
    sessions = metrics.get("active_sessions", 0)
    if isinstance(sessions, bool) or not isinstance(sessions, int):
        raise UpstreamError(f"{what}: active_sessions is not an integer")
    resources = _object(metrics.get("resources", {}), f"{what} resources")
    return {
        "active_sessions": sessions,
        "projects": _rows(metrics.get("projects", []), {"id": None, "name": None}, f"{what} projects"),
        "resources": {
            "cpu_percent": float(_number(resources.get("cpu_percent", 0.0), f"{what} cpu_percent")),
            "memory_mb": round(_number(resources.get("memory_mb", 0), f"{what} memory_mb")),
        },
    }


# -- GET /operator/resources --------------------------------------------------------------------


def resources_offline(error: str) -> dict:
    return {
        "status": "offline",
        "cli_tools": [{"name": "deepseek_r1", "available": False, "version": "1.0"}],
        "local_models": [],
        "max_tokens": MAX_TOKENS,
        "available_tokens": AVAILABLE_TOKENS,
        "error": error,
    }


def hermes_resources() -> dict:
    """hermes' catalog of CLI tools and local models."""
    what = "hermes GET /tools"
    try:
        upstream = Upstream("hermes")
        _health(upstream, ("ok",))
        tools = _object(upstream.get("/tools"), what)
        cli_tools = _rows(
            tools.get("cli_tools", []), {"name": None, "available": False, "version": None}, f"{what} cli_tools"
        )
        local_models = _rows(
            tools.get("local_models", []), {"name": None, "size": None, "loaded": False}, f"{what} local_models"
        )
    except UpstreamError as exc:
        return resources_offline(str(exc))
    return {
        "status": "ok",
        "cli_tools": cli_tools,
        "local_models": local_models,
        "max_tokens": MAX_TOKENS,
        "available_tokens": AVAILABLE_TOKENS,
    }
