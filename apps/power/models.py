"""The power manager: guarded start/stop/restart of fleet modules, modes, power windows, the action log.

Re-implements madre's power manager (REFERENCE.md section 2) with its guards enforced:
- VX11_ALLOW_SERVICE_CONTROL off refuses every applied action (403);
- madre and tentaculo_link are never stopped (403);
- VX11_MAINTENANCE_WINDOW_ENABLED on: an applied action needs a window covering the module (409);
- VX11_POWER_RATE_LIMIT_PER_MIN applied requests per user per minute (429), counted in the database
  so every process shares the limit; the count and the insert of the request's row (result "pending"
  until the action ends) are one serialised transaction per user, so parallel requests cannot all pass;
- one action per module at a time: a conditional UPDATE claims the ServiceControl row; a second
  action on the same module meanwhile is refused with 409 "another action is running" (the claim
  is not held inside a transaction, so a 15 s start never blocks the database).

Every request that asks for an action - a plan, an applied action, a refusal - is a PowerAction
row and an evidence folder docs/audit/madre_power_<action>_<svc>_<YYYYmmddTHHMMSSZ>/ under
VX11_EVIDENCE_ROOT, as real madre writes them; refusals up to a cap a minute per user (and for anonymous
clients together), so a loop of refused requests cannot fill either (PowerAction.beyond_refusal_cap).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import connection, models, transaction
from django.db.models import ProtectedError, Q
from django.utils import timezone

from apps.events.models import publish
from apps.fleet.models import MaintenanceWindow, Module
from vx11_site.db import prune_in_chunks
from vx11_site.permissions import MissingPermission, require

from . import backends

log = logging.getLogger(__name__)

ACTIONS = ("start", "stop", "restart")
NEVER_STOP = ("madre", "tentaculo_link")
MAX_STOP_GRACE = 300  # seconds: the longest SIGTERM -> SIGKILL grace a service control may set
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


def protect_running(collector, field, sub_objs, using) -> None:
    """ServiceControl.module's on_delete: CASCADE, unless the portal runs the module's process. Deleting the row
    would lose its pid and leave the process running with nothing to stop it, so the module's delete is refused
    (ProtectedError: 409 from the API, the admin's "cannot delete" page) until the process is stopped."""
    running = [control for control in sub_objs if control.running()]
    if running:
        raise ProtectedError(f"the power manager runs {', '.join(c.slug for c in running)}", running)
    models.CASCADE(collector, field, sub_objs, using)


def default_grace() -> float:
    return settings.VX11_POWER_STOP_GRACE


def validate_argv(value) -> None:
    if not isinstance(value, list) or not all(isinstance(a, str) and a for a in value):
        raise ValidationError('the command is a JSON list of strings, e.g. ["/usr/bin/python3", "-m", "app"]')


class ServiceControl(models.Model):
    """How the portal starts and stops one module; a module without one cannot be controlled."""

    class Backend(models.TextChoices):
        PROCESS = "process", "process (the portal runs the command)"
        COMPOSE = "compose", "docker compose"
        SYSTEMD = "systemd", "systemd unit"

    module = models.OneToOneField(Module, on_delete=protect_running, related_name="control")
    backend = models.CharField(max_length=7, choices=Backend.choices, default=Backend.COMPOSE)
    command = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_argv],
        help_text='process: the argument list, e.g. ["/usr/bin/python3", "-m", "apps.simfleet.serve_one", "madre", "--port", "8001"]',
    )
    compose_service = models.CharField(
        max_length=100, blank=True, help_text="compose: the service name (default: the module slug)"
    )
    systemd_unit = models.CharField(max_length=200, blank=True, help_text="systemd: the unit, e.g. vx11-madre.service")
    stop_grace_sec = models.FloatField(
        default=default_grace,
        validators=[MinValueValidator(0), MaxValueValidator(MAX_STOP_GRACE)],
        help_text="process: seconds between SIGTERM and SIGKILL",
    )
    pid = models.PositiveIntegerField(
        null=True, blank=True, editable=False, help_text="process: the pid the portal started"
    )
    pid_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    # the one-action-at-a-time claim (conditional UPDATE; see claim())
    busy_since = models.DateTimeField(null=True, blank=True, editable=False)
    busy_with = models.CharField(max_length=100, blank=True, editable=False)

    class Meta:
        ordering = ["module__port", "module__slug"]
        permissions = [("control_services", "Can start, stop and restart VX11 services and open power windows")]

    def __str__(self) -> str:
        return f"{self.module.slug} ({self.backend})"

    def clean(self) -> None:
        if self.backend == self.Backend.PROCESS and not self.command:
            raise ValidationError({"command": "the process backend needs a command (an argument list)"})
        if self.backend == self.Backend.SYSTEMD and not self.systemd_unit:
            raise ValidationError({"systemd_unit": "the systemd backend needs a unit name"})

    @property
    def slug(self) -> str:
        return self.module.slug

    @property
    def in_use(self) -> str:
        """Why the module may not be deleted while this runs (see protect_running)."""
        return (
            f"the power manager runs its process (pid {self.pid}); stop it first "
            f"(Power console, or POST /madre/power/service/{self.slug}/stop)"
        )

    def argv(self, action: str) -> list[str]:
        if self.backend == self.Backend.COMPOSE:
            return backends.compose_argv(self.compose_service or self.slug, action)
        if self.backend == self.Backend.SYSTEMD:
            return backends.systemd_argv(self.systemd_unit, action)
        return list(self.command)

    def plan(self, action: str) -> dict:
        """What `action` would do, step by step, without doing it."""
        if self.backend != self.Backend.PROCESS:
            steps = [" ".join(self.argv(action))]
        else:
            health, wait = self.module.health_url, settings.VX11_POWER_HEALTH_TIMEOUT
            stop = [
                f"SIGTERM the process group of pid {self.pid or '(none recorded)'}",
                f"SIGKILL after {self.stop_grace_sec:g} s",
                f"wait until {health} no longer answers (up to {wait:g} s)",
            ]
            start = [f"run {' '.join(self.command)}", f"wait until {health} answers (up to {wait:g} s)"]
            steps = {"start": start, "stop": stop, "restart": stop + start}[action]
        return {
            "service": self.slug,
            "action": action,
            "backend": self.backend,
            "steps": steps,
            "running": self.running(),
        }

    def running(self) -> bool | None:
        """Process backend: whether its process lives; other backends: None (not known without asking them)."""
        if self.backend != self.Backend.PROCESS:
            return None
        return backends.pid_alive(self.pid, self.command)

    def state(self) -> backends.State:
        """Whether it runs, asking compose or systemd (a subprocess with a timeout) for those backends."""
        if self.backend == self.Backend.COMPOSE:
            return backends.compose_state(self.compose_service or self.slug)
        if self.backend == self.Backend.SYSTEMD:
            return backends.systemd_state(self.systemd_unit)
        running = self.running()
        return backends.State(running, f"pid {self.pid}" if running else "not running")

    def claim(self, what: str) -> bool:
        """Take the module for one action; False when another action holds it (a stale claim is taken over)."""
        now = timezone.now()
        stale = now - timedelta(seconds=settings.VX11_POWER_CLAIM_STALE_SECONDS)
        free = Q(busy_since__isnull=True) | Q(busy_since__lt=stale)
        return ServiceControl.objects.filter(free, pk=self.pk).update(busy_since=now, busy_with=what[:100]) == 1

    def release(self) -> None:
        ServiceControl.objects.filter(pk=self.pk).update(busy_since=None, busy_with="")

    def run(self, action: str) -> backends.Outcome:
        """Do it, now (the guards and the claim are the caller's)."""
        if self.backend != self.Backend.PROCESS:
            return backends.run_command(self.argv(action))
        health = self.module.health_url
        outcome = None
        if action in ("stop", "restart"):
            outcome = backends.process_stop(self.slug, self.command, self.pid, health, self.stop_grace_sec)
            self._record_pid(outcome.pid)
            if action == "stop" or not outcome.ok:
                return outcome
        started = backends.process_start(self.slug, self.command, self.pid, health)
        self._record_pid(started.pid)
        if outcome is not None:  # restart: both halves in the output
            started.output = outcome.output + started.output
            started.message = f"{outcome.message}; {started.message}"
        return started

    def _record_pid(self, pid: int | None) -> None:
        if pid != self.pid:
            self.pid, self.pid_started_at = pid, (timezone.now() if pid else None)
            ServiceControl.objects.filter(pk=self.pk).update(pid=self.pid, pid_started_at=self.pid_started_at)


class PowerAction(models.Model):
    """One power request: who, when, what, the plan, whether it ran, and how it ended."""

    class Result(models.TextChoices):
        OK = "ok", "ok"
        REFUSED = "refused", "refused"
        ERROR = "error", "error"
        PENDING = "pending", "pending (running)"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=150, help_text="the user, or the system part that acted (window checker)")
    at = models.DateTimeField(default=timezone.now)
    service = models.CharField(
        max_length=200, help_text="the module; the mode for a mode change; the modules of a window"
    )
    action = models.CharField(max_length=20, help_text="start, stop, restart, mode, window_open, window_close")
    plan = models.JSONField(default=dict, blank=True)
    applied = models.BooleanField(default=False, help_text="the action was carried out (not only planned, not refused)")
    result = models.CharField(max_length=7, choices=Result.choices)
    http_status = models.PositiveSmallIntegerField()
    message = models.CharField(max_length=500)
    output = models.TextField(
        blank=True, help_text=f"the last {backends.OUTPUT_TAIL} characters; the evidence folder has it all"
    )
    duration_ms = models.FloatField(default=0)
    evidence_path = models.CharField(max_length=500, blank=True)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="steps",
        help_text="the mode change or window expiry this action is a step of",
    )

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # the per-user rate limit: applied top-level requests of a user in the last minute
            models.Index(fields=["user", "applied", "at"], name="power_action_rate"),
            # PowerAction.prune (age cut-off) and the admin list
            models.Index(fields=["at"], name="power_action_time"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.service}: {self.result}"

    def finish(
        self, result: str, status: int, message: str, output: str = "", applied: bool | None = None
    ) -> PowerAction:
        """Fill in how it ended, save, write the evidence folder, announce an applied action."""
        if applied is not None:
            self.applied = applied
        self.result, self.http_status, self.message = result, status, message[:500]
        self.output = backends.tail(output)
        self.duration_ms = round((timezone.now() - self.at).total_seconds() * 1000, 1)
        if self.pk is None and result == self.Result.REFUSED and self.beyond_refusal_cap():
            return self  # answered as any refusal, only not stored
        self.save()
        self.evidence_path = write_evidence(self, output)
        if self.evidence_path:
            PowerAction.objects.filter(pk=self.pk).update(evidence_path=self.evidence_path)
        if self.applied:
            try:
                publish("status_changed", self.event_data)
            except Exception:  # the bus being down must not turn a done action into a 500
                log.exception("power: could not announce action %s", self.pk)
        return self

    def beyond_refusal_cap(self) -> bool:
        """Refusals are audited up to a cap a minute - per signed-in user (VX11_POWER_REFUSAL_AUDIT_PER_MIN), for all
        anonymous clients together (ANONYMOUS_AUDIT_PER_MIN) - so a loop of refused writes cannot fill the table and
        the evidence root; beyond it they are logged. A mode's steps and the portal's own actions are never capped."""
        if self.parent_id is not None:
            return False
        refused = PowerAction.objects.filter(
            applied=False, result=self.Result.REFUSED, parent=None, at__gte=self.at - timedelta(minutes=1)
        )
        if self.user_id is None and self.actor == "anonymous":
            recent, limit = refused.filter(user=None, actor="anonymous").count(), ANONYMOUS_AUDIT_PER_MIN
        elif (
            self.user_id is not None and self.actor == self.user.username
        ):  # not the window checker acting for its opener
            recent, limit = refused.filter(user_id=self.user_id).count(), settings.VX11_POWER_REFUSAL_AUDIT_PER_MIN
        else:
            return False
        if recent < limit:
            return False
        log.warning(
            "power: not audited (%s refusals by %s in the last minute, cap %s): %s %s from %s: %s %s",
            recent,
            self.actor,
            limit,
            self.action,
            self.service,
            self.plan.get("remote_addr", "-"),
            self.http_status,
            self.message,
        )
        return True

    @property
    def event_data(self) -> dict:
        """What the bus is told: `module` for one module's action, `mode` or `services` otherwise."""
        data = {
            "power_action": self.action,
            "result": self.result,
            "message": self.message,
            "actor": self.actor,
            "action_id": self.id,
        }
        if self.action in ACTIONS:
            data["module"] = self.service
        elif self.action == "mode":
            data["mode"] = self.service
        else:
            data["services"] = [s for s in self.service.split(",") if s]
        return data

    def as_dict(self) -> dict:
        data = {
            "id": self.id,
            "service": self.service,
            "action": self.action,
            "applied": self.applied,
            "result": self.result,
            "status": self.http_status,
            "message": self.message,
            "plan": self.plan,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "duration_ms": self.duration_ms,
            "output": self.output,
            "out_dir": self.evidence_path,
        }
        if self.action == "mode":
            data["steps"] = [s.as_dict() for s in self.steps.order_by("id")]
        return data

    @classmethod
    def prune(cls, now: datetime | None = None) -> int:
        """Delete rows older than the retention, in chunks, and the evidence folder of each (a mode's steps too)."""
        now = now or timezone.now()
        old = cls.objects.filter(at__lt=now - timedelta(days=settings.VX11_POWER_ACTION_RETENTION_DAYS))

        def remove_folders(ids):
            doomed = cls.objects.filter(Q(id__in=ids) | Q(parent_id__in=ids))  # steps go with their mode (CASCADE)
            for path in doomed.exclude(evidence_path="").values_list("evidence_path", flat=True):
                remove_evidence(path)

        return prune_in_chunks(old, before_delete=remove_folders)


class WindowStop(models.Model):
    """One module to stop at a ttl power window's expiry, until it is stopped or given up.

    A stop refused (the module busy with another action) or failing is tried again on a later tick,
    VX11_POWER_WINDOW_STOP_ATTEMPTS times at most, VX11_POWER_WINDOW_RETRY_SECONDS apart; each try is
    an audited PowerAction (`last_action`). The window counts as handled once none is pending.
    """

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        DONE = "done", "stopped"
        GAVE_UP = "gave_up", "given up"

    window = models.ForeignKey(MaintenanceWindow, on_delete=models.CASCADE, related_name="+")
    module = models.ForeignKey(Module, on_delete=models.CASCADE, related_name="+")
    state = models.CharField(max_length=7, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    retry_at = models.DateTimeField(default=timezone.now, help_text="not tried again before this")
    claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="a checker is stopping it now (conditional UPDATE)"
    )
    last_action = models.ForeignKey(PowerAction, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["window", "module"], name="window_stop_once")]
        indexes = [
            # expire_windows: the pending stops whose retry time has come (WindowStop.prune goes by the window's end)
            models.Index(fields=["state", "retry_at"], name="window_stop_due"),
        ]

    def __str__(self) -> str:
        return f"window #{self.window_id}: stop {self.module_id} ({self.state}, {self.attempts} tries)"

    def claim(self) -> bool:
        now = timezone.now()
        stale = now - timedelta(seconds=settings.VX11_POWER_CLAIM_STALE_SECONDS)
        free = Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale)
        return WindowStop.objects.filter(free, pk=self.pk, state=self.State.PENDING).update(claimed_at=now) == 1

    @classmethod
    def prune(cls, now: datetime | None = None) -> int:
        """Rows of windows that ended before VX11_POWER_ACTION_RETENTION_DAYS (their tries are pruned then too)."""
        now = now or timezone.now()
        cutoff = now - timedelta(days=settings.VX11_POWER_ACTION_RETENTION_DAYS)
        return prune_in_chunks(cls.objects.filter(window__ends_at__lt=cutoff))


# --- evidence -------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def evidence_dir(action: str, service: str, at: datetime):
    """A new folder docs/audit/madre_power_<action>_<svc>_<stamp>[_n]/, confined to the evidence root."""
    audit = (settings.VX11_EVIDENCE_ROOT / "docs" / "audit").resolve()
    name = f"madre_power_{_UNSAFE.sub('-', action)}_{_UNSAFE.sub('-', service)[:80]}_{at:%Y%m%dT%H%M%SZ}"
    audit.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = (audit / (name if n == 1 else f"{name}_{n}")).resolve()
        if not folder.is_relative_to(audit):
            raise ValueError(f"evidence path escapes {audit}: {folder}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"too many evidence folders named {name}")


def remove_evidence(path: str) -> bool:
    """Delete one action's evidence folder, only if it is a madre_power_* folder right under
    <VX11_EVIDENCE_ROOT>/docs/audit/ and not a symlink; anything else is left alone (and logged)."""
    audit = (settings.VX11_EVIDENCE_ROOT / "docs" / "audit").resolve()
    folder = Path(path)
    try:
        if (
            not folder.is_absolute()
            or folder.is_symlink()
            or folder.resolve() != folder
            or folder.parent != audit
            or not folder.name.startswith("madre_power_")
        ):
            log.warning("power: not deleting %r: not an evidence folder under %s", path, audit)
            return False
        if not folder.is_dir():
            return False  # already gone
        shutil.rmtree(folder)  # never follows symlinks inside the folder
        return True
    except OSError as exc:
        log.warning("power: could not delete evidence folder %s: %s", path, exc)
        return False


def write_evidence(row: PowerAction, output: str) -> str:
    try:
        folder = evidence_dir(row.action, row.service, row.at.astimezone(UTC))
        result = {k: v for k, v in row.as_dict().items() if k not in ("plan", "output", "out_dir", "steps")}
        result["steps"] = list(row.steps.values_list("id", flat=True)) if row.action == "mode" else []
        (folder / "plan.json").write_text(json.dumps(row.plan, indent=2, default=str))
        (folder / "result.json").write_text(json.dumps(result, indent=2, default=str))
        (folder / "output.log").write_text(output + ("\n" if output else ""))
        return str(folder)
    except (OSError, ValueError) as exc:  # the action happened; a full disk must not hide that
        log.warning("power: no evidence folder for action %s: %s", row.pk, exc)
        return ""


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
            f"rate limit: {done} applied power actions by '{user.username}' in the last minute (limit {limit}); wait and retry",
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
                f"another action is running on {slug} ({control.busy_with}, since {control.busy_since:%H:%M:%S}); try again when it ends",
            )
    except Refused as refusal:
        row.applied = False  # a refusal (even after the rate reservation) did nothing and does not count
        return row.finish(PowerAction.Result.REFUSED, refusal.status, refusal.message)
    try:
        outcome = control.run(action)
    except Exception as exc:  # an unexpected failure is still an audited error, never a 500
        log.exception("power: %s %s failed", action, slug)
        outcome = backends.Outcome(False, f"{action} {slug} failed: {exc}", [repr(exc)])
    finally:
        control.release()
    result = PowerAction.Result.OK if outcome.ok else PowerAction.Result.ERROR
    return row.finish(result, 200 if outcome.ok else 502, outcome.message, outcome.text, applied=True)


ANONYMOUS_AUDIT_PER_MIN = (
    60  # unauthenticated refusals audited per minute at most, all clients together; beyond, only logged
)


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
        states = dict(zip([c.module_id for c in asked], pool.map(ServiceControl.state, asked)))
    none = backends.State(None)
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
