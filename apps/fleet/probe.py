"""One probe round: every enabled module checked concurrently, each within its own timeout.

aiohttp, not httpx.AsyncClient: on 1,000 loopback origins with 20% hanging and T = 3 s,
bench/probe_round.py measured aiohttp at 1.08-1.14 T and httpx 0.28 at 1.41-1.45 T (the issue
reported 31 s for an older httpx pool); only aiohttp meets the 1.17 T goal.
The ORM is touched only before and after the async part, so this runs the same from a
Celery task, a management command or a test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp
from django.conf import settings
from django.utils import timezone

from vx11_site import outbound

from .models import HealthCheck, Module, Outcome, ProbeResult, StateChange

MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Target:
    module_id: int
    slug: str
    url: str
    timeout: float
    accepted: tuple[str, ...]
    degraded_latency_ms: float | None

    @classmethod
    def of(cls, module: Module) -> Target:
        return cls(
            module.id,
            module.slug,
            module.health_url,
            module.timeout,
            tuple(module.accepted_statuses),
            module.degraded_latency_ms,
        )


def _fail(
    target: Target, error: str, status_code: int | None = None, latency_ms: float | None = None, status_value: str = ""
) -> ProbeResult:
    return ProbeResult(
        target.module_id, target.slug, timezone.now(), Outcome.FAIL, status_code, latency_ms, status_value, error
    )


async def probe_one(session: aiohttp.ClientSession, target: Target) -> ProbeResult:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(target.timeout):
            async with session.get(target.url, allow_redirects=False) as response:
                body = await response.content.read(MAX_BODY)
                status_code = response.status
    except TimeoutError:
        return _fail(target, f"timeout after {target.timeout:g} s")
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ConnectionRefusedError):
            return _fail(target, "connection refused")
        return _fail(target, (outbound.why(exc) or f"connection failed: {exc.os_error or exc}")[:500])
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return _fail(target, (outbound.why(exc) or f"{type(exc).__name__}: {exc}")[:500])
    latency_ms = (time.perf_counter() - started) * 1000.0

    if status_code != 200:
        return _fail(target, f"HTTP {status_code}", status_code, latency_ms)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _fail(target, "invalid JSON in /health answer", status_code, latency_ms)
    if not isinstance(payload, dict) or not isinstance(payload.get("status"), str):
        return _fail(target, "no string 'status' field in /health answer", status_code, latency_ms)
    status_value = payload["status"]
    if status_value not in target.accepted:
        return _fail(
            target,
            f"status {status_value!r} not in accepted {list(target.accepted)}",
            status_code,
            latency_ms,
            status_value,
        )
    slow = target.degraded_latency_ms is not None and latency_ms > target.degraded_latency_ms
    outcome = Outcome.SLOW if slow else Outcome.OK
    return ProbeResult(
        target.module_id, target.slug, timezone.now(), outcome, status_code, latency_ms, status_value, ""
    )


async def probe_targets(
    targets: Iterable[Target], on_result: Callable[[ProbeResult], None] | None = None, concurrency: int | None = None
) -> list[ProbeResult]:
    """Probe all targets at once (up to `concurrency` connections), results in completion order."""
    targets = list(targets)
    if not targets:
        return []
    limit = concurrency or settings.VX11_PROBE_CONCURRENCY
    connector = {"limit": limit, "limit_per_host": 0, "force_close": True, "enable_cleanup_closed": False}
    results = []
    async with outbound.aiohttp_session(connector, headers={"User-Agent": "vx11-portal-probe/1"}) as session:
        for finished in asyncio.as_completed([probe_one(session, t) for t in targets]):
            result = await finished
            results.append(result)
            if on_result:
                on_result(result)
    return results


def run_round(
    modules=None, on_result: Callable[[ProbeResult], None] | None = None
) -> tuple[list[ProbeResult], list[StateChange]]:
    """Probe the given modules (default: every enabled one), store the round, return results and changes."""
    if modules is None:
        modules = Module.objects.filter(enabled=True)
    targets = [Target.of(m) for m in modules]
    results = asyncio.run(probe_targets(targets, on_result))
    changes = HealthCheck.record_round(results)
    return results, changes
