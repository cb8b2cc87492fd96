"""Flows API: list, read, create/replace a definition, run now, runs, run detail, contract coherence."""

from datetime import datetime
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from ninja import Body, Field, Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import paginate

from vx11_site.api import Error, Id, Paged, Unavailable, get_or_404, validation_detail
from vx11_site.permissions import require

from .models import ContractCoherence, Flow, FlowRun

router = Router(tags=["flows"])


class RunOut(Schema):
    id: int
    flow: str
    status: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    failed_step: int | None
    reason: str

    @staticmethod
    def resolve_flow(obj):
        return obj.flow.name


class StepResultOut(Schema):
    position: int
    name: str
    kind: str
    status: str
    reason: str
    request: dict
    response_status: int | None
    response_excerpt: str
    duration_ms: float | None
    captured: dict


class RunDetailOut(RunOut):
    captured: dict
    steps: list[StepResultOut]

    @staticmethod
    def resolve_steps(obj):
        return list(obj.steps.all())


class FlowOut(Schema):
    name: str
    title: str
    description: str
    enabled: bool
    steps: int
    last_run: RunOut | None

    @staticmethod
    def resolve_steps(obj):
        return obj.step_count()

    @staticmethod
    def resolve_last_run(obj):
        return obj.last_run()


class FlowDetailOut(FlowOut):
    definition: dict

    @staticmethod
    def resolve_definition(obj):
        return obj.to_spec()


class QueuedOut(Schema):
    id: int
    flow: str
    status: str
    url: str = Field(..., description="poll it: GET /api/flow-runs/{id}")


class CoherenceOut(Schema):
    contract_coherence_pct: float | Literal["NV"]
    passed: int | None
    total: int | None
    computed_at: datetime | None
    detail: dict


def _flow(name: str) -> Flow:
    return get_or_404(Flow, name=name)


def _save(spec: Any, replace: bool) -> Flow:
    try:
        return Flow.save_spec(spec, replace=replace)
    except DjangoValidationError as exc:
        raise HttpError(422, validation_detail(exc)) from None


@router.get("/flows", response=list[FlowOut], summary="List flows with their last run, paged")
@paginate(Paged)
def list_flows(request, enabled: bool | None = None):
    flows = Flow.summarised(Flow.objects.all())
    if enabled is not None:
        flows = flows.filter(enabled=enabled)
    return flows


@router.post(
    "/flows",
    response={201: FlowDetailOut, 409: Error},
    summary="Create a flow from a definition, the YAML/JSON file shape (permission flows.add_flow)",
)
def create_flow(request, definition: dict[str, Any] = Body(..., description='{"name": "D", "steps": [...]}')):
    require(request.user, "creating a flow", "flows.add_flow")
    name = definition.get("name")
    if isinstance(name, str) and Flow.objects.filter(name=name).exists():
        raise HttpError(409, f"flow {name} already exists; PUT /api/flows/{name} replaces it")
    return Status(201, _save(definition, replace=False))


@router.get(
    "/flows/coherence",
    response=CoherenceOut,
    summary="contract_coherence_pct: passed / total over the latest run of each enabled flow",
)
def coherence(request):
    row = ContractCoherence.objects.first()
    if row is None:
        return {"contract_coherence_pct": "NV", "passed": None, "total": None, "computed_at": None, "detail": {}}
    return {
        "contract_coherence_pct": "NV" if row.pct is None else row.pct,
        "passed": row.passed,
        "total": row.total,
        "computed_at": row.computed_at,
        "detail": row.detail,
    }


@router.get("/flows/{name}", response=FlowDetailOut, summary="Read a flow: its definition and last run")
def read_flow(request, name: str):
    return _flow(name)


@router.put(
    "/flows/{name}",
    response=FlowDetailOut,
    summary="Replace a flow's definition, steps and all (permission flows.change_flow)",
)
def replace_flow(request, name: str, definition: dict[str, Any] = Body(...)):
    require(request.user, "replacing a flow", "flows.change_flow")
    _flow(name)
    if definition.get("name", name) != name:
        raise HttpError(422, f"name in the body ({definition.get('name')!r}) differs from the URL ({name!r})")
    return _save({**definition, "name": name}, replace=True)


@router.post(
    "/flows/{name}/run",
    response={200: RunDetailOut, 202: QueuedOut, 409: Error, 503: Error},
    summary="Run a flow (permission flows.run_flow): wait for the end (200, the run with its steps; 409 if "
    "the flow may take longer than VX11_FLOW_SYNC_MAX_SECONDS) or, with ?wait=false, queue it "
    "(202, poll its url; 503 with Retry-After if the Celery broker is unreachable)",
)
def run_flow(request, name: str, wait: bool = True):
    require(request.user, "running a flow", "flows.run_flow")
    flow = _flow(name)
    if wait:
        longest, bound = flow.longest_seconds(), settings.VX11_FLOW_SYNC_MAX_SECONDS
        if longest > bound:  # a request thread must not wait that long
            raise HttpError(
                409,
                f"flow {flow.name} may take up to {longest:g} s, over the {bound:g} s a request may wait "
                f"(VX11_FLOW_SYNC_MAX_SECONDS); run it with ?wait=false and poll the run's url",
            )
        return flow.run(trigger="api", user=request.user)
    run = flow.queue(trigger="api", user=request.user)
    if run.status == FlowRun.Status.FAILED:  # the broker refused it: nothing will run, the client may try again
        raise Unavailable(f"flow {flow.name} run #{run.id}: {run.reason}")
    return Status(202, {"id": run.id, "flow": flow.name, "status": run.status, "url": run.api_url})


@router.get("/flows/{name}/runs", response=list[RunOut], summary="A flow's runs, newest first, paged")
@paginate(Paged)
def flow_runs(request, name: str, status: Literal["queued", "running", "passed", "failed"] | None = None):
    runs = FlowRun.objects.filter(flow=_flow(name)).select_related("flow")
    if status:
        runs = runs.filter(status=status)
    return runs


@router.get(
    "/flow-runs/{run_id}",
    response=RunDetailOut,
    summary="One run with its steps: request, response excerpt, duration, pass/fail and why",
)
def read_run(request, run_id: Id):
    return get_or_404(FlowRun.objects.select_related("flow"), id=run_id)
