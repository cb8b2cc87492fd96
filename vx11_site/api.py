"""The one NinjaAPI: mounts each app's router; the auth classes every router shares.

Auth: a Django session of a staff user, or a per-user API key sent as
`Authorization: Bearer <key>` or `X-API-Key: <key>`. A read-only key may only read. An address
that sent VX11_API_KEY_FAILURES_PER_MIN bad keys this minute gets 429 with Retry-After for any key.

madre's paths (apps.power's madre_api) also take the fleet token, `X-VX11-Token: <VX11_TOKEN>`, as madre did
(FleetTokenAuth): it authenticates the fleet's service principal (vx11_site.permissions.fleet_principal).
Its refusals keep the API's `detail` and add the v7 operator's `error` and `status_code` (V7Refusal).

Errors are JSON `{"detail": "<one line>"}`, 404s too (`get_or_404` names what is missing; a path that is
no endpoint gets `no_such_endpoint`). PortalAPI's OpenAPI document declares the ways to
authenticate and every error status an operation can answer (`document_errors`).
"""

import hmac
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

from django.conf import settings
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from kombu.exceptions import OperationalError as BrokerUnreachable
from ninja import Field, NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.pagination import LimitOffsetPagination
from ninja.security import SessionAuthIsStaff
from pydantic import AfterValidator

from apps.accounts.models import ApiKey, BadKeyWindow
from vx11_site.permissions import fleet_principal

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
BROKER_RETRY_AFTER = 30  # seconds a client is told to wait when the Celery broker refused its request

log = logging.getLogger(__name__)


class ApiKeyAuth:
    """Per-user API keys (apps.accounts), with read-only keys refused on writes."""

    openapi_type = "apiKey"

    def __call__(self, request: HttpRequest):
        plain = request.headers.get("X-API-Key")
        header = request.headers.get("Authorization", "")
        if not plain and header.lower().startswith("bearer "):
            plain = header[7:].strip()
        if not plain:
            return None  # let the session auth try
        address = request.META.get("REMOTE_ADDR", "")
        wait = BadKeyWindow.wait(address)
        if wait:  # before the key is looked at: a good guess must not be told apart from a bad one
            self.refuse(
                request, None, 429, f"too many invalid API keys from {address}; retry in {wait} s", retry_after=wait
            )
        key = ApiKey.authenticate(plain)
        if key is None:
            BadKeyWindow.note(address)
            self.refuse(request, None, 401, "invalid or revoked API key")
        if key.read_only and request.method not in SAFE_METHODS:
            self.refuse(
                request,
                key.user,
                403,
                f"API key '{key.name}' is read-only; {request.method} needs a read-write key",
                api_key=key.name,
            )
        request.user = key.user
        return key

    def refuse(self, request: HttpRequest, user, status: int, message: str, retry_after: int | None = None, **extra):
        """Say no; a router that audits refusals (apps.power) records them first."""
        if retry_after:
            raise Throttled(message, retry_after)
        raise HttpError(status, message)


class V7Refusal(HttpError):
    """A refusal where the fleet token is accepted: the API's `detail` plus the v7 operator's `error` word
    (auth_required, forbidden, too_many_bad_tokens) and `status_code` (on_v7_refusal), so clients of either read it."""

    def __init__(self, status: int, error: str, message: str, retry_after: int | None = None):
        super().__init__(status, message)
        self.error = error
        self.retry_after = retry_after


class FleetTokenAuth:
    """`X-VX11-Token: <VX11_TOKEN>` authenticates the fleet's service principal, a user made on first use with
    `grants`; deactivating that user turns the token off. Tried after the API key and before the staff session,
    which it leaves a request that has one. A wrong token is 403 and counts as a bad key of its address
    (BadKeyWindow): too many, and 429 for any."""

    openapi_type = "apiKey"
    grants: tuple[str, ...] = ()

    def __call__(self, request: HttpRequest):
        token = request.headers.get("X-VX11-Token", "")
        if not token:
            return None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and (user.is_staff or user.is_superuser):
            return None  # a person's credentials win: the staff session
        address = request.META.get("REMOTE_ADDR", "")
        wait = BadKeyWindow.wait(address)
        if wait:
            self.refuse(
                request,
                None,
                V7Refusal(429, "too_many_bad_tokens", f"too many invalid keys from {address}; retry in {wait} s", wait),
            )
        if not hmac.compare_digest(token.encode(), settings.VX11_TOKEN.encode()):
            BadKeyWindow.note(address)
            self.refuse(request, None, V7Refusal(403, "forbidden", "invalid X-VX11-Token"))
        principal = fleet_principal(*self.grants)
        if not principal.is_active:  # an administrator's way to turn the token off without changing it
            self.refuse(request, None, V7Refusal(403, "forbidden", f"the fleet token's user '{principal}' is inactive"))
        request.user = principal
        return principal

    def refuse(self, request: HttpRequest, user, refusal: V7Refusal, **extra):
        """Say no; a router that audits refusals (apps.power) records them first."""
        raise refusal


def on_v7_refusal(request, exc: V7Refusal):
    response = api.create_response(
        request, {"detail": str(exc), "error": exc.error, "status_code": exc.status_code}, status=exc.status_code
    )
    if exc.retry_after:
        response["Retry-After"] = str(exc.retry_after)
    return response


def on_token_auth_error(request, exc):
    """No credentials where the fleet token is accepted: 401 in both shapes, naming the token first."""
    return on_v7_refusal(
        request,
        V7Refusal(
            401,
            "auth_required",
            "authentication required: send 'X-VX11-Token', 'Authorization: Bearer <api key>' or 'X-API-Key', "
            "or log in as staff",
        ),
    )


class Throttled(HttpError):
    """429 with the seconds to wait, sent as Retry-After (on_throttled)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(429, message)
        self.retry_after = retry_after


class Unavailable(HttpError):
    """503 with the seconds to wait, sent as Retry-After (on_unavailable): something the request needs, the Celery
    broker, is down for now; the same request may succeed later."""

    def __init__(self, message: str, retry_after: int = BROKER_RETRY_AFTER):
        super().__init__(503, message)
        self.retry_after = retry_after


class StaffSession(SessionAuthIsStaff):
    """A staff user's Django session. Its CSRF check guards that session's writes, so it runs only when
    there is such a session: a request with no credentials at all is a 401, not a failed CSRF check."""

    def __call__(self, request: HttpRequest):
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or not (user.is_staff or user.is_superuser):
            return None
        try:
            return super().__call__(request)
        except HttpError as exc:
            raise HttpError(
                exc.status_code,
                "CSRF check failed: a write in a staff session needs the X-CSRFToken "
                "header (API clients send an API key instead)",
            ) from None


class Error(Schema):
    """Every error answer: one line saying what was wrong (a 422 adds `errors`, pydantic's list)."""

    detail: str


def filter_given(queryset, **fields):
    """`queryset` narrowed by the list filters the request gave (a query parameter left out is None or "")."""
    return queryset.filter(**{name: value for name, value in fields.items() if value not in (None, "")})


def get_or_404(queryset, **lookup):
    """The one row matching `lookup`, or a 404 naming what was looked for: `no module with slug 'x'`."""
    queryset = queryset if isinstance(queryset, QuerySet) else queryset._default_manager.all()
    try:
        return queryset.get(**lookup)
    except queryset.model.DoesNotExist:
        what = " and ".join(f"{'id' if field == 'pk' else field} {value!r}" for field, value in lookup.items())
        raise HttpError(404, f"no {queryset.model._meta.verbose_name} with {what}") from None


MAX_UTC_OFFSET = timedelta(hours=14)  # the widest offset in use (Kiribati); PostgreSQL refuses beyond 15:59


def in_utc(value: datetime) -> datetime:
    """A datetime the database can compare: aware (naive ones are in TIME_ZONE), an offset within
    MAX_UTC_OFFSET, and still a datetime once in UTC (0001-01-01T00:00+01:00 is not)."""
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    if abs(value.utcoffset()) > MAX_UTC_OFFSET:
        raise ValueError("UTC offset out of range: at most -14:00 to +14:00")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC (years 1 to 9999)") from None


Instant = Annotated[datetime, AfterValidator(in_utc)]
# a row id the API takes: a positive 64-bit integer (SQLite raises on a larger one: a 500 instead of a 422)
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]


class Paged(LimitOffsetPagination):
    """limit/offset paging for every list; an offset beyond any table (past 64 bits) is a 422, not a database error."""

    class Input(LimitOffsetPagination.Input):
        offset: int = Field(0, ge=0, le=2**62)


def validation_detail(exc) -> str:
    """A Django ValidationError as one line, `field: message; ...` (also for one without fields)."""
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    return "; ".join(exc.messages)


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "a portal API key: `Authorization: Bearer <key>`"},
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "the same API key in its own header",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": settings.SESSION_COOKIE_NAME,
        "description": "a staff user's admin session; its writes also need the X-CSRFToken header",
    },
}
# where the fleet token is accepted (madre's document): the token alone reads and plans; applying also needs the
# power key (apps.power.api.PowerTokenAuth)
TOKEN_SCHEMES = {
    "vx11Token": {
        "type": "apiKey",
        "in": "header",
        "name": "X-VX11-Token",
        "description": "the fleet token (VX11_TOKEN): reads and plans; applying also needs X-VX11-POWER-KEY",
    },
    "vx11PowerKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-VX11-POWER-KEY",
        "description": "VX11_POWER_KEY, with X-VX11-Token: the second factor of a write that applies",
    },
}
# (status, which operations can answer it, why): the errors every route shares; a route declares its own
# (409, 503, ...) in `response=` with the Error schema. `token`: the document's API accepts the fleet token.
SHARED_ERRORS = [
    (400, lambda op, method, token: True, "malformed request: a NUL character anywhere, or a body that is not JSON"),
    (401, lambda op, method, token: "security" in op, "no credentials, or an invalid or revoked API key"),
    (
        403,
        lambda op, method, token: "security" in op and (method != "get" or token),
        "a read-only key's write, a session's write without its CSRF token, a missing permission; "
        "where the fleet token is accepted, a wrong X-VX11-Token or X-VX11-POWER-KEY",
    ),
    (
        404,
        lambda op, method, token: any(p["in"] == "path" for p in op.get("parameters", ())),
        "no such object; the message names it",
    ),
    (413, lambda op, method, token: "requestBody" in op, "the body is over DATA_UPLOAD_MAX_MEMORY_SIZE"),
    (
        422,
        lambda op, method, token: bool(op.get("parameters") or op.get("requestBody")),
        "invalid input: `detail` says what, `errors` lists each problem",
    ),
    (
        429,
        lambda op, method, token: "security" in op,
        "too many invalid API keys (or tokens) from this address; see Retry-After",
    ),
]
ERROR_DESCRIPTIONS = {
    409: "conflicts with the current state; the message says with what",
    503: "something the request needs is down for now; see Retry-After",
}


def document_errors(schema: dict, fleet_token: bool = False) -> dict:
    """Declare in an OpenAPI document what the server enforces: the security schemes on every operation that
    needs auth (with `fleet_token`, also the token, and the token with the power key on writes), and each error
    status an operation can answer, with the Error schema."""
    components = schema.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES | (TOKEN_SCHEMES if fleet_token else {})
    components.setdefault("schemas", {})["Error"] = Error.model_json_schema()
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for operations in schema["paths"].values():
        for method, op in operations.items():
            if "security" in op:
                op["security"] = [{name: []} for name in SECURITY_SCHEMES]
                if fleet_token:
                    op["security"].append({"vx11Token": []})
                if fleet_token and method != "get":
                    op["security"].append({"vx11Token": [], "vx11PowerKey": []})
            responses = op.setdefault("responses", {})
            for status, applies, why in SHARED_ERRORS:
                if applies(op, method, fleet_token):
                    responses.setdefault(status, {})["description"] = why
            for status, response in responses.items():
                if int(status) >= 400:
                    response.setdefault("description", ERROR_DESCRIPTIONS.get(int(status), "error"))
                    response["content"] = error
    return schema


class PortalAPI(NinjaAPI):
    """A NinjaAPI whose OpenAPI document declares auth and errors (document_errors) and whose 404s say what
    was not found; the portal's API and madre's use it. `fleet_token`: its auth takes X-VX11-Token too."""

    def __init__(self, fleet_token: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.fleet_token = fleet_token
        self.add_exception_handler(Http404, self.on_not_found)
        if fleet_token:
            self.add_exception_handler(V7Refusal, on_v7_refusal)
            self.add_exception_handler(AuthenticationError, on_token_auth_error)

    def get_openapi_schema(self, **kwargs):
        return document_errors(super().get_openapi_schema(**kwargs), self.fleet_token)

    def on_not_found(self, request, exc):
        """A Django Http404 that get_or_404 did not word: its message, else the path."""
        return self.create_response(request, {"detail": str(exc) or f"not found: {request.path}"}, status=404)


@csrf_exempt  # a 404 whatever the method: the CSRF check would turn a POST's into an HTML 403
def no_such_endpoint(request, *args, **kwargs):
    """A path under /api/ or /madre/ that no route matches: JSON, like every other answer there."""
    docs = "/madre/power/docs" if request.path.startswith("/madre/") else "/api/docs"
    return JsonResponse({"detail": f"no endpoint {request.method} {request.path}; {docs} lists them"}, status=404)


api = PortalAPI(
    title="VX11 Ops Portal API",
    version="1",
    description="Fleet, flows, daughters, power, audits and metrics of the VX11 fleet.",
    auth=[ApiKeyAuth(), StaffSession()],
    docs_url="/docs",
)


@api.exception_handler(AuthenticationError)
def on_auth_error(request, exc):
    return api.create_response(
        request,
        {
            "detail": "authentication required: send 'Authorization: Bearer <api key>' or 'X-API-Key', "
            "or log in as staff"
        },
        status=401,
    )


@api.exception_handler(Throttled)
def on_throttled(request, exc):
    response = api.create_response(request, {"detail": str(exc)}, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(Unavailable)
def on_unavailable(request, exc):
    response = api.create_response(request, {"detail": str(exc)}, status=503)
    response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(BrokerUnreachable)
def on_broker_unreachable(request, exc):
    """A Celery publish that failed where no view expected it (kombu's OperationalError): a 503, never a 500."""
    log.warning("%s %s: the Celery broker is unreachable: %s", request.method, request.path, exc)
    return on_unavailable(
        request, Unavailable(f"the task queue (Celery broker) is unreachable; try again in {BROKER_RETRY_AFTER} s")
    )


@api.exception_handler(ValidationError)
def on_validation_error(request, exc):
    """422 with one readable line plus the structured errors."""
    lines = []
    for err in exc.errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "payload"))
        lines.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    detail = "; ".join(lines) or "invalid input"
    audit = getattr(request, "audit_refusal", None)  # set by the auth of a router that audits its refusals (apps.power)
    if audit is not None:
        audit(422, detail)
    return api.create_response(request, {"detail": detail, "errors": exc.errors}, status=422)


api.add_router("/", "apps.fleet.api.router")
api.add_router("/", "apps.daughters.api.router")
api.add_router("/", "apps.power.api.router")
api.add_router("/", "apps.flows.api.router")
api.add_router("/", "apps.evidence.api.router")
api.add_router("/", "apps.housekeeping.api.router")
api.add_router("/", "apps.audits.api.router")
api.add_router("/", "apps.metrics.api.router")
api.add_router("/", "apps.pipeline.api.router")
