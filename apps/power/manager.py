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
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.fleet.models import MaintenanceWindow, Module
from vx11_site.permissions import FLEET_PRINCIPAL, MissingPermission, require

from . import backends
from .models import TOKEN_ACTOR, PowerAction, ServiceControl, WindowStop

log = logging.getLogger(__name__)

NEVER_STOP = ("madre", "tentaculo_link")
# mode -> the modules that run in it (None = every module); the others are stopped
MODES = {
    "low_power": ("madre", "tentaculo_link"),
    "operative_core": ("madre", "tentaculo_link", "switch", "spawner", "mcp"),
    "full": None,
}
PERMISSION = "power.control_services"


@dataclass(frozen=True)
class Policy:
    """The three switches the guards read. perform() takes one so a caller can check a guard under a policy of its
    own (apps.power.selfcheck) without touching django.conf.settings, which other threads and tasks share."""

    allow_control: bool
    windows: bool
    rate_limit: int

    @classmethod
    def current(cls) -> Policy:
        """The portal's settings: VX11_ALLOW_SERVICE_CONTROL, VX11_MAINTENANCE_WINDOW_ENABLED and
        VX11_POWER_RATE_LIMIT_PER_MIN, read now."""
        return cls(
            allow_control=settings.VX11_ALLOW_SERVICE_CONTROL,
            windows=settings.VX11_MAINTENANCE_WINDOW_ENABLED,
            rate_limit=settings.VX11_POWER_RATE_LIMIT_PER_MIN,
        )


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


def check_allowed(slug: str | None = None, policy: Policy | None = None) -> None:
    """Service control off refuses applying, first of the action's guards, as madre does for the services of its
    allowlist (the fleet's modules here); a name the fleet does not know is left to controllable()'s 404."""
    if (policy or Policy.current()).allow_control:
        return
    if slug is None or Module.objects.filter(slug=slug).exists():
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


def check_windows(modules: list[Module], policy: Policy | None = None) -> None:
    if not (policy or Policy.current()).windows:
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


def check_rate(user, policy: Policy | None = None) -> None:
    limit = (policy or Policy.current()).rate_limit
    since = timezone.now() - timedelta(minutes=1)
    done = PowerAction.objects.filter(user=user, applied=True, parent__isnull=True, at__gte=since).count()
    if done >= limit:
        raise Refused(
            429,
            f"rate limit: {done} applied power actions by '{user.username}' in the last minute (limit {limit}); "
            "wait and retry",
        )


def reserve_rate(user, row: PowerAction, policy: Policy | None = None) -> None:
    """Count the user's applied requests of the last minute and, if under the limit, insert `row` as applied
    (result pending) in the same serialised transaction, so the next request counts it at once; finish()
    updates it when the action ends. A request running 30 s is counted from its start, not its end."""
    with transaction.atomic():
        lock_user_rate(user)
        check_rate(user, policy)
        row.applied, row.result, row.http_status, row.message = True, PowerAction.Result.PENDING, 202, "running"
        row.save()


# --- what the endpoints and the checker call ---------------------------------------------------


def _actor(user, system: str | None) -> str:
    if system:
        return system
    if getattr(user, "username", "") == FLEET_PRINCIPAL:
        return TOKEN_ACTOR
    return getattr(user, "username", "") or "anonymous"


def perform(
    user,
    slug: str,
    action: str,
    apply: bool,
    *,
    system: str | None = None,
    parent: PowerAction | None = None,
    policy: Policy | None = None,
) -> PowerAction:
    """Plan or apply one action on one module, through every guard; always returns the audited row.

    `system` names a part of the portal acting on its own (the window checker): no permission,
    window or rate check then. `parent`: a mode change or a power window whose guards already ran for all its steps.
    `policy`: the switches the guards read instead of the settings (None: Policy.current()).
    """
    row = PowerAction(
        user=user if getattr(user, "pk", None) else None,
        actor=_actor(user, system),
        service=slug[:200],
        action=action,
        apply=apply,
        parent=parent,
        at=timezone.now(),
    )
    checked = system is not None or parent is not None
    try:
        if not checked:
            check_permission(user, f"{'applying' if apply else 'planning'} {action} {slug}")
        if apply:
            check_allowed(slug, policy)
        check_never_stop(slug, action)
        control = controllable(slug)
        row.plan = control.plan(action)
        if not apply:
            return row.finish(PowerAction.Result.OK, 200, f'plan only: send {{"apply": true}} to {action} {slug}')
        if not checked:
            check_windows([control.module], policy)
            reserve_rate(user, row, policy)
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
    return row.finish(
        result, 200 if outcome.ok else 502, outcome.message, outcome.text, applied=True, executed=outcome.executed
    )


def refuse_request(
    user, action: str, service: str, plan: dict, status: int, message: str, apply: bool = True
) -> PowerAction:
    """A write the API's auth refused before any guard ran (a read-only key, no or bad credentials, the fleet
    token without the power key), audited within the refusal caps (PowerAction.beyond_refusal_cap: beyond them
    the row is not saved). `apply`: whether the refused request asked to carry the action out."""
    known = user if getattr(user, "pk", None) else None
    row = PowerAction(
        user=known,
        actor=_actor(known, None),
        service=(service or "-")[:200],
        action=(action or "-")[:20],
        apply=apply,
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
        apply=apply,
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
        "services_started": WindowStop.started_by(window),
    }


def ttl_remaining_sec(window: MaintenanceWindow, now: datetime | None = None) -> int:
    return max(0, int((window.ends_at - (now or timezone.now())).total_seconds()))


def window_state(now: datetime | None = None) -> dict:
    """madre's GET /power/state: the open power window, or {"state": "closed"}."""
    window = MaintenanceWindow.open_power_window(now)
    if window is None:
        return {"state": "closed"}
    return {
        "state": "open",
        "window_id": window.id,
        "created_at": window.starts_at.isoformat(),
        "deadline": window.ends_at.isoformat(),
        "services": sorted(m.slug for m in window.modules.all()),
        "mode": window.mode,
        "ttl_remaining_sec": ttl_remaining_sec(window, now),
        "services_started": WindowStop.started_by(window),
    }


def step_failure(action: PowerAction) -> dict:
    return {"service": action.service, "reason": action.message, "action_id": action.id}


def summary(head: str, parts: dict[str, list]) -> str:
    """The message of a window's action row: the head, then each list that is not empty, by service."""
    named = {what: [p["service"] if isinstance(p, dict) else p for p in items] for what, items in parts.items()}
    return "; ".join([head] + [f"{what}: {', '.join(names)}" for what, names in named.items() if names])


@dataclass
class WindowOpened:
    """What opening a power window did, per service: started (the window stops these), already running
    (left alone), not startable (no control backend, service control off, its state unknown: not tried),
    start failed (tried: an audited step with its reason)."""

    action: PowerAction
    window: MaintenanceWindow | None = None
    started: list[str] = field(default_factory=list)
    already_running: list[str] = field(default_factory=list)
    not_startable: list[dict] = field(default_factory=list)
    start_failed: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        """madre's answer (window_id ... ttl_remaining_sec) and the portal's (window, the other lists); the
        action row's answer (PowerAction.as_dict: status, steps, executed, ...) goes beside it."""
        window = self.window
        assert window is not None, "a refused opening has no answer but its refusal"
        return {
            "window_id": window.id,
            "created_at": window.starts_at.isoformat(),
            "deadline": window.ends_at.isoformat(),
            "services_started": self.started,
            "state": "open",
            "ttl_remaining_sec": ttl_remaining_sec(window),
            "window": window_dict(window),
            "services_already_running": self.already_running,
            "services_not_startable": self.not_startable,
            "services_start_failed": self.start_failed,
        }


@dataclass
class WindowClosed:
    """What closing a power window did: stopped (what it had started, ttl mode), not stopped (a stop refused
    or failing, or the module busy: the checker tries again), left running (hold mode; madre, tentaculo_link)."""

    action: PowerAction
    window: MaintenanceWindow | None = None
    stopped: list[str] = field(default_factory=list)
    not_stopped: list[dict] = field(default_factory=list)
    left_running: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        window = self.window
        assert window is not None and window.closed_at is not None, "a refused closing has no answer but its refusal"
        return {
            "window_id": window.id,
            "closed_at": window.closed_at.isoformat(),
            "services_stopped": self.stopped,
            "state": "closed",
            "window": window_dict(window),
            "services_not_stopped": self.not_stopped,
            "services_left_running": self.left_running,
        }


WINDOW_LOCK = "vx11.power.window"


def lock_window_opening() -> None:
    """Serialise window opening until the transaction ends, so two requests at once cannot both see no
    window and both open one. PostgreSQL: a transaction-level advisory lock (READ COMMITTED then sees the
    window the first one committed). SQLite: its IMMEDIATE transactions (settings) already serialise writers."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [WINDOW_LOCK])


def sort_startable(modules: list[Module], outcome: WindowOpened) -> list[ServiceControl]:
    """The controls of the modules to start: those not running. The others go to `outcome`: already running,
    or not startable (no backend; service control off; the backend cannot tell whether it runs)."""
    controls = {c.module_id: c for c in ServiceControl.objects.select_related("module").filter(module__in=modules)}
    for module in modules:
        if module.id not in controls:
            reason = "no control backend configured (add a Service control in the admin)"
            outcome.not_startable.append({"service": module.slug, "reason": reason})
    asked = sorted(controls.values(), key=lambda c: c.slug)
    with ThreadPoolExecutor(max_workers=8) as pool:  # no database in there: subprocesses and /proc only
        states = list(pool.map(ServiceControl.state, asked))
    to_start = []
    for control, state in zip(asked, states, strict=True):
        if state.running:
            outcome.already_running.append(control.slug)
        elif state.running is None:
            reason = f"cannot tell whether it runs: {state.error or state.state}"
            outcome.not_startable.append({"service": control.slug, "reason": reason})
        elif not settings.VX11_ALLOW_SERVICE_CONTROL:
            reason = "service control is off on this portal (VX11_ALLOW_SERVICE_CONTROL)"
            outcome.not_startable.append({"service": control.slug, "reason": reason})
        else:
            to_start.append(control)
    outcome.not_startable.sort(key=lambda n: n["service"])
    return to_start


def open_window(user, services: list[str], ttl_sec: int, mode: str, reason: str) -> WindowOpened:
    """Open the one power window over `services` and start those not running, each start an audited step.

    Starting needs VX11_ALLOW_SERVICE_CONTROL like every applied action, but the window itself is a
    maintenance window (it mutes notifications), so with service control off it still opens and lists the
    modules it could not start. The window's own guards: the permission, the fleet (422), one at a time (409).
    """
    services = sorted(set(services))
    row = PowerAction(
        user=user if getattr(user, "pk", None) else None,
        actor=_actor(user, None),
        service=",".join(services)[:200],
        action="window_open",
        at=timezone.now(),
        plan={"services": services, "ttl_sec": ttl_sec, "mode": mode, "reason": reason},
    )
    outcome = WindowOpened(row)
    try:
        check_permission(user, "opening a power window")
        modules = list(Module.objects.filter(slug__in=services).order_by("slug"))
        unknown = sorted(set(services) - {m.slug for m in modules})
        if unknown:
            raise Refused(422, f"not in the fleet: {', '.join(unknown)}")
        to_start = sort_startable(modules, outcome)
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
            # claimed while starting, so a checker (a window shorter than its starts) waits for them
            stops = [
                WindowStop(
                    window=window,
                    module=control.module,
                    state=WindowStop.State.KEPT
                    if mode == MaintenanceWindow.Mode.HOLD or control.slug in NEVER_STOP
                    else WindowStop.State.PENDING,
                    retry_at=window.ends_at,
                    claimed_at=now,
                )
                for control in to_start
            ]
            WindowStop.objects.bulk_create(stops)
            row.plan["window"] = window.id
            row.applied, row.result, row.http_status, row.message = True, PowerAction.Result.PENDING, 202, "starting"
            row.save()
    except Refused as refusal:
        outcome.action = row.finish(PowerAction.Result.REFUSED, refusal.status, refusal.message)
        return outcome
    outcome.window = window
    for stop in WindowStop.objects.filter(window=window).select_related("module").order_by("module__slug"):
        step = perform(user, stop.module.slug, "start", True, parent=row)
        if stop.record_start(step):
            outcome.started.append(step.service)
        else:
            outcome.start_failed.append(step_failure(step))
    said = summary(
        f"power window #{window.id} open for {ttl_sec} s ({mode})",
        {"started": outcome.started, "start failed": outcome.start_failed, "not startable": outcome.not_startable},
    )
    outcome.action = row.finish(PowerAction.Result.OK, 200, said, applied=True)
    return outcome


def stop_started(user, stop: WindowStop, *, system: str | None, parent: PowerAction | None) -> PowerAction:
    """One try to stop a module a window started (the caller claimed `stop`), recorded on the row."""
    action = perform(user, stop.module.slug, "stop", True, system=system, parent=parent)
    stop.record_stop(action)
    return action


def mark_handled(window: MaintenanceWindow) -> None:
    """No stop of `window` pending any more: the checker leaves it alone from now on."""
    if not WindowStop.objects.filter(window=window, state=WindowStop.State.PENDING).exists():
        MaintenanceWindow.objects.filter(pk=window.pk, expired_handled_at__isnull=True).update(
            expired_handled_at=timezone.now()
        )


def close_window(user) -> WindowClosed:
    """Close the open power window; in ttl mode stop what it started (each stop an audited step), in hold mode
    leave it running. A stop that fails or finds the module busy stays pending for the checker."""
    row = PowerAction(
        user=user if getattr(user, "pk", None) else None,
        actor=_actor(user, None),
        service="window",
        action="window_close",
        at=timezone.now(),
    )
    outcome = WindowClosed(row)
    try:
        check_permission(user, "closing the power window")
        window = MaintenanceWindow.open_power_window()
        if window is None:
            raise Refused(404, "no power window is open")
        row.service = ",".join(sorted(m.slug for m in window.modules.all()))[:200] or "window"
        row.plan = {"window": window.id}
        with transaction.atomic():
            if not MaintenanceWindow.objects.filter(pk=window.pk, closed_at__isnull=True).update(closed_at=row.at):
                raise Refused(404, "no power window is open")  # another request closed it meanwhile
            row.applied, row.result, row.http_status, row.message = True, PowerAction.Result.PENDING, 202, "stopping"
            row.save()
        window.refresh_from_db()
    except Refused as refusal:
        outcome.action = row.finish(PowerAction.Result.REFUSED, refusal.status, refusal.message)
        return outcome
    outcome.window = window
    stops = WindowStop.objects.filter(window=window).select_related("module")
    kept = stops.filter(state=WindowStop.State.KEPT, started_at__isnull=False)
    outcome.left_running = sorted(s.module.slug for s in kept)
    pending = stops.filter(state=WindowStop.State.PENDING)
    pending.filter(retry_at__gt=row.at).update(retry_at=row.at)  # due now for the checker too
    for stop in pending.order_by("module__slug"):
        if not stop.claim():
            reason = "busy (still starting, or another request is stopping it): the window checker stops it"
            outcome.not_stopped.append({"service": stop.module.slug, "reason": reason, "action_id": None})
            continue
        step = stop_started(user, stop, system=None, parent=row)
        if step.result == PowerAction.Result.OK:
            outcome.stopped.append(step.service)
        else:
            outcome.not_stopped.append(step_failure(step))
    mark_handled(window)
    said = summary(
        f"power window #{window.id} closed",
        {"stopped": outcome.stopped, "not stopped": outcome.not_stopped, "left running": outcome.left_running},
    )
    outcome.action = row.finish(PowerAction.Result.OK, 200, said, applied=True)
    return outcome


def expire_windows(now: datetime | None = None, max_stops: int | None = None) -> list[PowerAction]:
    """The checker: stop what each ttl power window started once it expired, or was closed with stops left
    pending (refused, failed, or still starting then), retrying refused or failed stops.

    Each stop is a WindowStop row, claimed with a conditional UPDATE so that checkers running side by side
    (and a close) never stop the same module twice; a window is marked handled when none is pending.
    `max_stops`: stop at most that many modules in this call (the Celery task stops one per tick, so its
    time limit is one stop's worst case whatever the number of modules).
    """
    now = now or timezone.now()
    due = MaintenanceWindow.objects.filter(
        Q(ends_at__lte=now) | Q(closed_at__lte=now),
        source=MaintenanceWindow.Source.POWER,
        mode=MaintenanceWindow.Mode.TTL,
        expired_handled_at__isnull=True,
    )
    actions: list[PowerAction] = []
    for window in due.select_related("created_by").order_by("ends_at", "id"):
        pending = WindowStop.objects.filter(window=window, state=WindowStop.State.PENDING)
        for stop in pending.filter(retry_at__lte=now).select_related("module").order_by("retry_at", "module__slug"):
            if max_stops is not None and len(actions) >= max_stops:
                return actions
            if not stop.claim():
                continue  # being started, or another checker is stopping it
            how = "close" if window.closed_at else "expiry"
            system = f"window #{window.id} {how} (try {stop.attempts + 1})"
            actions.append(stop_started(window.created_by, stop, system=system, parent=None))
        mark_handled(window)
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
