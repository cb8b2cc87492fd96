"""Power API: madre's paths at the root (/madre/power/...) and the same under /api/power/...

Auth is the portal API's (API key or staff session; read-only keys refused on writes); acting
also needs the permission power.control_services. Every refusal is audited before it is answered,
the auth's own too: the power routers use PowerKeyAuth and PowerSessionAuth, which refuse exactly as
the API's classes do (same status, same message, still before the body is validated) but write the
PowerAction row first. A body that then fails validation (422) is audited through the same hook.

madre's paths also take the fleet token, as madre did (PowerTokenAuth): `X-VX11-Token` alone reads and plans;
a write that applies also needs `X-VX11-POWER-KEY` equal to VX11_POWER_KEY (unset: refused). /api/power/ does
not take it: the portal's own API stays with per-user keys, so the shared secret reaches only madre's contract.

Answers (PowerAction.as_dict) carry madre's `status` word ("ok", "plan", "error"), the HTTP code as
`http_status`; a refusal (4xx) is the API's error `{"detail"}`, an action that ran and failed is 502 with
the whole answer and its `detail`.
"""

import hmac
import json
import re
from typing import Annotated, Any, Literal

from django.conf import settings
from django.urls import register_converter
from ninja import Router, Schema, Status
from ninja.errors import HttpError, ValidationError
from pydantic import Field, TypeAdapter, field_validator
from pydantic import ValidationError as NotABool

from apps.accounts.models import BadKeyWindow
from vx11_site.api import (
    SAFE_METHODS,
    ApiKeyAuth,
    Error,
    FleetTokenAuth,
    PortalAPI,
    StaffSession,
    Throttled,
    V7Refusal,
    on_throttled,
    on_validation_error,
)

from . import manager
from .models import PowerAction

WRITE_PATH = re.compile(
    r"/power/(?:service/(?P<verb>start|stop)|service/(?P<name>[^/]*)/(?P<action>[^/]+)|(?P<mode>mode)"
    r"|window/(?P<window>open|close))/?$"
)
AUTH_REQUIRED = "authentication required (no valid API key, staff session or, on madre's paths, X-VX11-Token)"


def wants_apply(body: dict) -> bool:
    """Whether a body asks to apply, as its validation will read it ({"apply": "false"} is a plan); a value that
    is no bool counts as applying, so a guard refuses it rather than let it through as a plan."""
    try:
        return TypeAdapter(bool).validate_python(body.get("apply", False))
    except NotABool:
        return True


def asked(request) -> tuple[str, str, dict, bool]:
    """What a write asks for - action, service, plan, apply - from its path and raw body (not validated yet)."""
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
        return request.method.lower(), request.path, plan, True
    if match["verb"]:  # madre's plain start/stop always apply
        return match["verb"], str(body.get("service", "")), plan, True
    if match["action"]:  # the name may be empty
        return match["action"], match["name"], plan, wants_apply(body)
    if match["mode"]:
        return "mode", str(body.get("mode", "")), plan, wants_apply(body)
    services = body.get("services") if match["window"] == "open" else None
    window = ",".join(map(str, services)) if isinstance(services, list) else "window"
    return f"window_{match['window']}", window, plan, True


def audit_refusal(request, user, status: int, message: str, **extra) -> None:
    """A write refused by the auth is a PowerAction row too (reads are not actions)."""
    if request.method not in SAFE_METHODS:
        action, service, plan, apply = asked(request)
        manager.refuse_request(user, action, service, {**plan, **extra}, status, message, apply=apply)


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


class PowerTokenAuth(FleetTokenAuth):
    """The fleet token on madre's paths, its principal holding power.control_services (so `require` still decides).
    A write that applies also needs X-VX11-POWER-KEY = VX11_POWER_KEY, madre's second factor; every refusal is
    audited first, a wrong token's as anonymous (it proved nothing), the missing power key's as the token's."""

    grants = (manager.PERMISSION,)

    def __call__(self, request):
        principal = super().__call__(request)
        if principal is not None and request.method not in SAFE_METHODS and asked(request)[3]:
            self.check_power_key(request)
        return audit_later_refusals(request, principal)

    def check_power_key(self, request) -> None:
        expected = settings.VX11_POWER_KEY
        if not expected:
            self.refuse(
                request,
                request.user,
                V7Refusal(
                    403,
                    "forbidden",
                    "VX11_POWER_KEY is not set on this portal, so writes that apply with X-VX11-Token are refused "
                    '(plans, {"apply": false}, are allowed); use an API key, or set VX11_POWER_KEY',
                ),
            )
        sent = request.headers.get("X-VX11-POWER-KEY", "")
        if not sent:
            self.refuse(
                request, request.user, V7Refusal(403, "forbidden", "applying with X-VX11-Token needs X-VX11-POWER-KEY")
            )
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            BadKeyWindow.note(request.META.get("REMOTE_ADDR", ""))
            self.refuse(request, request.user, V7Refusal(403, "forbidden", "invalid X-VX11-POWER-KEY"))

    def refuse(self, request, user, refusal: V7Refusal, **extra):
        audit_refusal(request, user, refusal.status_code, str(refusal), credential="X-VX11-Token", **extra)
        super().refuse(request, user, refusal, **extra)


POWER_AUTH = [PowerKeyAuth(), PowerSessionAuth()]
MADRE_AUTH = [PowerKeyAuth(), PowerTokenAuth(), PowerSessionAuth()]
router = Router(tags=["power"], auth=POWER_AUTH)  # mounted on the portal API at /api/
madre_router = Router(tags=["power"], auth=MADRE_AUTH)  # mounted at /madre/ by madre_api

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
# the per-user rate (429), the action ran and failed (502: the whole answer, its `detail` too, so it is an Error)
ACTION = {200: dict[str, Any], 403: Error, 404: Error, 409: Error, 429: Error, 502: dict[str, Any]}


def answer(row: PowerAction) -> dict | Status:
    """A refusal is the API's error; an action that ran and failed is the whole answer with the status "error"."""
    if row.http_status >= 500:
        return Status(row.http_status, {**row.as_dict(), "detail": row.message})
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
    """Open the power window and start its services that are not running (what it started, it stops)."""
    opened = manager.open_window(request.user, payload.services, payload.ttl_sec, payload.mode, payload.reason)
    return {**answer(opened.action), **opened.as_dict()}


@route("post", "/power/window/close", response={200: dict[str, Any], 403: Error, 404: Error})
def window_close(request):
    """Close it; a ttl window stops what it started, a hold window leaves it running."""
    closed = manager.close_window(request.user)
    return {**answer(closed.action), **closed.as_dict()}


@route("get", "/power/state")
def window_state(request):
    """madre's window state: the open power window, or {"state": "closed"}."""
    return manager.window_state()


madre_api = PortalAPI(
    fleet_token=True,
    title="VX11 madre power manager",
    version="1",
    description="madre's /madre/power/* paths, served by the portal with every guard enforced.",
    auth=MADRE_AUTH,
    urls_namespace="madre-power",
    docs_url="/power/docs",
    openapi_url="/power/openapi.json",
)
madre_api.add_exception_handler(ValidationError, on_validation_error)
madre_api.add_exception_handler(Throttled, on_throttled)
madre_api.add_router("/", madre_router)
