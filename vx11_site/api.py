"""The one NinjaAPI: mounts each app's router; the auth classes every router shares.

Auth: a Django session of a staff user, or a per-user API key sent as
`Authorization: Bearer <key>` or `X-API-Key: <key>`. A read-only key may only read.
"""

from django.http import HttpRequest
from ninja import NinjaAPI
from ninja import Field
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.pagination import LimitOffsetPagination
from ninja.security import SessionAuthIsStaff

from apps.accounts.models import ApiKey

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


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
        key = ApiKey.authenticate(plain)
        if key is None:
            self.refuse(request, None, 401, "invalid or revoked API key")
        if key.read_only and request.method not in SAFE_METHODS:
            self.refuse(request, key.user, 403, f"API key '{key.name}' is read-only; {request.method} needs a read-write key", api_key=key.name)
        request.user = key.user
        return key

    def refuse(self, request: HttpRequest, user, status: int, message: str, **extra):
        """Say no; a router that audits refusals (apps.power) records them first."""
        raise HttpError(status, message)


class Paged(LimitOffsetPagination):
    """limit/offset paging for every list; an offset beyond any table (past 64 bits) is a 422, not a database error."""

    class Input(LimitOffsetPagination.Input):
        offset: int = Field(0, ge=0, le=2**62)


def validation_detail(exc) -> str:
    """A Django ValidationError as one line, `field: message; ...` (also for one without fields)."""
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    return "; ".join(exc.messages)


api = NinjaAPI(
    title="VX11 Ops Portal API",
    version="1",
    description="Fleet, flows, daughters, power, audits and metrics of the VX11 fleet.",
    auth=[ApiKeyAuth(), SessionAuthIsStaff()],
    docs_url="/docs",
)


@api.exception_handler(AuthenticationError)
def on_auth_error(request, exc):
    return api.create_response(
        request,
        {"detail": "authentication required: send 'Authorization: Bearer <api key>' or 'X-API-Key', or log in as staff"},
        status=401,
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
