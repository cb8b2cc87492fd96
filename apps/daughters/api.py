"""Daughters API: spawn a task, read tasks and daughters with their attempts, cancel."""

from datetime import datetime
from typing import Any, Literal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from ninja import Field, Header, Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import paginate
from pydantic import ConfigDict

from vx11_site.api import Error, Id, Paged, filter_given, get_or_404, validation_detail
from vx11_site.permissions import require

from .models import PRIORITIES, Daughter, DaughterTask

router = Router(tags=["daughters"])

TaskStatus = Literal[tuple(DaughterTask.Status.values)]
DaughterStatus = Literal[tuple(Daughter.Status.values)]


class SpawnIn(Schema):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(..., description="http, command, sleep, flow (registered kinds)")
    params: dict[str, Any] = Field(default_factory=dict, description='e.g. {"module": "hermes", "path": "/tools"}')
    source: Literal[tuple(PRIORITIES)] = "operator"
    description: str = Field("", max_length=500)
    name: str = Field("", max_length=80)
    purpose: str = Field("", max_length=300)
    ttl_seconds: int | None = Field(None, ge=1, le=86400, description="default VX11_DAUGHTER_TTL_SECONDS (300)")
    max_retries: int | None = Field(None, ge=0, le=10, description="default VX11_DAUGHTER_MAX_RETRIES (2)")
    count: int = Field(1, ge=1, le=1000)
    intent_id: str = Field("", max_length=64)
    parent_id: Id | None = Field(None, description="the daughter that asked for these")


class AttemptOut(Schema):
    attempt_number: int
    status: str
    worker: str
    started_at: datetime
    ended_at: datetime | None
    output: str
    error: str


class DaughterOut(Schema):
    id: int
    task_id: int
    parent_id: int | None
    name: str
    purpose: str
    kind: str
    params: dict
    priority: int
    status: str
    ttl_seconds: int
    mutation_level: int
    error_last: str
    result: Any = None
    created: datetime
    started_at: datetime | None
    expires_at: datetime | None
    last_heartbeat_at: datetime | None
    ended_at: datetime | None


class DaughterDetail(DaughterOut):
    attempts: list[AttemptOut]

    @staticmethod
    def resolve_attempts(obj):
        return list(obj.attempts.all())


class TaskOut(Schema):
    id: int
    intent_id: str
    source: str
    priority: int
    task_type: str
    description: str
    max_retries: int
    status: str
    plan: dict
    created: datetime
    updated: datetime


class TaskDetail(TaskOut):
    daughters: list[DaughterDetail]

    @staticmethod
    def resolve_daughters(obj):
        return list(obj.daughters.order_by("id").prefetch_related("attempts"))


class CancelOut(Schema):
    killed: int
    status: str


IDEMPOTENCY_KEY = Header(
    None,
    alias="Idempotency-Key",
    min_length=1,
    max_length=255,
    pattern=r"^[\x20-\x7e]+$",
    description="1-255 printable ASCII characters, e.g. a UUID: a retry with the same key and body gets the task the "
    "first request made (200, `Idempotent-Replayed: true`) for VX11_DAUGHTER_IDEMPOTENCY_HOURS (24 h); "
    "the same key with another body is a 422",
)


@router.post(
    "/daughters",
    response={200: TaskDetail, 201: TaskDetail},
    summary="Spawn a task with its daughter(s); they run on the Celery workers (permission "
    "daughters.spawn_daughter; kind flow also flows.run_flow). 201: made now; 200: the task an "
    "earlier request with the same Idempotency-Key made",
)
def spawn(request, response: HttpResponse, payload: SpawnIn, idempotency_key: str | None = IDEMPOTENCY_KEY):
    """The task is stored before the workers are asked: with the Celery broker down it still answers 201, and
    its daughters wait as `spawned` until a later dispatch (each spawn, each ended daughter, the reaper's beat)."""
    DaughterTask.require_spawn_permission(request.user, payload.kind)
    data = payload.model_dump()
    kind, params = data.pop("kind"), data.pop("params")
    try:
        if idempotency_key is None:
            return Status(201, DaughterTask.spawn(kind, params, user=request.user, **data))
        task, created = DaughterTask.spawn_once(idempotency_key, kind, params, user=request.user, **data)
    except DjangoValidationError as exc:
        raise HttpError(422, validation_detail(exc)) from None
    if not created:
        response["Idempotent-Replayed"] = "true"
    return Status(201 if created else 200, task)


@router.get("/daughters/tasks", response=list[TaskOut], summary="Tasks, newest first, paged")
@paginate(Paged)
def list_tasks(request, status: TaskStatus | None = None, source: Literal[tuple(PRIORITIES)] | None = None):
    return filter_given(DaughterTask.objects.all(), status=status, source=source)


@router.get(
    "/daughters/tasks/{int:task_id}", response=TaskDetail, summary="A task with its daughters and their attempts"
)
def get_task(request, task_id: Id):
    return get_or_404(DaughterTask, pk=task_id)


@router.post(
    "/daughters/tasks/{int:task_id}/cancel",
    response=CancelOut,
    summary="Kill every live daughter of the task (permission daughters.change_daughtertask)",
)
def cancel_task(request, task_id: Id):
    require(request.user, "cancelling a task", "daughters.change_daughtertask")
    task = get_or_404(DaughterTask, pk=task_id)
    killed = task.cancel(user=request.user)
    task.refresh_from_db()
    return {"killed": killed, "status": task.status}


@router.get("/daughters", response=list[DaughterOut], summary="Daughters, newest first, paged")
@paginate(Paged)
def list_daughters(request, status: DaughterStatus | None = None, task_id: Id | None = None):
    daughters = Daughter.objects.all()
    if status:
        daughters = daughters.filter(status=status)
    if task_id is not None:
        daughters = daughters.filter(task_id=task_id)
    return daughters


@router.get("/daughters/{int:daughter_id}", response=DaughterDetail, summary="A daughter with its attempts")
def get_daughter(request, daughter_id: Id):
    return get_or_404(Daughter.objects.prefetch_related("attempts"), pk=daughter_id)


@router.post(
    "/daughters/{int:daughter_id}/cancel",
    response={200: CancelOut, 409: Error},
    summary="Kill a daughter, madre's DELETE /kill/{id} (permission daughters.change_daughter)",
)
def cancel_daughter(request, daughter_id: Id):
    require(request.user, "killing a daughter", "daughters.change_daughter")
    daughter = get_or_404(Daughter, pk=daughter_id)
    if daughter.status in Daughter.FINAL:
        raise HttpError(409, f"daughter #{daughter.pk} already ended ({daughter.status})")
    killed = Daughter.kill(Daughter.objects.filter(pk=daughter.pk), user=request.user)
    daughter.refresh_from_db()
    return {"killed": killed, "status": daughter.status}
