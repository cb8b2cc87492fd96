"""What the three v7 operator endpoints answer, built from the fleet registry and the modules themselves.

Each builder returns the body the v7 operator backend answers: GET /operator/vx11/overview the fleet's
status with one entry per module, GET /operator/shub/dashboard shub's health, sessions, projects and
resources, GET /operator/resources hermes' CLI tools and local models with the token budget. A module that
is missing from the registry, offline, too slow, or answering nonsense gives the v7 fallback body (status
"offline", empty or zero figures) with an "error" note, never an exception: old VX11 clients render these
bodies as they are.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import httpx
from django.conf import settings
from django.utils import timezone

from apps.fleet.models import Module, State
from apps.fleet.probe import run_round
from vx11_site import outbound

MAX_BODY = 1024 * 1024
HEALTHY_STATES = (State.UP, State.DEGRADED)

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
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UpstreamError(f"{what}: expected a number, got {value!r}"[:200])
    return value


# -- GET /operator/vx11/overview ----------------------------------------------------------------


def fleet_overview() -> dict:
    """Every enabled module as the fleet last saw it; modules not seen lately are probed first.

    A module is "ok" when its fleet state is up or degraded (the state follows the fleet's
    down_after/up_after thresholds, so one failed probe does not flip an up module).
    Overall status:
      ok        every module is healthy;
      degraded  every core module (Module.core) is healthy, some other module is not;
      partial   at least one core module is not healthy, or no module is enabled at all.
    """
    modules = _fresh_modules()
    entries = {m.slug: _overview_entry(m) for m in modules}
    healthy = [m for m in modules if m.state in HEALTHY_STATES]
    return {
        "status": _overall_status(modules),
        "healthy_modules": len(healthy),
        "total_modules": len(modules),
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


def _overall_status(modules: list[Module]) -> str:
    if not modules or any(m.core and m.state not in HEALTHY_STATES for m in modules):
        return "partial"
    if all(m.state in HEALTHY_STATES for m in modules):
        return "ok"
    return "degraded"


# -- GET /operator/shub/dashboard ---------------------------------------------------------------


def shub_offline(error: str) -> dict:
    return {
        "status": "offline",
        "shub_health": None,
        "active_sessions": 0,
        "projects": [],
        "resources": {"cpu_percent": 0.0, "memory_mb": 0.0},
        "error": error,
    }


def shub_dashboard() -> dict:
    """shub's health and metrics; "initializing" while shub warms up, with whatever it gave us."""
    try:
        upstream = Upstream("shub")
        health = _health(upstream, ("ok", "initializing"))
    except UpstreamError as exc:
        return shub_offline(str(exc))
    initializing = health["status"] == "initializing"
    try:
        metrics = _shub_metrics(upstream)
    except UpstreamError as exc:
        if not initializing:
            return shub_offline(str(exc))
        return {**shub_offline(str(exc)), "status": "initializing", "shub_health": health}
    return {"status": "initializing" if initializing else "ok", "shub_health": health, **metrics}


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
            "memory_mb": float(_number(resources.get("memory_mb", 0.0), f"{what} memory_mb")),
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
