"""Housekeeping API: run (a dry run unless `apply`), list and read runs, restore a run, archive forensic/.

Reads need any key (a read-only one too). A run needs housekeeping.add_housekeepingrun, applying one also
housekeeping.apply_housekeeping (so does the forensic copy), a restore housekeeping.restore_housekeeping. The work
is apps.housekeeping.runner's, the same the CLI and the admin call.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Field, Router, Schema, Status
from ninja.pagination import paginate
from pydantic import ConfigDict

from vx11_site.api import Error, Id, Paged, filter_given, get_or_404
from vx11_site.permissions import require

from . import runner
from .attic import RestoreRefused
from .models import HousekeepingRun

router = Router(tags=["housekeeping"])

RunStatus = Literal[tuple(HousekeepingRun.Status.values)]


class HousekeepingRunIn(Schema):
    model_config = ConfigDict(extra="forbid")

    apply: bool = Field(
        False, description="move for real (permission housekeeping.apply_housekeeping); default a dry run"
    )
    paths: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(
        default_factory=list, max_length=100, description="also move these paths, relative to the managed root"
    )


class HousekeepingRunSummary(Schema):
    id: int
    operation: str
    started_at: datetime
    finished_at: datetime | None
    actor: str
    via: str
    applied: bool
    status: str
    attic_stamp: str
    bytes_moved: int
    message: str
    restored_at: datetime | None


class HousekeepingRunOut(HousekeepingRunSummary):
    root: str
    excludes_source: str
    moves: list[dict[str, Any]]
    refused: list[dict[str, Any]]
    protected: list[dict[str, Any]]
    evidence_path: str
    restored_by: str
    restore_result: dict[str, Any]


class HousekeepingRestoreOut(Schema):
    stamp: str
    status: str = Field(description="ok: every file matches its manifest; modified: see mismatches")
    restored: list[str]
    files_verified: int
    mismatches: list[dict[str, str]]
    restored_by: str
    restored_at: datetime
    run_id: int | None
    evidence_path: str


class HousekeepingRestoreConflict(Error):
    conflicts: list[str] = Field(default_factory=list, description="original paths that exist again")


@router.post(
    "/housekeeping/runs",
    response={201: HousekeepingRunOut},
    summary="Run housekeeping on the managed tree: a dry run unless apply (permission "
    "housekeeping.add_housekeepingrun; apply also housekeeping.apply_housekeeping). The run's status says "
    "ok, refused (some paths refused), aborted (protected paths: nothing moved) or error",
)
def start_run(request, payload: HousekeepingRunIn):
    row = runner.run(request.user, apply=payload.apply, paths=payload.paths, via="api")
    return Status(201, row)


@router.get(
    "/housekeeping/runs", response=list[HousekeepingRunSummary], summary="Housekeeping runs, newest first, paged"
)
@paginate(Paged)
def list_runs(request, applied: bool | None = None, status: RunStatus | None = None):
    return filter_given(HousekeepingRun.objects.all(), applied=applied, status=status)


@router.get(
    "/housekeeping/runs/{int:run_id}", response=HousekeepingRunOut, summary="A run: what moved, refused, protected"
)
def get_run(request, run_id: Id):
    return get_or_404(HousekeepingRun, pk=run_id)


def restore_answer(request, stamp: str):
    try:
        return runner.restore(request.user, stamp, via="api")
    except RestoreRefused as exc:
        return Status(exc.status, {"detail": str(exc), "conflicts": exc.conflicts})


@router.post(
    "/housekeeping/runs/{int:run_id}/restore",
    response={200: HousekeepingRestoreOut, 404: Error, 409: HousekeepingRestoreConflict, 422: Error},
    summary="Put back everything the run moved, exactly (permission housekeeping.restore_housekeeping); 409 when "
    "a path exists again or it was restored already: nothing moved then",
)
def restore_run(request, run_id: Id):
    require(request.user, "restoring a housekeeping run", "housekeeping.restore_housekeeping")
    row = get_or_404(HousekeepingRun, pk=run_id)
    if not row.applied or not row.attic_stamp:
        return Status(409, {"detail": f"housekeeping run #{row.pk} moved nothing: there is nothing to restore"})
    return restore_answer(request, row.attic_stamp)


@router.post(
    "/housekeeping/restore/{stamp}",
    response={200: HousekeepingRestoreOut, 404: Error, 409: HousekeepingRestoreConflict, 422: Error},
    summary="Restore attic/<stamp>/ from its MANIFEST.json, as `vx11 restore <stamp>` (permission "
    "housekeeping.restore_housekeeping)",
)
def restore_stamp(request, stamp: str):
    require(request.user, "restoring a housekeeping run", "housekeeping.restore_housekeeping")
    return restore_answer(request, stamp)


@router.post(
    "/housekeeping/archive-forensic",
    response={201: HousekeepingRunOut},
    summary="Copy forensic/ to docs/audit/archived_forensic/<stamp>/ (never moved; permission "
    "housekeeping.apply_housekeeping)",
)
def archive_forensic(request):
    return Status(201, runner.archive_forensic(request.user, via="api"))
