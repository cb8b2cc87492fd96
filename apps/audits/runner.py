"""Runs an audit: the target's checks and counts, the DB map, the file tree and git checks, then its
findings, its map rows and its evidence bag.

    run_now(kind, ...)       a run in this process (CLI, tests, the nightly task)
    run_queued(run_id)       a run the API or the admin queued (apps.audits.tasks.run_audit)

What the audit reads is never written: the target is opened read-only (apps.audits.target), the tree and
git are only listed (apps.audits.fs, apps.audits.gitcheck). What it writes is the portal's own: the AuditRun
row with its Finding and MapTable rows, an evidence bag (apps.evidence.bags.write_bag) and, for a map, the
"latest" DB map files at the evidence root (write_latest).

Progress: every step (a check, a table counted, a table mapped) calls `on_progress(done, total, step)` (the
CLI's bar) and stores the run's progress, announced as `plan_updated` at most every 5 points; the start and
the end are `status_changed`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import checks, dbmap
from .models import AuditRun, Finding, MapTable
from .ownership import Owners
from .target import BUSY_TIMEOUT, BadTarget, check_sqlite_path, describe, hide_password, open_postgres, open_sqlite

log = logging.getLogger(__name__)

OnProgress = Callable[[int, int, str], None]
DB_KINDS = (AuditRun.Kind.DB, AuditRun.Kind.MAP, AuditRun.Kind.ALL)
ANNOUNCE_EVERY = 5.0  # progress points between two plan_updated events


class Progress:
    """Counts the steps of a run as they are planned and done."""

    def __init__(self, run: AuditRun, on_progress: OnProgress | None):
        self.run = run
        self.on_progress = on_progress
        self.total = 0
        self.done = 0
        self.announced = -ANNOUNCE_EVERY

    def plan(self, steps: int) -> None:
        self.total += steps
        if self.on_progress is not None:
            self.on_progress(self.done, self.total, "")

    def tick(self, step: str) -> None:
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done, self.total, step)
        progress = 100.0 * self.done / self.total if self.total else 0.0
        if progress - self.announced >= ANNOUNCE_EVERY or self.done == self.total:
            self.announced = progress
            self.run.report_progress(self.done, self.total, step)


class Audit:
    """The work of one run; collects findings and the result JSON, saved together at the end."""

    def __init__(
        self,
        run: AuditRun,
        target: str,
        timeout: float,
        busy_timeout: float,
        on_progress: OnProgress | None,
        now: datetime,
    ):
        self.run = run
        self.target = target
        self.timeout = timeout
        self.busy_timeout = busy_timeout
        self.progress = Progress(run, on_progress)
        self.now = now
        self.findings: list[Finding] = []
        self.map_rows: list[MapTable] = []
        self.result: dict = {"kind": run.kind, "approx": run.approx, "started_at": now.isoformat()}
        self.files: dict[str, str] = {}  # evidence payload
        self.latest: dict[str, str] = {}  # "latest" copies at the evidence root

    def find(self, check: str, severity: str, message: str, table: str = "", count=None, lines=None) -> None:
        self.findings.append(
            Finding(
                run=self.run,
                check_name=check,
                severity=severity,
                table=table[:255],
                message=message[:1000],
                count=count,
                lines=(lines or [])[: checks.MAX_LINES],
            )
        )

    # --- the database ---------------------------------------------------------------------------

    def database(self) -> None:
        self.progress.plan(1)
        with_map = self.run.has_map
        try:
            spec = describe(self.target)
        except BadTarget as bad:
            return self.bad_target(hide_password(self.target), bad)
        self.run.target = spec.shown[:500]
        self.result["target"] = {"kind": spec.kind, "database": spec.shown}
        try:
            if spec.kind == "sqlite":
                path = check_sqlite_path(spec.location)
                conn = open_sqlite(path, self.busy_timeout)
            else:
                conn = open_postgres(spec.location, self.timeout)
        except BadTarget as bad:
            return self.bad_target(spec.shown, bad, checks.PG_CHECKS if spec.kind == "postgresql" else None)
        self.progress.tick("target opened")
        try:
            if spec.kind == "sqlite":
                self.sqlite(conn, path, with_map)
            else:
                self.postgres(conn, with_map)
        finally:
            conn.close()

    def bad_target(self, shown: str, bad: BadTarget, names: tuple[str, ...] | None = None) -> None:
        self.run.target = shown[:500]
        self.result["target"] = {"database": shown, "problem": bad.reason, "message": str(bad)}
        self.result["checks"] = {
            name: {"NV": f"target not audited: {bad.reason}"} for name in (names or checks.SQLITE_CHECKS)
        }
        self.result["integrity"] = checks.NV
        self.find("target", Finding.Severity.ERROR, str(bad), lines=bad.lines)
        self.progress.tick("target refused")

    def sqlite(self, conn, path: Path, with_map: bool) -> None:
        try:
            tables = checks.sqlite_tables(conn)
        except Exception as exc:  # a lock taken between the open and this read, a damaged schema
            self.find("target", Finding.Severity.ERROR, f"the schema cannot be read: {exc}", lines=[str(exc)])
            self.result["integrity"] = checks.NV
            return
        self.progress.plan(len(checks.SQLITE_CHECKS) + len(tables) * (2 if with_map else 1))
        outcomes = checks.sqlite_checks(conn, self.timeout, self.progress.tick)
        counts = checks.sqlite_counts(conn, tables, self.run.approx, self.timeout, self.progress.tick)
        stats = checks.sqlite_stats(conn, path)
        schemas = {}
        if with_map:
            for table in tables:
                schemas[table] = dbmap.sqlite_schema(conn, table)
                self.progress.tick(f"schema of {table}")
        self.record_database(outcomes, counts, stats, schemas, with_map)

    def postgres(self, conn, with_map: bool) -> None:
        relations = checks.pg_tables(conn)
        self.progress.plan(2 + len(relations) + (1 if with_map else 0))
        outcomes = {"amcheck": checks.pg_amcheck(conn, self.timeout)}
        self.progress.tick("amcheck")
        outcomes["not_valid_foreign_keys"] = checks.pg_not_valid_foreign_keys(conn)
        self.progress.tick("not_valid_foreign_keys")
        counts = {}
        sizes = {}
        for schema, table, _oid, reltuples, size in relations:
            name = checks.pg_name(schema, table)
            counts[name] = checks.pg_count(conn, schema, table, reltuples, self.run.approx)
            sizes[name] = size
            self.progress.tick(f"rows of {name}")
        stats = {
            "size_bytes": conn.execute("SELECT pg_database_size(current_database())").fetchone()[0],
            "relation_bytes": sizes,
        }
        schemas = {}
        if with_map:
            schemas = checks_pg_schemas(conn, list(counts))
            self.progress.tick("schemas")
        self.record_database(outcomes, counts, stats, schemas, with_map)

    def record_database(self, outcomes: dict, counts: dict, stats: dict, schemas: dict, with_map: bool) -> None:
        integrity, skipped = dbmap.integrity_word(
            {name: outcome for name, outcome in outcomes.items() if name not in checks.ADVISORY}
        )
        self.result.update(
            {
                "checks": {name: outcome.as_json() for name, outcome in outcomes.items()},
                "check_seconds": {name: outcome.seconds for name, outcome in outcomes.items()},
                "integrity": integrity,
                "integrity_skipped": skipped,
                "integrity_timeout_secs": self.timeout,
                "stats": stats,
                "counts": {
                    "approximate": self.run.approx,
                    "total_rows": sum(c.rows or 0 for c in counts.values()),
                    "tables": {name: count.as_json() for name, count in counts.items()},
                },
            }
        )
        for outcome in outcomes.values():
            self.finding_of(outcome)
        for table, count in counts.items():
            if count.rows is None:
                self.find("counts", Finding.Severity.WARNING, f"{table}: {count.reason}", table=table)
        if with_map:
            self.database_map(counts, schemas, stats, integrity, skipped)

    def finding_of(self, outcome: checks.CheckOutcome) -> None:
        if outcome.state == checks.SKIPPED:
            self.find(outcome.name, Finding.Severity.WARNING, f"{outcome.name} {checks.SKIPPED}: {outcome.reason}")
        elif outcome.state == checks.NV:
            self.find(outcome.name, Finding.Severity.WARNING, f"{outcome.name} NV: {outcome.reason}")
        elif outcome.state == checks.FAILED and outcome.by_table:
            severity = Finding.Severity.WARNING if outcome.name == "not_valid_foreign_keys" else Finding.Severity.ERROR
            for table, count in outcome.by_table.items():
                lines = [line for line in outcome.lines if line.startswith(f"{table} ") or line.startswith(f"{table}:")]
                self.find(
                    outcome.name, severity, f"{outcome.name}: {count} row(s) of {table}", table, count, lines or None
                )
        elif outcome.state == checks.FAILED:
            first = outcome.lines[0] if outcome.lines else ""
            self.find(
                outcome.name,
                Finding.Severity.ERROR,
                # integrity_check and quick_check stop at 100 lines: 100 means at least 100
                f"{outcome.name} failed ({outcome.count}{'+' if outcome.count >= checks.MAX_LINES else ''} "
                f"line(s)): {first}",
                count=outcome.count,
                lines=outcome.lines,
            )

    def database_map(self, counts: dict, schemas: dict, stats: dict, integrity: str, skipped: int) -> None:
        owners = Owners.load()
        tables = [
            dbmap.map_entry(name, schemas.get(name, EMPTY_SCHEMA), counts[name], owners.owner(name))
            for name in sorted(counts)
        ]
        generated_at = self.now.isoformat()
        database = self.run.target
        pct = dbmap.assignment_pct(tables)
        previous = previous_map(self.run)
        diff = dbmap.diff_maps(
            None if previous is None else previous.map_tables.values_list("name", "module"),
            ((t["table"], t["module"] or "") for t in tables),
            previous_run=None if previous is None else previous.id,
        )
        self.run.diff = diff
        self.result["map"] = {
            "tables": len(tables),
            "owned": pct["owned"],
            "unowned": [t["table"] for t in tables if not t["module"]],
            "Orden_db_module_assignment_pct": pct["value"],
            **({"reason": pct["reason"]} if "reason" in pct else {}),
            "legacy": [t["table"] for t in tables if t["status"] == dbmap.LEGACY],
            "empty": [t["table"] for t in tables if t["status"] == dbmap.EMPTY],
        }
        unowned = self.result["map"]["unowned"]
        if unowned:
            self.find(
                "map",
                Finding.Severity.WARNING,
                f"{len(unowned)} table(s) without an owning module",
                count=len(unowned),
                lines=unowned,
            )
        self.map_rows = [
            MapTable(
                run=self.run,
                name=t["table"][:255],
                rows=t["rows"],
                rows_approx=t["rows_approximate"],
                status=t["status"],
                module=t["module"] or "",
                owner_source=t["owner_source"][:200],
                columns=t["columns"],
                foreign_keys=t["foreign_keys"],
                indexes=t["indexes"],
            )
            for t in tables
        ]
        files = {
            dbmap.SCHEMA_FILE: dbmap.schema_json(generated_at, database, tables),
            dbmap.MAP_FILE: dbmap.map_markdown(generated_at, database, tables, pct, integrity),
            dbmap.META_FILE: dbmap.meta_text(integrity, skipped, int(self.timeout), stats.get("size_bytes")),
        }
        self.files.update(files)
        self.files[dbmap.DIFF_FILE] = json.dumps(diff, indent=2)
        self.latest.update(files)

    # --- the tree and git -------------------------------------------------------------------------

    def tree(self) -> None:
        from .fs import check_fs

        self.progress.plan(1)
        found = check_fs(settings.VX11_ROOT, settings.VX11_FS_ALLOWED_ROOTS)
        self.result["fs"] = found
        for message in found.get("findings", []):
            self.find("fs", Finding.Severity.WARNING, message)
        self.files["fs_check.json"] = json.dumps(found, indent=2)
        self.progress.tick("fs")

    def git(self) -> None:
        from .gitcheck import check_git

        self.progress.plan(1)
        found = check_git(settings.VX11_ROOT)
        self.result["git"] = found
        if found.get("finding"):
            detail = found.get("detail") or ""
            self.find("git", Finding.Severity.WARNING, f"{found['finding']}" + (f": {detail}" if detail else ""))
        elif not found.get("clean", True):
            self.find(
                "git",
                Finding.Severity.WARNING,
                f"the checkout is not clean: {found.get('modified', 0)} modified, "
                f"{found.get('untracked', 0)} untracked",
            )
        self.files["git_check.json"] = json.dumps(found, indent=2)
        self.progress.tick("git")

    # --- the end -------------------------------------------------------------------------------------

    def evidence(self, ended: datetime) -> str:
        from apps.evidence.bags import write_bag, write_latest

        self.files["audit_result.json"] = json.dumps(self.result, indent=2, default=str)
        self.files["findings.json"] = json.dumps([f.as_dict() for f in self.findings], indent=2)
        info = {
            "target": self.run.target or str(settings.VX11_ROOT),
            "started_at": self.now.isoformat(),
            "finished_at": ended.isoformat(),
            "description": f"VX11 audit ({self.run.kind}) run #{self.run.id}",
        }
        bag = write_bag(f"audit_{self.run.kind}", "audit", self.files, info=info, run_id=str(self.run.id), now=ended)
        if self.latest:
            write_latest(self.latest)
        return str(bag.path)


EMPTY_SCHEMA = {"columns": [], "foreign_keys": [], "indexes": []}


def checks_pg_schemas(conn, names: list[str]) -> dict:
    found = dbmap.pg_schemas(conn)
    return {name: found.get(name, EMPTY_SCHEMA) for name in names}


def previous_map(run: AuditRun) -> AuditRun | None:
    """The last earlier run that mapped the same target."""
    return (
        AuditRun.objects.filter(target=run.target, id__lt=run.id, kind__in=(AuditRun.Kind.MAP, AuditRun.Kind.ALL))
        .filter(map_tables__isnull=False)
        .distinct()
        .order_by("-id")
        .first()
    )


def execute(
    run: AuditRun,
    *,
    target: str | None = None,
    timeout: float | None = None,
    busy_timeout: float = BUSY_TIMEOUT,
    on_progress: OnProgress | None = None,
    now: datetime | None = None,
) -> AuditRun:
    """Do the work of a running run and end it: ok, findings, or error (the audit itself could not finish)."""
    started = now or run.started_at or timezone.now()
    clock = time.monotonic()
    audit = Audit(
        run,
        target or settings.VX11_TARGET_DB,
        settings.VX11_AUDIT_INTEGRITY_TIMEOUT if timeout is None else timeout,
        busy_timeout,
        on_progress,
        started,
    )
    status, error = AuditRun.Status.OK, ""
    try:
        if run.kind in DB_KINDS:
            audit.database()
        if run.kind in (AuditRun.Kind.FS, AuditRun.Kind.ALL):
            audit.tree()
        if run.kind in (AuditRun.Kind.GIT, AuditRun.Kind.ALL):
            audit.git()
    except Exception as exc:  # our bug or the machine's: the run says so instead of staying "running"
        log.exception("audit run %s failed", run.id)
        status, error = AuditRun.Status.ERROR, f"{type(exc).__name__}: {exc}"
    ended = started + timedelta(seconds=time.monotonic() - clock) if now else timezone.now()
    audit.result["ended_at"] = ended.isoformat()
    audit.result["seconds"] = round(time.monotonic() - clock, 3)
    if status != AuditRun.Status.ERROR and any(f.severity != Finding.Severity.INFO for f in audit.findings):
        status = AuditRun.Status.FINDINGS
    if error:
        audit.result["error"] = error
    try:
        run.evidence_path = audit.evidence(ended)
    except Exception as exc:  # no bag: the run cannot prove itself, so it is not ok
        log.exception("audit run %s: evidence not written", run.id)
        status, error = AuditRun.Status.ERROR, (error + "; " if error else "") + f"evidence not written: {exc}"
    with transaction.atomic():
        Finding.objects.bulk_create(audit.findings)
        MapTable.objects.bulk_create(audit.map_rows)
        previous = run.status
        run.status, run.error, run.result, run.ended_at = status, error[:5000], audit.result, ended
        run.progress = 100.0 if status != AuditRun.Status.ERROR else run.progress
        run.save()
        run.announce(previous)
    return run


def run_now(
    kind: str,
    approx: bool = False,
    trigger: str = "cli",
    user=None,
    now: datetime | None = None,
    **options,
) -> AuditRun:
    """Run an audit here and now; `options` go to execute() (target, timeout, busy_timeout, on_progress)."""
    started = now or timezone.now()
    run = AuditRun.objects.create(
        kind=kind,
        approx=approx,
        trigger=trigger,
        actor=AuditRun._user(user),
        status=AuditRun.Status.QUEUED,
        created_at=started,
    )
    run.claim(now=started)
    return execute(run, now=now, **options)


def run_queued(run_id: int) -> AuditRun | None:
    """The worker's side of AuditRun.queue(): claim the run (one worker only) and do it."""
    run = AuditRun.objects.filter(pk=run_id).first()
    if run is None or not run.claim():
        return None
    return execute(run)
