"""Fleet API: modules (CRUD), their history and state changes, probe now, the fleet overview."""

from datetime import datetime
from typing import Literal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import paginate
from pydantic import ConfigDict

from vx11_site.api import Error, Instant, Paged, get_or_404, validation_detail
from vx11_site.permissions import require

from .models import HealthCheck, Module, Rollup, StateChange
from .probe import run_round

router = Router(tags=["fleet"])

Slug = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="lower-case letters, digits, _ and -")


class ModuleIn(Schema):
    model_config = ConfigDict(extra="forbid")

    slug: str = Slug
    name: str = Field(..., min_length=1, max_length=100)
    base_url: str = Field(..., max_length=300, description="http(s)://host:port")
    health_path: str = Field("/health", max_length=200, pattern=r"^/")
    role: str = Field("", max_length=200)
    core: bool = False
    enabled: bool = True
    accepted_statuses: list[str] = Field(default_factory=lambda: ["ok"], min_length=1)
    timeout: float | None = Field(None, gt=0, le=60, description="seconds; default VX11_PROBE_DEFAULT_TIMEOUT")
    degraded_latency_ms: float | None = Field(None, ge=0)
    down_after: int = Field(3, ge=1, le=100)
    up_after: int = Field(2, ge=1, le=100)
    owned_tables: list[str] = Field(default_factory=list)


class ModulePatch(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=100)
    base_url: str | None = Field(None, max_length=300)
    health_path: str | None = Field(None, max_length=200, pattern=r"^/")
    role: str | None = Field(None, max_length=200)
    core: bool | None = None
    enabled: bool | None = None
    accepted_statuses: list[str] | None = Field(None, min_length=1)
    timeout: float | None = Field(None, gt=0, le=60)
    degraded_latency_ms: float | None = Field(None, ge=0)
    down_after: int | None = Field(None, ge=1, le=100)
    up_after: int | None = Field(None, ge=1, le=100)
    owned_tables: list[str] | None = None


class ModuleOut(Schema):
    slug: str
    name: str
    base_url: str
    health_path: str
    port: int | None
    role: str
    core: bool
    enabled: bool
    accepted_statuses: list[str]
    timeout: float
    degraded_latency_ms: float | None
    down_after: int
    up_after: int
    owned_tables: list[str]
    state: str
    state_since: datetime | None
    last_checked_at: datetime | None
    last_status_code: int | None
    last_latency_ms: float | None
    last_status_value: str
    last_error: str
    uptime_24h: float | None
    uptime_7d: float | None
    uptime_30d: float | None


class HistoryOut(Schema):
    """A raw check (outcome, status, latency_ms) or a rollup bucket (count, failures, latency stats)."""

    at: datetime
    outcome: str | None = None
    status_code: int | None = None
    status_value: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    count: int | None = None
    failures: int | None = None
    uptime: float | None = None
    latency_min: float | None = None
    latency_avg: float | None = None
    latency_p95: float | None = None
    latency_max: float | None = None

    @staticmethod
    def resolve_at(obj):
        return getattr(obj, "checked_at", None) or obj.bucket_start


class ChangeOut(Schema):
    at: datetime
    from_state: str
    to_state: str
    reason: str


class ProbeOut(Schema):
    slug: str
    state: str
    outcome: str
    status_code: int | None
    latency_ms: float | None
    status: str | None
    error: str | None
    checked_at: datetime


class SummaryOut(Schema):
    up: int
    degraded: int
    down: int
    unknown: int
    total: int
    core_down: list[str]


class OverviewModule(Schema):
    slug: str
    state: str
    last_latency_ms: float | None
    uptime_24h: float | None


class Problem(Schema):
    slug: str
    state: str
    core: bool
    state_since: datetime | None
    last_error: str


class OverviewOut(Schema):
    summary: SummaryOut
    modules: list[OverviewModule]
    problems: list[Problem] = Field(..., description="modules not up, with since when and why")


class HistoryFilter(Schema):
    resolution: Literal["raw", "minute", "hour", "day"] = "raw"
    since: Instant | None = None
    until: Instant | None = None


def _module(slug: str) -> Module:
    return get_or_404(Module, slug=slug)


def _save(module: Module) -> Module:
    """Model validation (URL, statuses, bounds) as a 422 with a readable message."""
    try:
        module.full_clean()
    except DjangoValidationError as exc:
        raise HttpError(422, validation_detail(exc)) from None
    try:
        module.save()
    except IntegrityError:
        raise HttpError(409, f"a module with slug '{module.slug}' already exists") from None
    return module


@router.get(
    "/overview", response=OverviewOut, summary="Fleet summary, every enabled module's state (compact), and the problems"
)
def overview(request):
    rows = list(
        Module.objects.filter(enabled=True).values(*OverviewModule.model_fields, *Problem.model_fields, "simulated")
    )
    return {"summary": Module.fleet_summary(rows), "modules": rows, "problems": [r for r in rows if r["state"] != "up"]}


@router.get("/modules", response=list[ModuleOut], summary="List modules, paged (limit/offset)")
@paginate(Paged)
def list_modules(request, state: Literal["up", "degraded", "down", "unknown"] | None = None, core: bool | None = None):
    modules = Module.objects.all()
    if state:
        modules = modules.filter(state=state)
    if core is not None:
        modules = modules.filter(core=core)
    return modules


@router.post("/modules", response={201: ModuleOut, 409: Error}, summary="Add a module (permission fleet.add_module)")
def create_module(request, payload: ModuleIn):
    require(request.user, "creating a module", "fleet.add_module")
    if Module.objects.filter(slug=payload.slug).exists():
        raise HttpError(409, f"a module with slug '{payload.slug}' already exists")
    data = payload.model_dump()
    if data["timeout"] is None:
        data.pop("timeout")
    return Status(201, _save(Module(**data)))


@router.get("/modules/{slug}", response=ModuleOut, summary="Read a module")
def read_module(request, slug: str):
    return _module(slug)


@router.patch(
    "/modules/{slug}",
    response=ModuleOut,
    summary="Change a module, only the fields sent (permission fleet.change_module)",
)
def update_module(request, slug: str, payload: ModulePatch):
    require(request.user, "changing a module", "fleet.change_module")
    module = _module(slug)
    changes = payload.model_dump(exclude_unset=True)
    nullable = {"degraded_latency_ms"}
    for field, value in changes.items():
        if value is None and field not in nullable:
            raise HttpError(422, f"{field}: may not be null")
    for field, value in changes.items():
        setattr(module, field, value)
    return _save(module)


@router.delete(
    "/modules/{slug}",
    response={204: None, 409: Error},
    summary="Delete a module and its history (permission fleet.delete_module)",
)
def delete_module(request, slug: str):
    require(request.user, "deleting a module", "fleet.delete_module")
    try:
        _module(slug).delete()
    except ProtectedError as exc:  # a row that depends on the module refuses (apps.power: the process it runs)
        why = "; ".join(
            sorted(
                getattr(o, "in_use", None) or f"{o._meta.verbose_name} {o} depends on it" for o in exc.protected_objects
            )
        )
        raise HttpError(409, f"module '{slug}' was not deleted: {why}") from None
    return Status(204, None)


@router.get("/modules/{slug}/history", response=list[HistoryOut], summary="Raw checks or rollups, newest first, paged")
@paginate(Paged)
def module_history(request, slug: str, filters: HistoryFilter = Query(...)):
    module = _module(slug)
    if filters.resolution == "raw":
        rows = HealthCheck.objects.filter(module=module)
        time_field = "checked_at"
    else:
        rows = Rollup.objects.filter(module=module, period=filters.resolution)
        time_field = "bucket_start"
    if filters.since:
        rows = rows.filter(**{f"{time_field}__gte": filters.since})
    if filters.until:
        rows = rows.filter(**{f"{time_field}__lt": filters.until})
    return rows.order_by(f"-{time_field}")


@router.get("/modules/{slug}/changes", response=list[ChangeOut], summary="State changes, newest first, paged")
@paginate(Paged)
def module_changes(request, slug: str):
    return StateChange.objects.filter(module=_module(slug))


@router.post(
    "/modules/{slug}/probe", response=ProbeOut, summary="Probe one module now (permission fleet.change_module)"
)
def probe_module(request, slug: str):
    require(request.user, "probing a module", "fleet.change_module")
    module = _module(slug)
    results, _ = run_round([module])
    module.refresh_from_db(fields=["state"])
    return results[0].as_dict(module.state)


@router.post("/probe", response=list[ProbeOut], summary="Probe the whole fleet now (permission fleet.change_module)")
def probe_fleet(request):
    require(request.user, "probing the fleet", "fleet.change_module")
    results, _ = run_round()
    states = dict(Module.objects.values_list("id", "state"))
    return [r.as_dict(states.get(r.module_id)) for r in results]
