"""Power API: madre's paths at the root (/madre/power/...) and the same under /api/power/...

Auth is the portal API's (API key or staff session; read-only keys refused on writes); acting
also needs the permission power.control_services. Every refusal is audited before it is answered,
the auth's own too: the power routers use PowerKeyAuth and PowerSessionAuth, which refuse exactly as
the API's classes do (same status, same message, still before the body is validated) but write the
PowerAction row first. A body that then fails validation (422) is audited through the same hook.
"""

import json
import re
from typing import Annotated, Any, Literal

from django.conf import settings
from django.urls import register_converter
from ninja import Router, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from pydantic import Field, field_validator

from vx11_site.api import (
    SAFE_METHODS,
    ApiKeyAuth,
    Error,
    PortalAPI,
    StaffSession,
    Throttled,
    on_auth_error,
    on_throttled,
    on_validation_error,
)

from . import manager
from .models import PowerAction

WRITE_PATH = re.compile(
    r"/power/(?:service/(?P<verb>start|stop)|service/(?P<name>[^/]*)/(?P<action>[^/]+)|(?P<mode>mode)"
    r"|window/(?P<window>open|close))/?$"
)
AUTH_REQUIRED = "authentication required (no valid API key, no staff session)"


def asked(request) -> tuple[str, str, dict]:
    """What a write asks for - action, service, plan - from its path and raw body (not validated yet)."""
    try:
        body = json.loads(request.body or b"{}")
    except Exception:  # not JSON, too big, or a stream already read: the path still says what was asked
        body = {}
    body = body if isinstance(body, dict) else {}
    plan = {
        "refused_by": "auth",
        "method": request.method,
        "path": request.path,
        "remote_addr": request.META.get("REMOTE_ADDR", ""),
    }
    match = WRITE_PATH.search(request.path_info)
    if match is None:
        return request.method.lower(), request.path, plan
    if match["verb"]:
        return match["verb"], str(body.get("service", "")), plan
    if match["action"]:  # the name may be empty
        return match["action"], match["name"], plan
    if match["mode"]:
        return "mode", str(body.get("mode", "")), plan
    services = body.get("services") if match["window"] == "open" else None
    return f"window_{match['window']}", ",".join(map(str, services)) if isinstance(services, list) else "window", plan


def audit_refusal(request, user, status: int, message: str, **extra) -> None:
    """A write refused by the auth is a PowerAction row too (reads are not actions)."""
    if request.method not in SAFE_METHODS:
        action, service, plan = asked(request)
        manager.refuse_request(user, action, service, {**plan, **extra}, status, message)


def audit_later_refusals(request, result):
    """An authenticated write may still be refused before its view runs (its body fails validation, 422):
    the API's validation handler calls this hook, so that refusal is a row too."""
    if result is not None:
        request.audit_refusal = lambda status, message: audit_refusal(
            request, request.user, status, message, refused_by="validation"
        )
    return result


class PowerKeyAuth(ApiKeyAuth):
    """The API's key auth; a read-only key's write and a bad key's are refused the same way, audited first."""

    def __call__(self, request):
        return audit_later_refusals(request, super().__call__(request))

    def refuse(self, request, user, status: int, message: str, **extra):
        audit_refusal(request, user, status, message, **extra)
        super().refuse(request, user, status, message, **extra)


class PowerSessionAuth(StaffSession):
    """A staff session; tried last, so a write that is still unauthenticated here gets its row (then the API's 401)."""

    def __call__(self, request):
        try:
            result = super().__call__(request)
        except HttpError as exc:  # the CSRF check of a session write
            audit_refusal(request, request.user, exc.status_code, str(exc))
            raise
        if result is None:
            audit_refusal(request, request.user, 401, AUTH_REQUIRED)
        return audit_later_refusals(request, result)


POWER_AUTH = [PowerKeyAuth(), PowerSessionAuth()]
router = Router(tags=["power"], auth=POWER_AUTH)  # mounted on the portal API at /api/
madre_router = Router(tags=["power"], auth=POWER_AUTH)  # mounted at /madre/ by madre_api

SLUG = Field(min_length=1, max_length=64)
ServiceName = Annotated[str, SLUG]


class MaybeEmpty:
    """A path segment that may be empty, so /power/service//start reaches the view and its validation
    (422, "service: ... at least 1 character", audited) instead of matching no route."""

    regex = "[^/]*"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(MaybeEmpty, "maybe_empty")


class ServiceIn(Schema):
    service: ServiceName


class ApplyIn(Schema):
    apply: bool = False


class ModeIn(Schema):
    mode: Literal["low_power", "operative_core", "full"]
    apply: bool = False


def max_ttl(schema: dict) -> None:
    """The OpenAPI maximum of ttl_sec: what at_most_the_max_ttl enforces, read when the document is made."""
    schema["maximum"] = settings.VX11_POWER_WINDOW_MAX_TTL


class WindowIn(Schema):
    services: list[ServiceName] = Field(min_length=1, max_length=50)
    ttl_sec: int = Field(ge=1, json_schema_extra=max_ttl)
    mode: Literal["ttl", "hold"] = "ttl"
    reason: str = Field(default="", max_length=500)

    @field_validator("ttl_sec")
    @classmethod
    def at_most_the_max_ttl(cls, value: int) -> int:
        if value > settings.VX11_POWER_WINDOW_MAX_TTL:  # read per request: the setting may change
            raise ValueError(f"at most {settings.VX11_POWER_WINDOW_MAX_TTL} seconds (VX11_POWER_WINDOW_MAX_TTL)")
        return value


# what the guards of an action can answer besides the API's shared errors (vx11_site.api.document_errors):
# a missing permission or service control off (403), an unknown module (404), no window or a busy module (409),
# the per-user rate (429), the action ran and failed (502)
ACTION = {200: dict[str, Any], 403: Error, 404: Error, 409: Error, 429: Error, 502: Error}


def answer(row: PowerAction) -> dict:
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
    return manager.power_status()


@route("post", "/power/service/start", response=ACTION)
def service_start(request, payload: ServiceIn):
    """madre's plain start: applies at once (all guards still hold)."""
    return answer(manager.perform(request.user, payload.service, "start", True))


@route("post", "/power/service/stop", response=ACTION)
def service_stop(request, payload: ServiceIn):
    return answer(manager.perform(request.user, payload.service, "stop", True))


@route("post", "/power/service/{maybe_empty:service}/{action}", response=ACTION)
def service_action(request, service: ServiceName, action: Literal["start", "stop", "restart"], payload: ApplyIn = None):
    """A plan, unless the body says {"apply": true}."""
    return answer(manager.perform(request.user, service, action, bool(payload and payload.apply)))


@route("post", "/power/mode", response={code: out for code, out in ACTION.items() if code != 404})
def mode(request, payload: ModeIn):
    return answer(manager.perform_mode(request.user, payload.mode, payload.apply))


@route("post", "/power/window/open", response={200: dict[str, Any], 403: Error, 409: Error})
def window_open(request, payload: WindowIn):
    row, window = manager.open_window(request.user, payload.services, payload.ttl_sec, payload.mode, payload.reason)
    return {**answer(row), "window": manager.window_dict(window)}


@route("post", "/power/window/close", response={200: dict[str, Any], 403: Error, 404: Error})
def window_close(request):
    row, window = manager.close_window(request.user)
    return {**answer(row), "window": manager.window_dict(window)}


madre_api = PortalAPI(
    title="VX11 madre power manager",
    version="1",
    description="madre's /madre/power/* paths, served by the portal with every guard enforced.",
    auth=POWER_AUTH,
    urls_namespace="madre-power",
    docs_url="/power/docs",
    openapi_url="/power/openapi.json",
)
madre_api.add_exception_handler(AuthenticationError, on_auth_error)
madre_api.add_exception_handler(ValidationError, on_validation_error)
madre_api.add_exception_handler(Throttled, on_throttled)
madre_api.add_router("/", madre_router)
