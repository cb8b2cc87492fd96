"""Power API: madre's paths at the root (/madre/power/...) and the same under /api/power/...

Auth is the portal API's (API key or staff session; read-only keys refused on writes); acting
also needs the permission power.control_services. Every refusal is audited before it is answered.
"""

from typing import Literal

from django.conf import settings
from ninja import NinjaAPI, Router, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from pydantic import Field

from vx11_site.api import ApiKeyAuth, SessionAuthIsStaff, on_auth_error, on_validation_error

from . import models as power

router = Router(tags=["power"])  # mounted on the portal API at /api/
madre_router = Router(tags=["power"])  # mounted at /madre/ by madre_api

SLUG = Field(min_length=1, max_length=64)


class ServiceIn(Schema):
    service: str = SLUG


class ApplyIn(Schema):
    apply: bool = False


class ModeIn(Schema):
    mode: Literal["low_power", "operative_core", "full"]
    apply: bool = False


class WindowIn(Schema):
    services: list[str] = Field(min_length=1, max_length=50)
    ttl_sec: int = Field(ge=1)
    mode: Literal["ttl", "hold"] = "ttl"
    reason: str = Field(default="", max_length=500)


def answer(row: power.PowerAction) -> dict:
    if row.http_status >= 400:
        raise HttpError(row.http_status, row.message)
    return row.as_dict()


def route(method: str, path: str, **kwargs):
    """Register one view on both routers: /madre<path> and /api<path>."""

    def register(view):
        getattr(madre_router, method)(path, **kwargs)(view)
        getattr(router, method)(path, **kwargs)(view)
        return view

    return register


@route("get", "/power/status")
def status(request):
    """Every enabled module: its backend, whether it runs, its window; the open power window."""
    return power.power_status()


@route("post", "/power/service/start")
def service_start(request, payload: ServiceIn):
    """madre's plain start: applies at once (all guards still hold)."""
    return answer(power.perform(request.user, payload.service, "start", True))


@route("post", "/power/service/stop")
def service_stop(request, payload: ServiceIn):
    return answer(power.perform(request.user, payload.service, "stop", True))


@route("post", "/power/service/{name}/{action}")
def service_action(request, name: str, action: Literal["start", "stop", "restart"], payload: ApplyIn = None):
    """A plan, unless the body says {"apply": true}."""
    return answer(power.perform(request.user, name, action, bool(payload and payload.apply)))


@route("post", "/power/mode")
def mode(request, payload: ModeIn):
    return answer(power.perform_mode(request.user, payload.mode, payload.apply))


@route("post", "/power/window/open")
def window_open(request, payload: WindowIn):
    if payload.ttl_sec > settings.VX11_POWER_WINDOW_MAX_TTL:
        raise HttpError(422, f"ttl_sec: at most {settings.VX11_POWER_WINDOW_MAX_TTL} seconds (VX11_POWER_WINDOW_MAX_TTL)")
    row, window = power.open_window(request.user, payload.services, payload.ttl_sec, payload.mode, payload.reason)
    return {**answer(row), "window": power.window_dict(window)}


@route("post", "/power/window/close")
def window_close(request):
    row, window = power.close_window(request.user)
    return {**answer(row), "window": power.window_dict(window)}


madre_api = NinjaAPI(
    title="VX11 madre power manager",
    version="1",
    description="madre's /madre/power/* paths, served by the portal with every guard enforced.",
    auth=[ApiKeyAuth(), SessionAuthIsStaff()],
    urls_namespace="madre-power",
    docs_url="/power/docs",
    openapi_url="/power/openapi.json",
)
madre_api.add_exception_handler(AuthenticationError, on_auth_error)
madre_api.add_exception_handler(ValidationError, on_validation_error)
madre_api.add_router("/", madre_router)
