"""Operator backend v7 over HTTP, the paths and bodies old VX11 clients expect: GET /operator/vx11/overview,
GET /operator/shub/dashboard and GET /operator/resources, each a JSON object (apps.operator.upstream builds it).

Every endpoint needs the `X-VX11-Token` header (no `?token=` over HTTP; only /ws takes that, because
browsers cannot set WebSocket headers). Errors keep the v7 shape `{error, status_code}`.
"""

from functools import wraps

from django.contrib.admin.views.decorators import staff_member_required
from django.http import JsonResponse
from django.shortcuts import render

from apps.accounts.models import BadKeyWindow, token_is_valid
from apps.events.models import CANONICAL_TYPES

from . import upstream


def v7_error(status_code: int, error: str) -> JsonResponse:
    return JsonResponse({"error": error, "status_code": status_code}, status=status_code)


def operator_endpoint(view):
    """X-VX11-Token (VX11_TOKEN or a user's API key) required: 401 missing, 403 wrong, 429 after too many
    wrong ones from one address (counted with the API's bad keys); then GET only."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        token = request.headers.get("X-VX11-Token", "")
        if not token:
            return v7_error(401, "auth_required")
        address = request.META.get("REMOTE_ADDR", "")
        wait = BadKeyWindow.wait(address)
        if wait:
            response = v7_error(429, "too_many_bad_tokens")
            response["Retry-After"] = str(wait)
            return response
        if not token_is_valid(token):
            BadKeyWindow.note(address)
            return v7_error(403, "forbidden")
        if request.method not in ("GET", "HEAD"):
            return v7_error(405, "method_not_allowed")
        return view(request, *args, **kwargs)

    return wrapper


@operator_endpoint
def vx11_overview(request):
    """The fleet at a glance; stale modules are probed before answering."""
    return JsonResponse(upstream.fleet_overview())


@operator_endpoint
def shub_dashboard(request):
    """shub's sessions, projects and resources; the offline shape (still 200) when shub cannot answer."""
    return JsonResponse(upstream.shub_dashboard())


@operator_endpoint
def resources(request):
    """hermes' CLI tools and local models; the offline shape (still 200) when hermes cannot answer."""
    return JsonResponse(upstream.hermes_resources())


@staff_member_required
def console(request):
    """The operator console: a session's live event stream, and a form to send an event into it."""
    return render(
        request,
        "operator/console.html",
        {
            "event_types": CANONICAL_TYPES,
            "title": "Operator console",
            "session_id": request.GET.get("session", "operator"),
        },
    )
