"""Metrics API: the latest scorecard, one by id, the list, one metric's trend, compute (queued for a worker, waited
for a bounded time with ?wait=N), verify, and test-run reports. Reading needs any key; computing needs
metrics.add_scorecard, verifying metrics.view_scorecard, uploading a report metrics.add_testrun."""

import re
import time
from datetime import datetime
from typing import Any, Literal

from celery.result import AsyncResult
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import paginate

from vx11_site.api import Error, Id, Paged, get_or_404
from vx11_site.permissions import require

from .definitions import BY_NAME, stability_weights
from .models import Scorecard, TestRun
from .reports import PARSERS

router = Router(tags=["metrics"])

POLL_SECONDS = 0.2
TASK_ID = re.compile(r"[0-9a-f-]{1,64}")


class MetricOut(Schema):
    name: str
    value: float | None = Field(..., description="0-100; null when NV or deferred (see status and reason)")
    status: Literal["ok", "fail", "NV", "deferred"]
    source: str
    evidence_path: str
    calculation: str
    reason: str
    details: dict[str, Any]
    inputs: dict[str, Any]


class ScorecardOut(Schema):
    id: int
    generated_at: datetime
    actor: str
    verdict: str
    decision_logic: dict[str, Any]
    coverage: dict[str, Any]
    evidence_path: str
    percentages_sha256: str
    scorecard_sha256: str
    url: str

    @staticmethod
    def resolve_url(obj):
        return f"/api/metrics/scorecards/{obj.id}"


class ScorecardDetailOut(ScorecardOut):
    metrics: list[MetricOut]

    @staticmethod
    def resolve_metrics(obj):
        return list(obj.metrics.all())


class MetricTrendPoint(Schema):
    generated_at: datetime
    value: float | None
    status: str


class MetricTrendOut(Schema):
    name: str
    days: int
    points: list[MetricTrendPoint]


class ComputeQueuedOut(Schema):
    task: str
    state: str
    url: str = Field(..., description="poll it: GET /api/metrics/compute/{task}")


class ComputeStateOut(Schema):
    task: str
    state: str
    scorecard: int | None
    url: str | None
    error: str


class ScorecardVerifyOut(Schema):
    scorecard: int
    ok: bool
    metrics: list[dict[str, Any]]
    verdict: dict[str, Any] | None = None
    files: dict[str, Any]
    evidence: list[dict[str, Any]]
    latest_files: dict[str, Any]
    error: str | None = None


class TestRunIn(Schema):
    kind: Literal["unit", "integration"] = "unit"
    format: Literal["junit", "pytest-json"] = Field(
        ..., description="junit: JUnit XML; pytest-json: pytest-json-report"
    )
    report: str = Field(..., min_length=1, description="the report file's text")
    evidence: str = Field("", max_length=500, description="where the report is kept, if anywhere")


class TestRunOut(Schema):
    id: int
    kind: str
    passed: int
    failed: int
    errors: int
    skipped: int
    created_at: datetime
    source: str
    evidence: str


TestRunIn.__test__ = False  # not pytest classes, despite the name
TestRunOut.__test__ = False


def _latest_or_404() -> Scorecard:
    card = Scorecard.latest()
    if card is None:
        raise HttpError(404, "no scorecard yet: compute one (POST /api/metrics/compute or `vx11 metrics`)")
    return card


@router.get("/metrics", response={200: ScorecardDetailOut, 404: Error}, summary="The latest scorecard, every metric")
def latest(request):
    return _latest_or_404()


@router.get("/metrics/scorecards", response=list[ScorecardOut], summary="Scorecards, newest first, paged")
@paginate(Paged)
def list_scorecards(request, verdict: Literal["OPERATIONAL", "DEGRADED", "CRITICAL"] | None = None):
    cards = Scorecard.objects.order_by("-generated_at", "-id")
    return cards.filter(verdict=verdict) if verdict else cards


@router.get("/metrics/scorecards/{card_id}", response={200: ScorecardDetailOut, 404: Error}, summary="One scorecard")
def get_scorecard(request, card_id: Id):
    return get_or_404(Scorecard, pk=card_id)


@router.get(
    "/metrics/trend/{name}",
    response={200: MetricTrendOut, 404: Error},
    summary="One metric's history: (generated_at, value, status) of each scorecard of the last `days` days",
)
def trend(request, name: str, days: int = Query(30, ge=1, le=3650)):
    if name not in BY_NAME:
        raise HttpError(404, f"no metric {name!r}; the metrics are {', '.join(BY_NAME)}")
    points = [
        {"generated_at": at, "value": value, "status": status} for at, value, status in Scorecard.trend(name, days)
    ]
    return {"name": name, "days": days, "points": points}


@router.post(
    "/metrics/compute",
    response={200: ScorecardDetailOut, 202: ComputeQueuedOut, 422: Error},
    summary="Compute a scorecard (permission metrics.add_scorecard): queued for a worker (202, poll its url), or "
    "with ?wait=N the scorecard itself if it is done within N seconds (at most VX11_METRICS_WAIT_MAX_SECONDS)",
)
def compute(request, wait: int = Query(0, ge=0, le=3600, description="seconds to wait for the end")):
    require(request.user, "computing the scorecard", "metrics.add_scorecard")
    from .tasks import take_snapshot

    try:
        stability_weights()  # refused here, before a worker fails on it
    except ImproperlyConfigured as exc:
        raise HttpError(422, str(exc)) from None

    sent = take_snapshot.delay(actor=request.user.get_username(), prune=False)
    deadline = time.monotonic() + min(wait, settings.VX11_METRICS_WAIT_MAX_SECONDS)
    while not sent.ready() and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    if sent.ready():
        if sent.failed():
            raise HttpError(422, f"the scorecard could not be computed: {sent.result}")
        return Scorecard.objects.get(pk=sent.result["scorecard"])
    return Status(202, {"task": sent.id, "state": sent.state, "url": f"/api/metrics/compute/{sent.id}"})


@router.get(
    "/metrics/compute/{task}", response=ComputeStateOut, summary="A queued computation: its state and scorecard"
)
def compute_state(request, task: str):
    if not TASK_ID.fullmatch(task):
        raise HttpError(422, "task: a Celery task id (hex digits and hyphens, at most 64)")
    sent = AsyncResult(task)
    card = sent.result.get("scorecard") if sent.successful() and isinstance(sent.result, dict) else None
    return {
        "task": task,
        "state": sent.state,
        "scorecard": card,
        "url": None if card is None else f"/api/metrics/scorecards/{card}",
        "error": str(sent.result) if sent.failed() else "",
    }


@router.post(
    "/metrics/scorecards/{card_id}/verify",
    response={200: ScorecardVerifyOut, 404: Error},
    summary="Recompute a scorecard from its evidence (permission metrics.view_scorecard): ok only when every "
    "metric, the files, the evidence and (for the latest) docs/audit/'s copies match",
)
def verify(request, card_id: Id):
    require(request.user, "verifying a scorecard", "metrics.view_scorecard")
    from .snapshot import verify_snapshot

    return verify_snapshot(get_or_404(Scorecard, pk=card_id))


@router.get("/metrics/test-runs", response=list[TestRunOut], summary="Stored test-run summaries, newest first")
@paginate(Paged)
def list_test_runs(request, kind: Literal["unit", "integration"] | None = None):
    runs = TestRun.objects.order_by("-created_at", "-id")
    return runs.filter(kind=kind) if kind else runs


@router.post(
    "/metrics/test-runs",
    response={201: TestRunOut, 422: Error},
    summary="Store a test run from a JUnit XML or pytest-json report (permission metrics.add_testrun); "
    "tests_p0_pct reads the latest unit run, Automatizacion_pct the latest of each kind",
)
def upload_test_run(request, body: TestRunIn):
    require(request.user, "storing a test run", "metrics.add_testrun")
    try:
        counts = PARSERS[body.format](body.report)
    except ValueError as exc:
        raise HttpError(422, f"report: {exc}") from None
    source = TestRun.Source.JUNIT if body.format == "junit" else TestRun.Source.PYTEST_JSON
    run = TestRun.objects.create(kind=body.kind, source=source, evidence=body.evidence, **counts)
    return Status(201, run)
