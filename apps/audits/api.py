"""Audits API: run an audit (queued, or waited for a bounded time), the runs with their findings, the latest
DB map, and the ownership rules. Reading needs any key; running needs audits.run_audit, and the rules their
model permissions."""

import time
from datetime import datetime
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, connection, transaction
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import paginate

from apps.fleet.models import Module
from vx11_site.api import Error, Id, Paged, Unavailable, filter_given, get_or_404, validation_detail
from vx11_site.permissions import require

from .models import AuditRun, MapTable, OwnershipRule

router = Router(tags=["audits"])

Kind = Literal["db", "map", "fs", "git", "all"]
POLL_SECONDS = 0.2


class RunIn(Schema):
    kind: Kind = Field("all", description="db: checks and counts; map: plus the DB map files; fs; git; all")
    approx: bool = Field(False, description="estimate row counts (sqlite_stat1, max(rowid), reltuples)")


class RunOut(Schema):
    id: int
    kind: str
    status: str
    progress: float
    step: str
    target: str
    approx: bool
    trigger: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    findings: int
    evidence_path: str
    url: str

    @staticmethod
    def resolve_findings(obj):
        return obj.findings.exclude(severity="info").count()

    @staticmethod
    def resolve_url(obj):
        return obj.api_url


class FindingOut(Schema):
    check: str = Field(..., alias="check_name")
    severity: str
    table: str
    message: str
    count: int | None
    lines: list[str]


class RunDetailOut(RunOut):
    error: str
    result: dict[str, Any]
    diff: dict[str, Any]
    all_findings: list[FindingOut]

    @staticmethod
    def resolve_all_findings(obj):
        return list(obj.findings.all())


class QueuedOut(Schema):
    id: int
    kind: str
    status: str
    url: str = Field(..., description="poll it: GET /api/audits/{id}")


class MapTableOut(Schema):
    table: str = Field(..., alias="name")
    module: str | None
    owner_source: str
    status: str
    rows: int | None
    rows_approximate: bool = Field(..., alias="rows_approx")
    columns: list[dict[str, Any]]
    foreign_keys: list[dict[str, Any]]
    indexes: list[dict[str, Any]]

    @staticmethod
    def resolve_module(obj):
        return obj.module or None


class MapOut(Schema):
    run_id: int
    generated_at: datetime | None
    database: str
    integrity: str
    Orden_db_module_assignment_pct: float | Literal["NV"]  # the real metric's name
    unowned: list[str]
    diff: dict[str, Any]
    tables: list[MapTableOut]


class RuleIn(Schema):
    module: str = Field(..., description="the owning module's slug")
    pattern: str = Field(..., min_length=1, max_length=255, description="a table name, or a prefix ending in *")
    note: str = Field("", max_length=300)


class RuleOut(Schema):
    id: int
    module: str
    pattern: str
    note: str
    created_at: datetime

    @staticmethod
    def resolve_module(obj):
        return obj.module.slug


@router.post(
    "/audits",
    response={200: RunDetailOut, 202: QueuedOut, 503: Error},
    summary="Run an audit (permission audits.run_audit): queued for a worker (202, poll its url), or with "
    "?wait=N the run itself if it ends within N seconds (at most VX11_AUDIT_WAIT_MAX_SECONDS)",
)
def run_audit(request, body: RunIn, wait: int = Query(0, ge=0, le=3600, description="seconds to wait for the end")):
    require(request.user, "running an audit", "audits.run_audit")
    with transaction.atomic():
        run = AuditRun.queue(body.kind, approx=body.approx, trigger="api", user=request.user)
    run.refresh_from_db()
    if run.status == AuditRun.Status.ERROR:  # the broker refused it: nothing will run, the client may try again
        raise Unavailable(f"audit run #{run.id}: {run.error}")
    if connection.in_atomic_block:  # the run reaches a worker only after an outer commit: waiting cannot end it
        wait = 0
    deadline = time.monotonic() + min(wait, settings.VX11_AUDIT_WAIT_MAX_SECONDS)
    while not run.finished and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        run.refresh_from_db()
    if run.finished:
        return run
    return Status(202, {"id": run.id, "kind": run.kind, "status": run.status, "url": run.api_url})


@router.get("/audits", response=list[RunOut], summary="Audit runs, newest first, paged")
@paginate(Paged)
def list_runs(
    request,
    kind: Kind | None = None,
    status: Literal["queued", "running", "ok", "findings", "error"] | None = None,
):
    return filter_given(AuditRun.objects.all(), kind=kind, status=status)


@router.get(
    "/audits/map",
    response={200: MapOut, 404: Error},
    summary="The latest DB map: every table with its columns, foreign keys, rows, status and owning module",
)
def latest_map(request):
    run = AuditRun.objects.filter(map_tables__isnull=False).distinct().order_by("-id").first()
    if run is None:
        raise HttpError(404, "no DB map yet: run an audit of kind map or all")
    found = run.result.get("map", {})
    return {
        "run_id": run.id,
        "generated_at": run.started_at,
        "database": run.target,
        "integrity": run.result.get("integrity", "NV"),
        "Orden_db_module_assignment_pct": found.get("Orden_db_module_assignment_pct", "NV"),
        "unowned": found.get("unowned", []),
        "diff": run.diff,
        "tables": list(MapTable.objects.filter(run=run)),
    }


@router.get("/audits/rules", response=list[RuleOut], summary="Ownership rules: table name or prefix* -> module")
@paginate(Paged)
def list_rules(request, module: str | None = None):
    rules = OwnershipRule.objects.select_related("module")
    if module:
        rules = rules.filter(module__slug=module)
    return rules


def _save_rule(rule: OwnershipRule, body: RuleIn) -> OwnershipRule:
    module = Module.objects.filter(slug=body.module).first()
    if module is None:
        raise HttpError(422, f"module: no module with slug {body.module!r}")
    if OwnershipRule.objects.filter(pattern=body.pattern).exclude(pk=rule.pk).exists():
        raise HttpError(409, f"pattern {body.pattern!r} already has a rule")
    rule.module, rule.pattern, rule.note = module, body.pattern, body.note
    try:
        rule.full_clean()
        with transaction.atomic():
            rule.save()
    except DjangoValidationError as exc:
        raise HttpError(422, validation_detail(exc)) from None
    except IntegrityError:
        raise HttpError(409, f"pattern {body.pattern!r} already has a rule") from None
    return rule


@router.post(
    "/audits/rules",
    response={201: RuleOut, 409: Error},
    summary="Add an ownership rule (permission audits.add_ownershiprule)",
)
def create_rule(request, body: RuleIn):
    require(request.user, "adding an ownership rule", "audits.add_ownershiprule")
    return Status(201, _save_rule(OwnershipRule(), body))


@router.get("/audits/rules/{rule_id}", response=RuleOut, summary="One ownership rule")
def read_rule(request, rule_id: Id):
    return get_or_404(OwnershipRule.objects.select_related("module"), pk=rule_id)


@router.put(
    "/audits/rules/{rule_id}",
    response={200: RuleOut, 409: Error},
    summary="Replace an ownership rule (permission audits.change_ownershiprule)",
)
def replace_rule(request, rule_id: Id, body: RuleIn):
    require(request.user, "changing an ownership rule", "audits.change_ownershiprule")
    return _save_rule(get_or_404(OwnershipRule, pk=rule_id), body)


@router.delete(
    "/audits/rules/{rule_id}",
    response={204: None},
    summary="Delete an ownership rule (permission audits.delete_ownershiprule)",
)
def delete_rule(request, rule_id: Id):
    require(request.user, "deleting an ownership rule", "audits.delete_ownershiprule")
    get_or_404(OwnershipRule, pk=rule_id).delete()
    return Status(204, None)


@router.get("/audits/{run_id}", response=RunDetailOut, summary="One audit run with its result, findings and map diff")
def read_run(request, run_id: Id):
    return get_or_404(AuditRun, pk=run_id)
