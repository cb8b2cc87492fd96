"""Refuse, before any view or auth runs, input that no view can store or compare.

PostgreSQL text and jsonb cannot hold a NUL character, so one anywhere in a request - the path
(`%00`), the query string, a header or cookie, a JSON body (`\\u0000`) or a form field - is a 400
here instead of a database error deep in a view (or in the audit row of its refusal). A JSON body
with NaN or Infinity (Python's json accepts them; JSON and jsonb do not) is a 422, and one over
DATA_UPLOAD_MAX_MEMORY_SIZE a 413 (JSON, as the API's other answers).
These requests never reach a view, so nothing is stored, not even an audit row.
"""

import json
from urllib.parse import unquote

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse

NUL = "\x00"


class _NotJson:
    """What json.loads makes of NaN, Infinity and -Infinity here, so the walk can say where one was."""

    def __init__(self, token: str):
        self.token = token


def _walk(value, where: str = ""):
    """(location, value) for every key and leaf of a parsed JSON document, without recursion."""
    stack = [(where, value)]
    while stack:
        at, item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                yield at or "(top level)", key
                stack.append((f"{at}.{key}" if at else str(key), child))
        elif isinstance(item, list):
            stack.extend((f"{at}[{i}]", child) for i, child in enumerate(item))
        else:
            yield at or "(top level)", item


def _json_problem(request) -> tuple[int, str] | None:
    try:
        body = request.body
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return 413, f"the request body is over {limit} bytes (DATA_UPLOAD_MAX_MEMORY_SIZE)"
    try:
        document = json.loads(body, parse_constant=_NotJson)
    except (ValueError, RecursionError):
        return None  # not JSON at all: the view's parser says so (ninja: 400 "Cannot parse request body")
    for at, value in _walk(document):
        if isinstance(value, str) and NUL in value:
            return 400, f"NUL characters (\\u0000) are not allowed: in the JSON body at {at}"
        if isinstance(value, _NotJson):
            return 422, f"{value.token} is not a JSON number (JSON has no NaN or Infinity): in the JSON body at {at}"
    return None


def request_problem(request) -> tuple[int, str] | None:
    """(status, message) for the first unstorable part of the request, or None."""
    if NUL in request.path_info or NUL in request.path:
        return 400, "NUL characters (%00) are not allowed in the URL path"
    if NUL in unquote(request.META.get("QUERY_STRING", "")):
        return 400, "NUL characters (%00) are not allowed in the query string"
    for key, value in request.META.items():
        if key.startswith("HTTP_") and isinstance(value, str) and NUL in value:
            return 400, f"NUL characters are not allowed in the {key[5:].replace('_', '-').title()} header"
    if any(NUL in name or NUL in value for name, value in request.COOKIES.items()):
        return 400, "NUL characters are not allowed in cookies"
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    if request.content_type == "application/json" or request.content_type.endswith("+json"):
        return _json_problem(request)
    form = request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")
    if form and any(NUL in name or any(NUL in v for v in values) for name, values in request.POST.lists()):
        return 400, "NUL characters (%00) are not allowed in form fields"
    return None


class RefuseUnstorableInput:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        problem = request_problem(request)
        if problem is not None:
            status, message = problem
            return JsonResponse({"detail": message}, status=status)
        return self.get_response(request)
