"""Every periodic task the portal ships, in one table, and the post_migrate handler that stores them.

A schedule is a django-celery-beat `PeriodicTask` row: the DatabaseScheduler reads it, and an operator edits
it in the admin under *Periodic tasks*. After every `migrate` (and every `flush`, which sends post_migrate
too) `ensure_schedules` creates the entries of SCHEDULES that are missing. On an entry that exists it sets
only what the portal owns, what the entry runs (`task`, `args`, `kwargs`) and its `description`: when it
runs (the interval or crontab, `enabled`, the expiry) is the operator's, so an interval setting such as
VX11_PROBE_INTERVAL_SECONDS counts when the entry is created, and the row in the admin is the schedule
after that. An entry deleted in the admin comes back at the next migrate: disable it instead.

vx11_site.apps connects `on_post_migrate` once, for the django_celery_beat app (see there why that app).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from django.apps import apps as global_apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, router, transaction
from django.utils import timezone


@dataclass(frozen=True)
class Crontab:
    """A crontab schedule, field by field as django-celery-beat's CrontabSchedule stores it."""

    minute: str = "*"
    hour: str = "*"
    day_of_week: str = "*"
    day_of_month: str = "*"
    month_of_year: str = "*"


@dataclass(frozen=True)
class Schedule:
    """One beat entry: an interval (`every` `period`s, or `setting` seconds) or a `crontab`, never both."""

    name: str  # PeriodicTask.name, unique: how the handler finds the row again
    task: str  # the Celery task name the entry sends
    description: str
    every: int = 0
    period: str = "seconds"
    setting: str = ""  # a setting holding the interval in seconds; it wins over `every`
    crontab: Crontab | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    args: tuple[Any, ...] = ()
    min_expire_seconds: int | None = None

    def __post_init__(self) -> None:
        if (self.crontab is None) == (not self.every and not self.setting):
            raise ValueError(f"schedule {self.name!r}: give an interval or a crontab, not both nor neither")

    def interval(self) -> tuple[int, str]:
        """(every, period) of an interval entry, with the setting read now."""
        if self.setting:
            return int(getattr(settings, self.setting)), "seconds"
        return self.every, self.period

    def owned(self) -> dict[str, Any]:
        """The PeriodicTask fields the portal keeps as this table says, on every migrate."""
        return {
            "task": self.task,
            "args": json.dumps(list(self.args)),
            "kwargs": json.dumps(self.kwargs),
            "description": self.description,
        }

    def expire_seconds(self) -> int | None:
        """A message beat sent and no worker took expires after max(min_expire_seconds, the interval)."""
        if self.min_expire_seconds is None or self.crontab is not None:
            return self.min_expire_seconds
        every, period = self.interval()
        return max(self.min_expire_seconds, math.ceil(timedelta(**{period: every}).total_seconds()))


def run_flow(name: str) -> Schedule:
    return Schedule(
        name=f"flows: run flow {name}",
        task="apps.flows.tasks.run_flow",
        setting="VX11_FLOW_INTERVAL_SECONDS",
        kwargs={"name": name},
        description=f"Runs E2E flow {name}; its result feeds contract_coherence_pct.",
        min_expire_seconds=30,
    )


SCHEDULES: tuple[Schedule, ...] = (
    Schedule(
        name="fleet: probe round (whole fleet)",
        task="apps.fleet.tasks.probe_fleet",
        setting="VX11_PROBE_INTERVAL_SECONDS",
        description="Probes every enabled module concurrently, one round per tick.",
        min_expire_seconds=5,
    ),
    Schedule(
        name="fleet: rollups, uptime and pruning",
        task="apps.fleet.tasks.maintain_fleet_history",
        every=60,
        description="Rolls raw checks up per minute/hour/day, refreshes uptime, prunes in chunks.",
    ),
    Schedule(
        name="fleet: send notifications",
        task="apps.fleet.tasks.send_notifications",
        every=10,
        description="Claims new state changes, creates one delivery per channel (muted inside a "
        "maintenance window), sends due webhooks and e-mails with backoff.",
        min_expire_seconds=10,
    ),
    Schedule(
        name="events: prune stored events",
        task="apps.events.tasks.prune_events",
        every=3600,
        description="Deletes stored events older than VX11_EVENT_RETENTION_HOURS, in chunks.",
    ),
    Schedule(
        name="events: relay unsent events",
        task="apps.events.tasks.relay_events",
        every=5,
        description="Sends stored events the channel layer did not take when they were published "
        "(the layer was down, or the publisher ended first), oldest first.",
    ),
    Schedule(
        name="daughters: reaper (TTL, heartbeats, retries)",
        task="apps.daughters.tasks.reap_daughters",
        setting="VX11_DAUGHTER_REAP_INTERVAL",
        description="Marks daughters past their TTL expired, retries or fails those without a heartbeat, "
        "requeues lost dispatches and prunes old finished tasks.",
        min_expire_seconds=5,
    ),
    Schedule(
        name="power: expire ttl windows",
        task="apps.power.tasks.check_power_windows",
        setting="VX11_POWER_WINDOW_CHECK_SECONDS",
        description="Stops the modules of a ttl power window when it expires (madre checks every 1 s).",
        min_expire_seconds=2,
    ),
    Schedule(
        name="power: prune the action log",
        task="apps.power.tasks.prune_power_actions",
        every=3600,
        description="Deletes power actions older than VX11_POWER_ACTION_RETENTION_DAYS, in chunks.",
    ),
    # one entry per canonical flow (apps.flows.spec.CANONICAL); a flow loaded later with `vx11 flow load`
    # gets no entry of its own: an operator adds one in the admin
    run_flow("A"),
    run_flow("B"),
    run_flow("C"),
    Schedule(
        name="flows: prune old runs",
        task="apps.flows.tasks.prune_flow_runs",
        every=1,
        period="days",
        description="Deletes flow runs older than VX11_FLOW_RUN_RETENTION_DAYS, in chunks.",
    ),
    Schedule(
        name="flows: sweep interrupted runs",
        task="apps.flows.tasks.sweep_stale_runs",
        every=30,
        description="Fails flow runs still queued or running past VX11_FLOW_RUN_STALE_SECONDS (or twice the "
        "flow's longest wait), and running runs without a heartbeat for VX11_FLOW_RUN_SILENT_SECONDS; their "
        "unreached steps are stored as skipped.",
    ),
    Schedule(
        name="evidence: verify recent bags",
        task="apps.evidence.tasks.verify_recent_evidence",
        crontab=Crontab(minute="30", hour="3"),
        description="Re-hashes the evidence bags of the last VX11_EVIDENCE_ARCHIVE_DAYS and every flagged one; a "
        "bag found modified, missing a file or with an extra one stays flagged until an operator re-seals it.",
    ),
    Schedule(
        name="evidence: rotate old bags",
        task="apps.evidence.tasks.rotate_evidence",
        crontab=Crontab(minute="15", hour="4"),
        description="Moves evidence bags older than VX11_EVIDENCE_ARCHIVE_DAYS into docs/audit/archive/ and deletes "
        "those older than VX11_EVIDENCE_DELETE_DAYS; never anything under a forensic folder.",
    ),
    Schedule(
        name="audits: nightly audit",
        task="apps.audits.tasks.nightly_audit",
        crontab=Crontab(minute="0", hour="3"),
        kwargs={"kind": "all"},
        description="Audits the fleet's database (quick_check, integrity_check, foreign_key_check, counts, the DB "
        "map), the managed tree and its git state, with an evidence bag; then prunes runs older than "
        "VX11_AUDIT_RETENTION_DAYS and ends runs left unfinished.",
    ),
    Schedule(
        name="metrics: hourly scorecard",
        task="apps.metrics.tasks.take_snapshot",
        every=3600,
        description="Computes every metric from the stored evidence into a scorecard (rows, an evidence bag, "
        "docs/audit/PERCENTAGES.json and SCORECARD.json) and announces it; then prunes scorecards older than "
        "VX11_METRICS_RETENTION_DAYS (the latest is kept).",
    ),
    Schedule(
        name="pipeline: nightly autonomy run",
        task="apps.pipeline.tasks.nightly_pipeline",
        crontab=Crontab(minute="30", hour="4"),
        description="Runs the seven phases (audit, cleanup, runner, madre guardrails, operator check, metrics, "
        "mirror) as one run with one evidence bag, unless a run is going.",
    ),
    Schedule(
        name="pipeline: sweep interrupted runs",
        task="apps.pipeline.tasks.sweep_pipeline_runs",
        every=60,
        description="Ends as interrupted the runs whose worker has been silent for VX11_PIPELINE_SILENT_SECONDS "
        "(the running phase failed, the rest skipped); prunes runs older than VX11_PIPELINE_RETENTION_DAYS.",
    ),
)


def ensure_schedules(
    apps=global_apps, using: str = DEFAULT_DB_ALIAS, table: tuple[Schedule, ...] = SCHEDULES
) -> dict[str, list[str]]:
    """Create the missing entries of `table`; on the others set only the fields the portal owns.

    `apps` is the app registry to take the models from: post_migrate gives the migrated state's, so this
    works whatever code the models have. Returns the names created and updated.
    """
    try:
        PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
        PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
        IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
        CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    except LookupError:  # django_celery_beat migrated back to zero: no table to write to
        return {"created": [], "updated": []}
    if not router.allow_migrate_model(using, PeriodicTask):
        return {"created": [], "updated": []}

    tasks = PeriodicTask.objects.using(using)
    created, updated = [], []
    with transaction.atomic(using=using):
        existing = {row.name: row for row in tasks.filter(name__in=[entry.name for entry in table])}
        for entry in table:
            row = existing.get(entry.name)
            if row is None:
                if entry.crontab is None:
                    every, period = entry.interval()
                    when = {"interval": _first_or_create(IntervalSchedule, using, every=every, period=period)}
                else:
                    # the timezone a new row gets (CELERY_TIMEZONE): a row of another timezone is another schedule
                    zone = CrontabSchedule._meta.get_field("timezone").get_default()
                    fields = {**asdict(entry.crontab), "timezone": zone}
                    when = {"crontab": _first_or_create(CrontabSchedule, using, **fields)}
                tasks.create(name=entry.name, expire_seconds=entry.expire_seconds(), **when, **entry.owned())
                created.append(entry.name)
                continue
            changed = {name: value for name, value in entry.owned().items() if getattr(row, name) != value}
            if changed:
                for name, value in changed.items():
                    setattr(row, name, value)
                row.save(update_fields=list(changed))
                updated.append(entry.name)
        if created or updated:
            # what PeriodicTasks.changed does on a save of the real model: a running beat reloads the schedule
            PeriodicTasks.objects.using(using).update_or_create(ident=1, defaults={"last_update": timezone.now()})
    return {"created": created, "updated": updated}


def _first_or_create(model, using: str, **fields):
    """The schedule row with these fields (the admin may hold duplicates: any of them does), else a new one."""
    return model.objects.using(using).filter(**fields).first() or model.objects.using(using).create(**fields)


def on_post_migrate(sender, using: str = DEFAULT_DB_ALIAS, apps=global_apps, **kwargs) -> None:
    """post_migrate receiver: `apps` is the migrated state (migrate) or the live registry (flush)."""
    ensure_schedules(apps, using)
