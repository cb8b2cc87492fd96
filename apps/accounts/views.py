"""The page a locked-out login gets (django-axes' AXES_LOCKOUT_CALLABLE)."""

from axes.helpers import get_client_username, get_cool_off
from django.conf import settings
from django.contrib import admin
from django.template.response import TemplateResponse


def login_locked_out(request, *args):
    """429 in the admin's look, saying who is locked out, for how long, and how an admin unlocks sooner.

    django-axes passes (response, credentials) from a synchronous request and (credentials, None) from an
    asynchronous one (daphne): the credentials are whichever argument is a dict."""
    credentials = next((a for a in args if isinstance(a, dict)), None)
    cool_off = get_cool_off(request)
    minutes = round(cool_off.total_seconds() / 60)
    context = {
        **admin.site.each_context(request),
        "title": "Login locked",
        "username": get_client_username(request, credentials),
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "minutes": minutes,
    }
    response = TemplateResponse(request, "admin/login_locked_out.html", context, status=429)
    # each failed try during the lockout starts the cool-off again, so it is the whole of it from now
    response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response.render()
