"""Pipeline API: the runs (list, read), start one (queued for the workers: 202 with its URL; 409 while another goes),
cancel one, and each phase's evidence files (listed, downloaded). Reading needs any key; starting and cancelling
need pipeline.run_pipeline."""

from datetime import datetime
from typing import Annotated, Any, Literal

from django.http import FileResponse
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import paginate
from pydantic import ConfigDict

from vx11_site.api import Error, Id, Paged, Unavailable, filter_given, get_or_404
from vx11_site.permissions import require

from . import runner
from .models import Busy, PhaseRun, PipelineRun, confined_file

router = Router(tags=["pipeline"])

PERMISSION = "pipeline.run_pipeline"
RunStatus = Literal[tuple(PipelineRun.Status.values)]
PhaseNumber = Annotated[int, Field(ge=1, le=7, description="the phase: 1 audit ... 7 mirror")]


class PhaseOut(Schema):
    number: int
    name: str
    status: Literal[tuple(PhaseRun.Status.values)]
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    progress: float = Field(..., description="0-100")
    step: str
    summary: str
    evidence: list[str] = Field(..., description="its files, relative to VX11_EVIDENCE_ROOT")
    interventions: int = Field(..., description="human actions on the fleet while it ran")


class MirrorOut(Schema):
    commit: str
    pushed: bool


class RunOut(Schema):
    """A run as PipelineRun.as_json() has it."""

    id: int
    url: str
    status: RunStatus
    exit_code: int | None = Field(..., description="what `vx11 pipeline run` exits with; null while it goes")
    verdict: str = Field(..., description="the scorecard's verdict of this run, or NV")
    trigger: str
    actor: str
    phases_asked: list[int]
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    manual_interventions: int
    interventions: list[dict[str, Any]]
    evidence: str = Field(..., description="the run's bag, relative to VX11_EVIDENCE_ROOT")
    mirror: MirrorOut
    scorecard: int | None
    cancel_requested: str
    error: str
    phases: list[PhaseOut]

    @staticmethod
    def resolve_url(run):
        return run.api_url

    @staticmethod
    def resolve_verdict(run):
        return run.verdict or "NV"

    @staticmethod
    def resolve_phases_asked(run):
        return run.phases

    @staticmethod
    def resolve_evidence(run):
        return run.evidence_path

    @staticmethod
    def resolve_mirror(run):
        return {"commit": run.mirror_commit, "pushed": run.mirror_pushed}

    @staticmethod
    def resolve_scorecard(run):
        return run.scorecard_id

    @staticmethod
    def resolve_phases(run):
        return run.phase_list()


class StartIn(Schema):
    model_config = ConfigDict(extra="forbid")

    phases: Annotated[str, Field(max_length=100)] | Annotated[list[int], Field(max_length=50)] | None = Field(
        None, description='the phases to run: "1,3,6" or [1, 3, 6]; all seven when left out'
    )


class BusyOut(Schema):
    detail: str
    running: str | None = Field(..., description="the URL of the run that is going")


class EvidenceFileOut(Schema):
    name: str = Field(..., description="the file within the phase's folder")
    path: str = Field(..., description="relative to VX11_EVIDENCE_ROOT")
    bytes: int | None = Field(..., description="null: the file is gone (rotated or deleted)")
    url: str = Field(..., description="download it")


def run_or_404(run_id: int) -> PipelineRun:
    return get_or_404(PipelineRun.objects.prefetch_related("phase_runs"), pk=run_id)


def phase_or_404(run_id: int, number: int) -> PhaseRun:
    run = get_or_404(PipelineRun, pk=run_id)
    return get_or_404(PhaseRun.objects.select_related("run"), run=run, number=number)


@router.get("/pipeline/runs", response=list[RunOut], summary="Pipeline runs, newest first, paged")
@paginate(Paged)
def list_runs(request, status: RunStatus | None = None):
    return filter_given(PipelineRun.objects.prefetch_related("phase_runs"), status=status)


@router.post(
    "/pipeline/runs",
    response={202: RunOut, 409: BusyOut, 503: Error},
    summary="Start a run (permission pipeline.run_pipeline): queued for the workers, 202 with its url to poll; "
    "409 with the running one's url while another run goes",
)
def start_run(request, body: StartIn):
    require(request.user, "starting a pipeline run", PERMISSION)
    try:
        run = runner.start("api", user=request.user, phases=body.phases)
    except ValueError as exc:
        raise HttpError(422, f"phases: {exc}") from None
    except Busy as busy:
        return Status(409, {"detail": str(busy), "running": busy.running.api_url if busy.running else None})
    runner.queue(run)
    run.refresh_from_db()
    if run.status == PipelineRun.Status.FAILED:  # the broker refused it: nothing will run, the client may try again
        raise Unavailable(f"pipeline run #{run.id}: {run.error}")
    return Status(202, run)


@router.get("/pipeline/runs/{run_id}", response=RunOut, summary="One run with its seven phases")
def read_run(request, run_id: Id):
    return run_or_404(run_id)


@router.post(
    "/pipeline/runs/{run_id}/cancel",
    response={200: RunOut, 409: Error},
    summary="Cancel a run (permission pipeline.run_pipeline): the phase going on finishes, the rest are skipped; "
    "409 if it has ended",
)
def cancel_run(request, run_id: Id):
    require(request.user, "cancelling a pipeline run", PERMISSION)
    run = get_or_404(PipelineRun, pk=run_id)
    try:
        runner.cancel(run, request.user)
    except ValueError as exc:
        raise HttpError(409, str(exc)) from None
    return run_or_404(run_id)


@router.get(
    "/pipeline/runs/{run_id}/phases/{number}/evidence",
    response=list[EvidenceFileOut],
    summary="A phase's evidence files, each with its download url",
)
def list_evidence(request, run_id: Id, number: PhaseNumber):
    return phase_or_404(run_id, number).evidence_files()


@router.get(
    "/pipeline/runs/{run_id}/phases/{number}/evidence/{path:name}",
    response={404: Error},
    summary="One evidence file of a phase, as a download (only the files the phase lists)",
    openapi_extra={
        "responses": {
            "200": {
                "description": "the file",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        }
    },
)
def download_evidence(request, run_id: Id, number: PhaseNumber, name: str):
    phase = phase_or_404(run_id, number)
    listed = next((f for f in phase.evidence_files() if f["name"] == name), None)
    if listed is None:
        raise HttpError(404, f"phase {number} of run #{run_id} has no evidence file {name!r}")
    target = confined_file(listed["path"])
    if target is None:
        raise HttpError(404, f"evidence file {listed['path']!r} is gone (rotated or deleted)")
    return FileResponse(
        target.open("rb"), as_attachment=True, filename=target.name, content_type="application/octet-stream"
    )
