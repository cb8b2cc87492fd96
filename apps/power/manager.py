"""The power manager: guarded start/stop/restart of fleet modules, modes, power windows, the action log.

madre's power manager starts, stops and restarts the fleet's services behind guards - an allowlist switch,
madre and tentaculo_link never stopped, maintenance windows - and writes an evidence folder per action;
this is that manager, with every guard enforced:
- VX11_ALLOW_SERVICE_CONTROL off refuses every applied action (403);
- madre and tentaculo_link are never stopped (403);
- VX11_MAINTENANCE_WINDOW_ENABLED on: an applied action needs a window covering the module (409);
- VX11_POWER_RATE_LIMIT_PER_MIN applied requests per user per minute (429), counted in the database
  so every process shares the limit; the count and the insert of the request's row (result "pending"
  until the action ends) are one serialised transaction per user, so parallel requests cannot all pass;
- one action per module at a time: a conditional UPDATE claims the ServiceControl row; a second
  action on the same module meanwhile is refused with 409 "another action is running" (the claim
  is not held inside a transaction, so a 15 s start never blocks the database).

Every action, plan and refusal ends in PowerAction.finish(), which stores the row and its evidence folder.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.fleet.models import MaintenanceWindow, Module
from vx11_site.permissions import MissingPermission, require

from . import backends
from .models import PowerAction, ServiceControl, WindowStop

log = logging.getLogger(__name__)

NEVER_STOP = ("madre", "tentaculo_link")
# mode -> the modules that run in it (None = every module); the others are stopped
MODES = {
    "low_power": ("madre", "tentaculo_link"),
    "operative_core": ("madre", "tentaculo_link", "switch", "spawner", "mcp"),
    "full": None,
}
PERMISSION = "power.control_services"


class Refused(Exception):
    """A guard said no: the HTTP status and the message the caller sees."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --- guards ---------------------------------------------------------------------------------


def check_permission(user, what: str) -> None:
    """The shared permission check (vx11_site.permissions), refusing as every power guard does: audited."""
    try:
        require(user, what, PERMISSION)
    except MissingPermission as exc:
        raise Refused(403, exc.message) from None


def check_allowed() -> None:
    if not settings.VX11_ALLOW_SERVICE_CONTROL:
        raise Refused(403, "service control is disabled on this portal (set VX11_ALLOW_SERVICE_CONTROL=1 to allow it)")


def check_never_stop(slug: str, action: str) -> None:
    if action == "stop" and slug in NEVER_STOP:
        raise Refused(403, f"{slug} cannot be stopped: {', '.join(NEVER_STOP)} always run")


def controllable(slug: str) -> ServiceControl:
    control = ServiceControl.objects.select_related("module").filter(module__slug=slug).first()
    if control is None:
        if Module.objects.filter(slug=slug).exists():
            raise Refused(
                404, f"service '{slug}' has no control backend configured (add a Service control in the admin)"
            )
        raise Refused(404, f"unknown service '{slug}': not a module of the fleet")
    return control


def modules_in_window(now: datetime) -> set[int]:
    """The ids of the modules some window covers at `now`, in one query (status and a mode ask for many modules)."""
    return set(MaintenanceWindow.active_at(now).filter(modules__isnull=False).values_list("modules__id", flat=True))


def check_windows(modules: list[Module]) -> None:
    if not settings.VX11_MAINTENANCE_WINDOW_ENABLED:
        return
    covered = modules_in_window(timezone.now())
    outside = [m.slug for m in modules if m.id not in covered]
    if outside:
        raise Refused(
            409,
            f"no open maintenance window covers {', '.join(outside)}; open one first "
            "(POST /madre/power/window/open), or set VX11_MAINTENANCE_WINDOW_ENABLED=0",
        )


RATE_LOCK = "vx11.power.rate"


def lock_user_rate(user) -> None:
    """Serialise count+insert of one user's applied requests until the transaction ends. PostgreSQL: a
    transaction-level advisory lock keyed by (the name, the user id). SQLite: IMMEDIATE transactions already do."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", [RATE_LOCK, user.pk])


def check_rate(user) -> None:
    limit = settings.VX11_POWER_RATE_LIMIT_PER_MIN
    since = timezone.now() - timedelta(minutes=1)
    done = PowerAction.objects.filter(user=user, applied=True, parent__isnull=True, at__gte=since).count()
    if done >= limit:
        raise Refused(
            429,
            f"rate limit: {done} applied power actions by '{user.username}' in the last minute (limit {limit}); "
            "wait and retry",
        )


def reserve_rate(user, row: PowerAction) -> None:
    """Count the user's applied requests of the last minute and, if under the limit, insert `row` as applied
    (result pending) in the same serialised transaction, so the next request counts it at once; finish()
    updates it when the action ends. A request running 30 s is counted from its start, not its end."""
    with transaction.atomic():
        lock_user_rate(user)
        check_rate(user)
        row.applied, row.result, row.http_status, row.message = True, PowerAction.Result.PENDING, 202, "running"
        row.save()


# --- what the endpoints and the checker call ---------------------------------------------------


def _actor(user, system: str | None) -> str:
    return system or getattr(user, "username", "") or "anonymous"


def perform(
    user, slug: str, action: str, apply: bool, *, system: str | None = None, parent: PowerAction | None = None
) -> PowerAction:
    """Plan or apply one action on one module, through every guard; always returns the audited row.

    `system` names a part of the portal acting on its own (the window checker): no permission,
    window or rate check then. `parent`: a mode change whose guards already ran for all its steps.
    """
    row = PowerAction(
        user=user if getattr(user, "pk", None) else None,
        actor=_actor(user, system),
        service=slug[:200],
        action=action,
        parent=parent,
        at=timezone.now(),
    )
    checked = system is not None or parent is not None
    try:
        if not checked:
            check_permission(user, f"{'applying' if apply else 'planning'} {action} {slug}")
        check_never_stop(slug, action)
        control = controllable(slug)
        row.plan = control.plan(action)
        if not apply:
            return row.finish(PowerAction.Result.OK, 200, f'plan only: send {{"apply": true}} to {action} {slug}')
        check_allowed()
        if not checked:
            check_windows([control.module])
            reserve_rate(user, row)
        if not control.claim(f"{action} by {row.actor}"):
            control.refresh_from_db(fields=["busy_since", "busy_with"])
            raise Refused(
                409,
                f"another action is running on {slug} ({control.busy_with}, since {control.busy_since:%H:%M:%S}); "
                "try again when it ends",
            )
    except Refused as refusal:
        row.applied = False  # a refusal (even after the rate reservation) did nothing and does not count
        return row.finish(PowerAction.Result.REFUSED, refusal.status, refusal.message)
    try:
        outcome = control.run(action)
    except Exception as exc:  # an unexpected failure is still an audited error, never a 500
        log.exception("power: %s %s failed", action, slug)
        outcome = backends.BackendResult(False, f"{action} {slug} failed: {exc}", [repr(exc)])
    finally:
        control.release()
    result = PowerAction.Result.OK if outcome.ok else PowerAction.Result.ERROR
    return row.finish(result, 200 if outcome.ok else 502, outcome.message, outcome.text, applied=True)


def refuse_request(user, action: str, service: str, plan: dict, status: int, message: str) -> PowerAction:
    """A write the API's auth refused before any guard ran (a read-only key, no or bad credentials), audited
    within the refusal caps (PowerAction.beyond_refusal_cap: beyond them the row is not saved)."""
    known = user if getattr(user, "pk", None) else None
    row = PowerAction(
        user=known,
        actor=_actor(known, None),
        service=(service or "-")[:200],
        action=(action or "-")[:20],
        plan=plan,
        at=timezone.now(),
    )
    return row.finish(PowerAction.Result.REFUSED, status, message)


def mode_plan(mode: str) -> list[dict]:
    wanted = MODES[mode]
    steps = []
    for control in (
        ServiceControl.objects.select_related("module").filter(module__enabled=True).order_by("module__slug")
    ):
        slug = control.slug
        steps.append(
            {"service": slug, "action": "start" if wanted is None or slug in wanted or slug in NEVER_STOP else "stop"}
        )
    return steps


def perform_mode(user, mode: str, apply: bool) -> PowerAction:
    """low_power / operative_core / full: start the mode's modules, stop the others, each step audited."""
    steps = mode_plan(mode)
    row = PowerAction(
        user=user if getattr(user, "pk", None) else None,
        actor=_actor(user, None),
        service=mode,
        action="mode",
        at=timezone.now(),
        plan={"mode": mode, "runs": MODES[mode] or "all", "steps": steps},
    )
    try:
        check_permission(user, f"{'applying' if apply else 'planning'} mode {mode}")
        if not apply:
            return row.finish(PowerAction.Result.OK, 200, f'plan only: send {{"apply": true}} to switch to {mode}')
        check_allowed()
        modules = {m.slug: m for m in Module.objects.filter(slug__in=[s["service"] for s in steps])}
        check_windows([modules[s["service"]] for s in steps])
        reserve_rate(user, row)
    except Refused as refusal:
        return row.finish(PowerAction.Result.REFUSED, refusal.status, refusal.message)
    done = [perform(user, s["service"], s["action"], True, parent=row) for s in steps]
    failed = [f"{d.service} ({d.message})" for d in done if d.result != PowerAction.Result.OK]
    if failed:
        return row.finish(
            PowerAction.Result.ERROR,
            502,
            f"mode {mode}: {len(failed)} of {len(done)} steps failed: {'; '.join(failed)}",
        )
    return row.finish(PowerAction.Result.OK, 200, f"mode {mode}: {len(done)} steps ok")


def window_dict(window: MaintenanceWindow | None) -> dict | None:
    if window is None:
        return None
    return {
        "id": window.id,
        "services": sorted(m.slug for m in window.modules.all()),
        "mode": window.mode,
        "opened_at": window.starts_at.isoformat(),
        "expires_at": window.ends_at.isoformat(),
        "reason": window.reason,
        "closed_at": window.closed_at.isoformat() if window.closed_at else None,
        "ttl_left_sec": max(0.0, round((window.ends_at - timezone.now()).total_seconds(), 1)),
    }


WINDOW_LOCK = "vx11.power.window"


def lock_window_opening() -> None:
    """Serialise window opening until the transaction ends, so two requests at once cannot both see no
    window and both open one. PostgreSQL: a transaction-level advisory lock (READ COMMITTED then sees the
    window the first one committed). SQLite: its IMMEDIATE transactions (settings) already serialise writers."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [WINDOW_LOCK])


def open_window(
    user, services: list[str], ttl_sec: int, mode: str, reason: str
) -> tuple[PowerAction, MaintenanceWindow | None]:
    row = PowerAction(
        user=user if getattr(user, "pk", None) else None,
        actor=_actor(user, None),
        service=",".join(services)[:200],
        action="window_open",
        at=timezone.now(),
        plan={"services": services, "ttl_sec": ttl_sec, "mode": mode, "reason": reason},
    )
    window = None
    try:
        check_permission(user, "opening a power window")
        modules = list(Module.objects.filter(slug__in=services))
        unknown = sorted(set(services) - {m.slug for m in modules})
        if unknown:
            raise Refused(422, f"not in the fleet: {', '.join(unknown)}")
        with transaction.atomic():
            lock_window_opening()
            current = MaintenanceWindow.open_power_window()
            if current is not None:
                raise Refused(
                    409,
                    f"power window #{current.id} is already open until {current.ends_at:%H:%M:%S} UTC; close it first",
                )
            now = timezone.now()
            window = MaintenanceWindow.objects.create(
                source=MaintenanceWindow.Source.POWER,
                mode=mode,
                starts_at=now,
                ends_at=now + timedelta(seconds=ttl_sec),
                reason=reason[:500],
                created_by=row.user,
            )
            window.modules.set(modules)
    except Refused as refusal:
        return row.finish(PowerAction.Result.REFUSED, refusal.status, refusal.message), None
    row.plan["window"] = window.id
    return row.finish(
        PowerAction.Result.OK, 200, f"power window #{window.id} open for {ttl_sec} s ({mode})", applied=True
    ), window


def close_window(user) -> tuple[PowerAction, MaintenanceWindow | None]:
    row = PowerAction(
        user=user if getattr(user, "pk", None) else None,
        actor=_actor(user, None),
        service="window",
        action="window_close",
        at=timezone.now(),
    )
    try:
        check_permission(user, "closing the power window")
        window = MaintenanceWindow.open_power_window()
        if window is None:
            raise Refused(404, "no power window is open")
        row.service = ",".join(sorted(m.slug for m in window.modules.all()))[:200] or "window"
        row.plan = {"window": window.id}
        MaintenanceWindow.objects.filter(pk=window.pk, closed_at__isnull=True).update(closed_at=row.at)
        window.refresh_from_db()
    except Refused as refusal:
        return row.finish(PowerAction.Result.REFUSED, refusal.status, refusal.message), None
    return row.finish(PowerAction.Result.OK, 200, f"power window #{window.id} closed", applied=True), window


def expire_windows(now: datetime | None = None, max_stops: int | None = None) -> list[PowerAction]:
    """The checker: stop the modules of every expired ttl power window, retrying refused or failed stops.

    Each (window, module) is a WindowStop row, claimed with a conditional UPDATE so that checkers running
    side by side never stop the same module twice; a window is marked handled when none is pending.
    `max_stops`: stop at most that many modules in this call (the Celery task stops one per tick, so its
    time limit is one stop's worst case whatever the number of modules).
    """
    now = now or timezone.now()
    due = MaintenanceWindow.objects.filter(
        source=MaintenanceWindow.Source.POWER,
        mode=MaintenanceWindow.Mode.TTL,
        closed_at__isnull=True,
        expired_handled_at__isnull=True,
        ends_at__lte=now,
    )
    actions = []
    for window in due.select_related("created_by").order_by("ends_at", "id"):
        WindowStop.objects.bulk_create(
            [
                WindowStop(window=window, module=m, retry_at=window.ends_at)
                for m in window.modules.exclude(slug__in=NEVER_STOP)
            ],
            ignore_conflicts=True,
        )
        pending = WindowStop.objects.filter(window=window, state=WindowStop.State.PENDING)
        for stop in pending.filter(retry_at__lte=now).select_related("module").order_by("retry_at", "module__slug"):
            if max_stops is not None and len(actions) >= max_stops:
                return actions
            if not stop.claim():
                continue  # another checker is stopping it
            action = perform(
                window.created_by,
                stop.module.slug,
                "stop",
                True,
                system=f"window #{window.id} expiry (try {stop.attempts + 1})",
            )
            actions.append(action)
            stop.attempts += 1
            stop.last_action = action
            if action.result == PowerAction.Result.OK:
                stop.state = WindowStop.State.DONE
            elif stop.attempts >= settings.VX11_POWER_WINDOW_STOP_ATTEMPTS:
                stop.state = WindowStop.State.GAVE_UP
                log.warning(
                    "power: window #%s: gave up stopping %s after %s tries: %s",
                    window.id,
                    stop.module.slug,
                    stop.attempts,
                    action.message,
                )
            else:
                stop.retry_at = timezone.now() + timedelta(seconds=settings.VX11_POWER_WINDOW_RETRY_SECONDS)
            stop.claimed_at = None
            stop.save(update_fields=["attempts", "last_action", "state", "retry_at", "claimed_at"])
        if not pending.exists():
            MaintenanceWindow.objects.filter(pk=window.pk, expired_handled_at__isnull=True).update(
                expired_handled_at=timezone.now()
            )
    return actions


def power_status() -> dict:
    """Every enabled module: its backend, whether it runs (compose and systemd are asked, side by side), its window."""
    controls = {c.module_id: c for c in ServiceControl.objects.select_related("module")}
    modules = list(Module.objects.filter(enabled=True))
    asked = [controls[m.id] for m in modules if m.id in controls]
    with ThreadPoolExecutor(max_workers=8) as pool:  # no database in there: subprocesses and /proc only
        states = dict(zip([c.module_id for c in asked], pool.map(ServiceControl.state, asked), strict=True))
    none = backends.ProcessState(None)
    now = timezone.now()
    in_window = modules_in_window(now)
    services = []
    for module in modules:
        control, state = controls.get(module.id), states.get(module.id, none)
        services.append(
            {
                "service": module.slug,
                "state": module.state,
                "controlled": control is not None,
                "backend": control.backend if control else None,
                "running": state.running,
                "backend_state": state.state or None,
                "error": state.error,
                "pid": control.pid if control else None,
                "busy": bool(control and control.busy_since),
                "in_window": module.id in in_window,
            }
        )
    return {
        "status": "ok",
        "service_control_allowed": settings.VX11_ALLOW_SERVICE_CONTROL,
        "window_required": settings.VX11_MAINTENANCE_WINDOW_ENABLED,
        "window": window_dict(MaintenanceWindow.open_power_window(now)),
        "modes": {m: list(s) if s else "all" for m, s in MODES.items()},
        "services": services,
    }
