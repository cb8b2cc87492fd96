"""E2E flows: ordered steps that call modules or watch the database, their runs and step results.

A flow is stored in the ORM (editable in the admin, steps inline) and can be loaded from a YAML or
JSON file of the same shape as `Flow.to_spec()`; apps.flows.spec checks such a definition.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Count, Prefetch, Q
from django.utils import timezone

from apps.events.models import publish
from vx11_site.db import prune_in_chunks

from .spec import CANONICAL, DEFINITIONS, MAX_FILE_BYTES, NAME, check_references, check_spec, parse_file

log = logging.getLogger(__name__)


class Flow(models.Model):
    """An E2E flow (A, B, C...): an ordered list of steps."""

    name = models.CharField(max_length=32, unique=True, help_text="short name used by the CLI and API, e.g. A")
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True, help_text="run on beat and counted in contract_coherence_pct")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("run_flow", "Can run a flow now (API, admin, CLI)")]

    def __str__(self) -> str:
        return f"{self.name}: {self.title}" if self.title and self.title != self.name else self.name

    def clean(self):
        if not NAME.match(self.name or ""):
            raise ValidationError({"name": "1-32 letters, digits, _ or - (e.g. A)"})

    # definitions in and out

    def to_spec(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "enabled": self.enabled,
            "steps": [step.to_spec() for step in self.steps.all()],
        }

    @classmethod
    def save_spec(cls, spec, replace: bool = False) -> Flow:
        """Create (or with replace, overwrite) a flow from a definition; ValidationError names the bad step."""
        clean = check_spec(spec)
        check_references(clean["steps"], clean["name"])
        with transaction.atomic():
            flow = cls.objects.select_for_update().filter(name=clean["name"]).first()
            if flow is not None and not replace:
                raise ValidationError(f"flow {clean['name']} already exists")
            flow = flow or cls(name=clean["name"])
            flow.title, flow.description, flow.enabled = clean["title"], clean["description"], clean["enabled"]
            flow.save()
            flow.steps.all().delete()
            Step.objects.bulk_create([Step(flow=flow, **Step.fields_from(s)) for s in clean["steps"]])
        return flow

    @classmethod
    def load_file(cls, path, replace: bool = False) -> Flow:
        """Create a flow from a YAML or JSON file (the shape of `to_spec()`)."""
        path = Path(path)
        if not path.is_file():
            raise ValidationError(f"no such file: {path}")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValidationError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
        return cls.save_spec(parse_file(path.read_text(), path.name), replace=replace)

    @classmethod
    def load_upload(cls, upload, replace: bool = False) -> Flow:
        """Create a flow from an uploaded YAML or JSON file (the admin's "Load from file")."""
        if upload.size > MAX_FILE_BYTES:
            raise ValidationError(f"{upload.name} is larger than {MAX_FILE_BYTES} bytes")
        try:
            text = upload.read().decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError(f"{upload.name} is not UTF-8 text") from None
        return cls.save_spec(parse_file(text, upload.name), replace=replace)

    def to_yaml(self) -> str:
        """The definition as a file `vx11 flow load` and "Load from file" read back."""
        import yaml

        return yaml.safe_dump(self.to_spec(), sort_keys=False, allow_unicode=True)

    @classmethod
    def load_canonical(cls) -> list[Flow]:
        """The canonical flows A, B, C from apps/flows/definitions/, where they are missing."""
        return [
            cls.load_file(DEFINITIONS / f"{name}.yaml")
            for name in CANONICAL
            if not cls.objects.filter(name=name).exists()
        ]

    # runs

    HISTORY = 20  # finished runs in a flow's pass/fail strip on the admin list

    def last_run(self) -> FlowRun | None:
        if hasattr(self, "recent_runs"):  # attached by summarised()
            return self.recent_runs[0] if self.recent_runs else None
        return self.runs.exclude(status__in=FlowRun.UNFINISHED).first()

    def history(self, limit: int = HISTORY) -> list[FlowRun]:
        """The latest finished runs, oldest first (the admin's pass/fail strip)."""
        if hasattr(self, "recent_runs") and limit <= self.HISTORY:
            return self.recent_runs[:limit][::-1]
        return list(self.runs.exclude(status__in=FlowRun.UNFINISHED)[:limit])[::-1]

    def step_count(self) -> int:
        return self.step_total if hasattr(self, "step_total") else self.steps.count()

    @classmethod
    def summarised(cls, queryset):
        """The flows with their step count and latest HISTORY finished runs (newest first) attached, in two
        queries however many flows a page holds (the admin list, the API list); last_run(), history() and
        step_count() read them."""
        finished = FlowRun.objects.exclude(status__in=FlowRun.UNFINISHED).order_by("-started_at", "-id")
        return (
            queryset.annotate(step_total=Count("steps"))
            .prefetch_related(Prefetch("runs", queryset=finished[: cls.HISTORY], to_attr="recent_runs"))
            .order_by(*cls._meta.ordering)
        )  # GROUP BY drops Meta.ordering

    def run(self, trigger: str = "api", user=None, on_step=None) -> FlowRun:
        """Run now, in this process; see apps.flows.runner."""
        from .runner import run_flow

        return run_flow(self, trigger=trigger, user=user, on_step=on_step)

    def queue(self, trigger: str = "api", user=None) -> FlowRun:
        """Store a queued run at once and hand it to a Celery worker (after commit); callers poll the row."""
        from .tasks import run_queued_flow

        run = FlowRun.objects.create(
            flow=self,
            status=FlowRun.Status.QUEUED,
            trigger=trigger,
            triggered_by=user if getattr(user, "pk", None) else None,
        )

        def send():
            try:
                run_queued_flow.delay(run.id)
            except Exception as exc:  # the broker is unreachable: say so on the run now, not after the sweep
                log.warning("flow %s run %s could not be queued: %s", self.name, run.id, exc)
                FlowRun.objects.filter(pk=run.id, status=FlowRun.Status.QUEUED).update(
                    status=FlowRun.Status.FAILED,
                    finished_at=timezone.now(),
                    reason=f"could not be queued: the Celery broker is unreachable ({exc})"[:1000],
                )
                run.refresh_from_db()

        transaction.on_commit(send)
        return run

    def longest_seconds(self) -> float:
        """The most its steps may wait in all: each HTTP step's timeout, each DB step's `within` (both capped
        at VX11_FLOW_MAX_WAIT_SECONDS), a spawn at most one HTTP timeout. A bound, not an estimate."""
        cap, http = settings.VX11_FLOW_MAX_WAIT_SECONDS, settings.VX11_FLOW_HTTP_TIMEOUT
        total = 0.0
        for step in self.steps.all():
            if step.kind == Step.Kind.HTTP:
                total += min(step.timeout or http, cap)
            elif step.kind == Step.Kind.DB:
                total += min(float(step.db.get("within") or 0), cap) + settings.VX11_FLOW_DB_POLL_SECONDS
            else:
                total += min(http, cap)
        return total

    @classmethod
    def contract_coherence_pct(cls):
        """passed / total over the latest run of each enabled flow, as last stored; "NV" before any run."""
        row = ContractCoherence.objects.first()
        return "NV" if row is None or row.pct is None else row.pct


class Step(models.Model):
    """One step of a flow. The kind decides which fields matter; `clean()` and the admin formset check them."""

    class Kind(models.TextChoices):
        HTTP = "http", "HTTP call to a module"
        DB = "db", "database rows appear"
        SPAWN = "spawn", "spawn a daughter"

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(help_text="1-based; later steps refer to it as {{ steps.N.name }}")
    name = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.HTTP)
    module = models.CharField(max_length=64, blank=True, help_text="http: module slug")
    method = models.CharField(max_length=8, default="GET", blank=True)
    path = models.CharField(max_length=500, blank=True, help_text="http: e.g. /madre/plans/{{ steps.2.plan_id }}")
    headers = models.JSONField(default=dict, blank=True)
    body = models.JSONField(null=True, blank=True, help_text="http: JSON body (templates allowed in strings)")
    timeout = models.FloatField(null=True, blank=True, help_text="http: seconds; empty = VX11_FLOW_HTTP_TIMEOUT")
    expect_status = models.PositiveSmallIntegerField(
        null=True, blank=True, default=200, help_text="http: empty = any status"
    )
    max_latency_ms = models.FloatField(null=True, blank=True)
    checks = models.JSONField(
        default=list,
        blank=True,
        help_text='http: [{"path": "$.status", "equals": "ok"}, ...]; ops: equals, exists, one_of, regex',
    )
    capture = models.JSONField(
        default=dict, blank=True, help_text='{"plan_id": "$.plan.plan_id"}; spawn steps always capture task_id'
    )
    db = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            'db: {"model": "daughters.Daughter", "filter": {...}, "expect": {...}, "fail_on": {...}, "within": 30}'
        ),
    )
    spawn = models.JSONField(
        default=dict, blank=True, help_text='spawn: {"kind": "http", "params": {...}, "ttl_seconds": 30}'
    )

    class Meta:
        ordering = ["flow", "position"]
        constraints = [models.UniqueConstraint(fields=["flow", "position"], name="flow_step_position")]

    def __str__(self) -> str:
        return f"{self.flow.name}.{self.position} {self.name}"

    @staticmethod
    def fields_from(step: dict) -> dict:
        """Model fields from one normalised step of check_spec()."""
        fields = {
            "position": step["position"],
            "name": step["name"],
            "kind": step["kind"],
            "capture": step["capture"],
            "module": "",
            "method": "GET",
            "path": "",
            "headers": {},
            "body": None,
            "timeout": None,
            "expect_status": None,
            "max_latency_ms": None,
            "checks": [],
            "db": {},
            "spawn": {},
        }
        if step["kind"] == "http":
            for key in (
                "module",
                "method",
                "path",
                "headers",
                "body",
                "timeout",
                "expect_status",
                "max_latency_ms",
                "checks",
            ):
                fields[key] = step[key]
        else:
            fields[step["kind"]] = step[step["kind"]]
        return fields

    def to_spec(self) -> dict:
        spec = {"name": self.name, "kind": self.kind}
        if self.kind == self.Kind.HTTP:
            expect = {"status": self.expect_status}
            if self.max_latency_ms is not None:
                expect["max_latency_ms"] = self.max_latency_ms
            if self.checks:
                expect["json"] = self.checks
            spec.update(module=self.module, method=self.method, path=self.path, expect=expect)
            if self.headers:
                spec["headers"] = self.headers
            if self.body is not None:
                spec["body"] = self.body
            if self.timeout is not None:
                spec["timeout"] = self.timeout
        else:
            spec[self.kind] = getattr(self, self.kind)
        if self.capture:
            spec["capture"] = self.capture
        return spec


class FlowRun(models.Model):
    """One run of a flow: when, who or what started it, the outcome and why."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        PASSED = "passed", "passed"
        FAILED = "failed", "failed"

    UNFINISHED = (Status.QUEUED, Status.RUNNING)

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING)
    trigger = models.CharField(max_length=16, help_text="beat, admin, api, cli, daughter")
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(
        default=timezone.now, help_text="when it started; for a queued run, when it was queued"
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    failed_step = models.PositiveSmallIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=1000, blank=True)
    captured = models.JSONField(default=dict, blank=True, help_text="values captured by each step, by step number")
    heartbeat_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="while it runs: its runner's last sign of life (every VX11_FLOW_RUN_HEARTBEAT_SECONDS)",
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            # a flow's runs newest first: admin strip, API /flows/{name}/runs, latest run per flow (coherence)
            models.Index(fields=["flow", "-started_at"], name="flowrun_flow_time"),
            # prune by age: FlowRun.prune()
            models.Index(fields=["started_at"], name="flowrun_time"),
            # unfinished runs by age: FlowRun.sweep_stale()
            models.Index(fields=["status", "started_at"], name="flowrun_status_time"),
        ]

    def __str__(self) -> str:
        return f"{self.flow.name} #{self.id} {self.status}"

    @property
    def passed(self) -> bool:
        return self.status == self.Status.PASSED

    @property
    def api_url(self) -> str:
        return f"/api/flow-runs/{self.id}"

    def summary(self) -> dict:
        return {
            "flow": self.flow.name,
            "run_id": self.id,
            "status": self.status,
            "trigger": self.trigger,
            "started_at": self.started_at.isoformat(),
            "duration_ms": self.duration_ms,
            "failed_step": self.failed_step,
            "reason": self.reason,
        }

    def announce(self) -> None:
        """status_changed on the bus when a run starts and ends."""
        publish("status_changed", {"source": "flows", **self.summary()})

    def beat(self) -> bool:
        """Its runner is alive: say so while the run is running; False once it ended or was swept."""
        return bool(FlowRun.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(heartbeat_at=timezone.now()))

    def end_on_error(self, exc: BaseException) -> bool:
        """The runner itself failed (not a step: the database, the process being stopped): end the run as failed now,
        with its unreached steps skipped, rather than leave it running until the sweep. False if it had ended."""
        reason = f"error: the runner stopped on {type(exc).__name__}: {exc}"[:1000]
        with transaction.atomic():
            ended = FlowRun.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(
                status=self.Status.FAILED, finished_at=timezone.now(), reason=reason
            )
            if ended:
                StepResult.skip_unreached([self.pk], "skipped: the run stopped on an error")
                self.refresh_from_db()
                self.announce()
        return bool(ended)

    @classmethod
    def stale_after(cls, flow: Flow) -> float:
        """Seconds after which an unfinished run of this flow cannot still be going: VX11_FLOW_RUN_STALE_SECONDS
        (default 1800, the Celery soft time limit of a flow task), or twice the flow's longest possible wait."""
        return max(float(settings.VX11_FLOW_RUN_STALE_SECONDS), 2 * flow.longest_seconds())

    @classmethod
    def sweep_stale(cls, now=None) -> int:
        """Fail runs still queued or running past stale_after() (their process died or no worker took them), and
        running runs without a heartbeat for VX11_FLOW_RUN_SILENT_SECONDS (their process is gone, whatever the
        bound): one conditional UPDATE per (status, bound), the steps they never reached stored as skipped.
        Returns how many runs were swept; safe to run from several workers at once."""
        now = now or timezone.now()
        silent = settings.VX11_FLOW_RUN_SILENT_SECONDS
        silent_before = now - timedelta(seconds=silent)
        unfinished = cls.objects.filter(status__in=cls.UNFINISHED)
        flows = Flow.objects.filter(id__in=unfinished.values("flow_id")).prefetch_related("steps")
        by_bound: dict[float, list[int]] = {}
        for flow in flows:
            by_bound.setdefault(cls.stale_after(flow), []).append(flow.id)
        swept: list[int] = []
        with transaction.atomic():
            for bound, flow_ids in by_bound.items():
                stale = unfinished.filter(flow_id__in=flow_ids, started_at__lt=now - timedelta(seconds=bound))
                for status, why in (
                    (cls.Status.QUEUED, f"queued over {bound:g} s ago and never started (is a Celery worker running?)"),
                    (cls.Status.RUNNING, f"no end recorded {bound:g} s after it started (its process died?)"),
                ):
                    ids = list(
                        stale.filter(status=status).select_for_update(skip_locked=True).values_list("id", flat=True)
                    )
                    if ids:
                        cls.objects.filter(id__in=ids, status=status).update(
                            status=cls.Status.FAILED, finished_at=now, reason=f"interrupted: {why}"
                        )
                        swept += ids
            silence = Q(heartbeat_at__lt=silent_before) | Q(heartbeat_at__isnull=True, started_at__lt=silent_before)
            ids = list(
                cls.objects.filter(silence, status=cls.Status.RUNNING)
                .select_for_update(skip_locked=True)
                .values_list("id", flat=True)
            )
            if ids:
                cls.objects.filter(id__in=ids, status=cls.Status.RUNNING).update(
                    status=cls.Status.FAILED,
                    finished_at=now,
                    reason=f"interrupted: no heartbeat for {silent} s (its process died?)",
                )
                swept += ids
            if swept:
                StepResult.skip_unreached(swept, "skipped: the run was interrupted")
                for run in cls.objects.filter(id__in=swept).select_related("flow"):
                    run.announce()
                ContractCoherence.recompute()
        return len(swept)

    @classmethod
    def prune(cls, now=None) -> int:
        """Delete runs (and, by cascade, their step results) past VX11_FLOW_RUN_RETENTION_DAYS, in chunks."""
        cutoff = (now or timezone.now()) - timedelta(days=settings.VX11_FLOW_RUN_RETENTION_DAYS)
        deleted = prune_in_chunks(StepResult.objects.filter(run__started_at__lt=cutoff))
        deleted += prune_in_chunks(cls.objects.filter(started_at__lt=cutoff))
        deleted += prune_in_chunks(ContractCoherence.objects.filter(computed_at__lt=cutoff))
        return deleted


class StepResult(models.Model):
    """What one step of one run did: the request, an excerpt of the response, how long, pass/fail and why."""

    class Status(models.TextChoices):
        PASSED = "passed", "passed"
        FAILED = "failed", "failed"
        SKIPPED = "skipped", "skipped"

    run = models.ForeignKey(FlowRun, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8)
    status = models.CharField(max_length=8, choices=Status.choices)
    reason = models.CharField(max_length=1000, blank=True)
    request = models.JSONField(
        default=dict, blank=True, help_text="method, URL, headers (secrets masked), body excerpt; or the DB query"
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True, help_text="at most VX11_FLOW_EXCERPT_CHARS characters")
    duration_ms = models.FloatField(null=True, blank=True)
    captured = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["run", "position"]

    def __str__(self) -> str:
        return f"{self.position}. {self.name}: {self.status}"

    @classmethod
    def skip_unreached(cls, run_ids: list[int], reason: str) -> None:
        """A skipped result for each step of these runs' flows that has no result yet (three queries in all)."""
        runs = dict(FlowRun.objects.filter(id__in=run_ids).values_list("id", "flow_id"))
        done = set(cls.objects.filter(run_id__in=run_ids).values_list("run_id", "position"))
        steps: dict[int, list] = {}
        for step in Step.objects.filter(flow_id__in=set(runs.values())):
            steps.setdefault(step.flow_id, []).append(step)
        cls.objects.bulk_create(
            [
                cls(
                    run_id=run_id,
                    position=step.position,
                    name=step.name,
                    kind=step.kind,
                    status=cls.Status.SKIPPED,
                    reason=reason,
                )
                for run_id, flow_id in runs.items()
                for step in steps.get(flow_id, [])
                if (run_id, step.position) not in done
            ]
        )


class ContractCoherence(models.Model):
    """contract_coherence_pct = passed / total over the latest run of each enabled flow, stored after
    every run so metrics read a number instead of re-deriving it."""

    computed_at = models.DateTimeField(default=timezone.now)
    passed = models.PositiveIntegerField()
    total = models.PositiveIntegerField()
    pct = models.FloatField(null=True, blank=True, help_text="0-100; empty (NV) when no enabled flow has run")
    detail = models.JSONField(default=dict, help_text="flow name -> status of its latest run")

    class Meta:
        ordering = ["-computed_at", "-id"]
        indexes = [models.Index(fields=["computed_at"], name="coherence_time")]  # latest row; prune by age

    def __str__(self) -> str:
        return f"{self.pct if self.pct is not None else 'NV'} % at {self.computed_at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def recompute(cls) -> ContractCoherence:
        detail = {}
        for flow in Flow.summarised(
            Flow.objects.filter(enabled=True)
        ):  # the latest runs in one query, not one per flow
            last = flow.last_run()
            if last is not None:
                detail[flow.name] = last.status
        passed = sum(status == FlowRun.Status.PASSED for status in detail.values())
        total = len(detail)
        return cls.objects.create(
            passed=passed, total=total, pct=round(100.0 * passed / total, 2) if total else None, detail=detail
        )
