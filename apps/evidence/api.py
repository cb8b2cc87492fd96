"""Evidence API: list and read the bags' index, re-hash a bag, re-seal a flagged one."""

from datetime import datetime
from typing import Literal

from ninja import Field, Router, Schema
from ninja.errors import HttpError
from ninja.pagination import paginate
from pydantic import ConfigDict

from vx11_site.api import Error, Id, Paged, filter_given, get_or_404
from vx11_site.permissions import require

from .models import Evidence

router = Router(tags=["evidence"])

State = Literal[tuple(value for value, _ in Evidence.STATES)]


class Finding(Schema):
    file: str = Field(..., description="relative to the bag: data/result.json, bag-info.txt, ...")
    problem: Literal["modified", "missing", "extra"]
    why: str = ""


class EvidenceOut(Schema):
    id: int
    path: str = Field(..., description="the bag folder, relative to VX11_EVIDENCE_ROOT")
    name: str
    kind: str
    run_id: str
    payload_oxum: str
    manifest_sha256: str
    created_at: datetime
    state: State = Field(..., description="a flagged state (modified, missing, extra, not_a_bag) stays until re-sealed")
    last_result: str = Field(..., description="what the latest check found")
    verified_at: datetime | None
    detail: str
    findings: list[Finding]
    resealed_by: str
    resealed_at: datetime | None


class VerifyOut(Schema):
    evidence: EvidenceOut
    result: Literal["valid", "modified", "missing", "extra", "not_a_bag"]
    files: list[Finding]
    detail: str


class ResealIn(Schema):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(..., min_length=1, max_length=500, description="why the bag is accepted as it is now")


@router.get("/evidence", response=list[EvidenceOut], summary="Evidence bags, newest first, paged")
@paginate(Paged)
def list_evidence(request, state: State | None = None, kind: str | None = None):
    return filter_given(Evidence.objects.all(), state=state, kind=kind)


@router.get("/evidence/{int:evidence_id}", response=EvidenceOut, summary="One evidence bag's index row")
def get_evidence(request, evidence_id: Id):
    return get_or_404(Evidence, pk=evidence_id)


@router.post(
    "/evidence/{int:evidence_id}/verify",
    response=VerifyOut,
    summary="Re-hash the bag and store what it found (permission evidence.verify_evidence); a flagged state stays",
)
def verify_evidence(request, evidence_id: Id):
    require(request.user, "verifying evidence", "evidence.verify_evidence")
    row = get_or_404(Evidence, pk=evidence_id)
    result = row.verify()
    return {"evidence": row, "result": result["state"], "files": result["files"], "detail": result["detail"]}


@router.post(
    "/evidence/{int:evidence_id}/reseal",
    response={200: VerifyOut, 409: Error},
    summary="Accept the bag as it is now: rewrite its manifests and clear the flag (permission "
    "evidence.reseal_evidence); 409 when the folder is no longer a bag",
)
def reseal_evidence(request, evidence_id: Id, payload: ResealIn):
    require(request.user, "re-sealing evidence", "evidence.reseal_evidence")
    row = get_or_404(Evidence, pk=evidence_id)
    try:
        result = row.reseal(request.user, payload.note)
    except (OSError, ValueError) as exc:
        raise HttpError(409, f"bag {row.path} cannot be re-sealed: {exc}") from None
    return {"evidence": row, "result": result["state"], "files": [], "detail": result["detail"]}
