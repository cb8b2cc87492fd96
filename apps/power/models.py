"""The power manager's rows: how a module is controlled, the action log, the stops owed at a window's expiry.

ServiceControl: one module's backend (process, compose, systemd), its pid and the one-action-at-a-time claim.
PowerAction: one request that asked for an action. WindowStop: one module a power window started, and its stop.
The guards and the actions over these rows are in apps.power.manager, the evidence folders in apps.power.evidence.

Every request that asks for an action - a plan, an applied action, a refusal - is a PowerAction
row and an evidence folder docs/audit/madre_power_<action>_<svc>_<YYYYmmddTHHMMSSZ>/ under
VX11_EVIDENCE_ROOT, as real madre writes them; refusals up to a cap a minute per user (and for anonymous
clients together), so a loop of refused requests cannot fill either (PowerAction.beyond_refusal_cap).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import ProtectedError, Q
from django.utils import timezone

from apps.events.models import publish
from apps.fleet.models import MaintenanceWindow, Module
from vx11_site import display
from vx11_site.db import prune_in_chunks

from . import backends
from .evidence import remove_evidence, write_evidence

log = logging.getLogger(__name__)

ACTIONS = ("start", "stop", "restart")
STEPPED = ("mode", "window_open", "window_close")  # actions carried out as steps, PowerAction rows of their own
TOKEN_ACTOR = "token"  # the actor of a request authenticated by the fleet token (X-VX11-Token) on madre's paths
MAX_STOP_GRACE = 300  # seconds: the longest SIGTERM -> SIGKILL grace a service control may set
# unauthenticated refusals audited per minute at most, all clients together; beyond, only logged
ANONYMOUS_AUDIT_PER_MIN = 60


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
        help_text="process: the argument list the portal runs as the service's process (no shell), "
        'e.g. ["/usr/bin/python3", "-m", "app", "--port", "8001"]',
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

    def state(self) -> backends.ProcessState:
        """Whether it runs, asking compose or systemd (a subprocess with a timeout) for those backends."""
        if self.backend == self.Backend.COMPOSE:
            return backends.compose_state(self.compose_service or self.slug)
        if self.backend == self.Backend.SYSTEMD:
            return backends.systemd_state(self.systemd_unit)
        running = self.running()
        return backends.ProcessState(running, f"pid {self.pid}" if running else "not running")

    def claim(self, what: str) -> bool:
        """Take the module for one action; False when another action holds it (a stale claim is taken over)."""
        now = timezone.now()
        stale = now - timedelta(seconds=settings.VX11_POWER_CLAIM_STALE_SECONDS)
        free = Q(busy_since__isnull=True) | Q(busy_since__lt=stale)
        return ServiceControl.objects.filter(free, pk=self.pk).update(busy_since=now, busy_with=what[:100]) == 1

    def release(self) -> None:
        ServiceControl.objects.filter(pk=self.pk).update(busy_since=None, busy_with="")

    def run(self, action: str) -> backends.BackendResult:
        """Do it, now (the guards and the claim are the caller's)."""
        if self.backend != self.Backend.PROCESS:
            return backends.run_argv(self.argv(action))
        health = self.module.health_url
        outcome = None
        if action in ("stop", "restart"):
            outcome = backends.process_stop(self.slug, self.command, self.pid, health, self.stop_grace_sec)
            self._record_pid(outcome.pid)
            if action == "stop" or not outcome.ok:
                return outcome
        started = backends.process_start(self.slug, self.command, self.pid, health)
        self._record_pid(started.pid)
        if outcome is not None:  # restart: both halves in the output and the steps
            started.output = outcome.output + started.output
            started.message = f"{outcome.message}; {started.message}"
            started.executed = outcome.executed + started.executed
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
    apply = models.BooleanField(
        default=True, help_text="the request asked to carry the action out (false: a plan only was asked for)"
    )
    applied = models.BooleanField(default=False, help_text="the action was carried out (not only planned, not refused)")
    executed = models.JSONField(
        default=list, blank=True, help_text="the steps the backend ran (madre's `executed`); empty for a plan"
    )
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
        help_text="the mode change, window opening or window closing this action is a step of",
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
        self,
        result: str,
        status: int,
        message: str,
        output: str = "",
        applied: bool | None = None,
        executed: list[dict] | None = None,
    ) -> PowerAction:
        """Fill in how it ended, save, write the evidence folder, announce an applied action."""
        if applied is not None:
            self.applied = applied
        if executed is not None:
            self.executed = executed
        self.result, self.http_status, self.message = result, status, message[:500]
        self.output = display.tail(output, backends.OUTPUT_TAIL)
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
        # a signed-in user (or the fleet token) acting themselves, not the window checker acting for its opener
        elif self.user_id is not None and self.actor in (self.user.username, TOKEN_ACTOR):
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

    @property
    def madre_status(self) -> str:
        """madre's word for how it ended: "ok" (done), "plan" (only planned), "error" (refused or failed)."""
        if self.result == self.Result.OK:
            return "ok" if self.apply else "plan"
        return "running" if self.result == self.Result.PENDING else "error"

    @property
    def timestamp(self) -> str:
        """When the answer was made, in UTC to the second, as madre stamps its answers (with an offset)."""
        ended = self.at + timedelta(milliseconds=self.duration_ms)
        return ended.astimezone(UTC).isoformat(timespec="seconds")

    def as_dict(self) -> dict:
        """The answer: madre's fields (status, service, action, apply, plan, executed, out_dir, timestamp; `mode`
        for a mode) and the portal's (id, applied, result, http_status, message, actor, at, duration_ms, output;
        `steps` for a mode or a window, whose `executed` is its steps' steps, each naming its service)."""
        data = {
            "id": self.id,
            "status": self.madre_status,
            "http_status": self.http_status,
            "service": self.service,
            "action": self.action,
            "apply": self.apply,
            "applied": self.applied,
            "result": self.result,
            "message": self.message,
            "plan": self.plan,
            "executed": self.executed,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "timestamp": self.timestamp,
            "duration_ms": self.duration_ms,
            "output": self.output,
            "out_dir": self.evidence_path,
        }
        if self.action in STEPPED:
            steps = [s.as_dict() for s in self.steps.order_by("id")]
            data["steps"] = steps
            data["executed"] = [{"service": s["service"], **ran} for s in steps for ran in s["executed"]]
        if self.action == "mode":
            data["mode"] = self.service
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
    """One module a power window started (it was not running when the window opened), and its stop.

    Only what the window started is ever stopped, so a module that already ran keeps running. The row is
    written, claimed, before the start; a start that fails deletes it (the backend leaves nothing running).
    A ttl window stops its modules when it is closed or expires; a hold window, and madre and tentaculo_link
    in any window, keep them running (state "kept"). A stop refused (the module busy with another action) or
    failing is tried again by the checker, VX11_POWER_WINDOW_STOP_ATTEMPTS times at most,
    VX11_POWER_WINDOW_RETRY_SECONDS apart; each try is an audited PowerAction (`last_action`). The window
    counts as handled once none is pending.
    """

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        DONE = "done", "stopped"
        GAVE_UP = "gave_up", "given up"
        KEPT = "kept", "kept running"

    window = models.ForeignKey(MaintenanceWindow, on_delete=models.CASCADE, related_name="+")
    module = models.ForeignKey(Module, on_delete=models.CASCADE, related_name="+")
    state = models.CharField(max_length=7, choices=State.choices, default=State.PENDING)
    started_at = models.DateTimeField(null=True, blank=True, help_text="the window's start of it succeeded then")
    start_action = models.ForeignKey(
        PowerAction, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="the start"
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    retry_at = models.DateTimeField(default=timezone.now, help_text="not tried again before this")
    claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="being started, or a checker is stopping it now (conditional UPDATE)"
    )
    last_action = models.ForeignKey(PowerAction, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["window", "module"], name="window_stop_once")]
        indexes = [
            # expire_windows: the pending stops whose retry time has come (WindowStop.prune goes by the window's end)
            models.Index(fields=["state", "retry_at"], name="window_stop_due"),
        ]

    def __str__(self) -> str:
        return f"window #{self.window_id}: started {self.module_id}, stop {self.state} ({self.attempts} tries)"

    def claim(self) -> bool:
        now = timezone.now()
        stale = now - timedelta(seconds=settings.VX11_POWER_CLAIM_STALE_SECONDS)
        free = Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale)
        return WindowStop.objects.filter(free, pk=self.pk, state=self.State.PENDING).update(claimed_at=now) == 1

    def record_start(self, action: PowerAction) -> bool:
        """The window's start of the module ended: started (the row stays, unclaimed) or not (the row goes)."""
        if action.result != PowerAction.Result.OK:
            self.delete()
            return False
        self.started_at, self.start_action, self.claimed_at = timezone.now(), action, None
        self.save(update_fields=["started_at", "start_action", "claimed_at"])
        return True

    def record_stop(self, action: PowerAction) -> None:
        """One try to stop it ended: stopped, given up after the last try, or due again after the retry delay."""
        self.attempts += 1
        self.last_action = action
        if action.result == PowerAction.Result.OK:
            self.state = self.State.DONE
        elif self.attempts >= settings.VX11_POWER_WINDOW_STOP_ATTEMPTS:
            self.state = self.State.GAVE_UP
            log.warning(
                "power: window #%s: gave up stopping %s after %s tries: %s",
                self.window_id,
                self.module.slug,
                self.attempts,
                action.message,
            )
        else:
            self.retry_at = timezone.now() + timedelta(seconds=settings.VX11_POWER_WINDOW_RETRY_SECONDS)
        self.claimed_at = None
        self.save(update_fields=["attempts", "last_action", "state", "retry_at", "claimed_at"])

    @classmethod
    def started_by(cls, window: MaintenanceWindow) -> list[str]:
        """The modules `window` started, by slug."""
        started = cls.objects.filter(window=window, started_at__isnull=False)
        return sorted(started.values_list("module__slug", flat=True))

    @classmethod
    def prune(cls, now: datetime | None = None) -> int:
        """Rows of windows that ended before VX11_POWER_ACTION_RETENTION_DAYS (their tries are pruned then too)."""
        now = now or timezone.now()
        cutoff = now - timedelta(days=settings.VX11_POWER_ACTION_RETENTION_DAYS)
        return prune_in_chunks(cls.objects.filter(window__ends_at__lt=cutoff))
