"""Flow definitions: checking and reading the YAML/JSON shape of `Flow.to_spec()`.

Validation lives in one place, `check_spec()`, a pure function the loader, the API and the admin all go
through, so a bad definition is refused everywhere with a message naming the bad step; `check_references()`
adds the checks that need the database (modules and models exist).

A step is one of three kinds:
  http   call a module (method, path, headers, body) and state what must hold: the status code,
         values at JSON paths (equals, exists, one_of, regex) and a latency bound; capture values.
  db     rows of a model matching a filter appear (and all match `expect`) within `within` seconds;
         a row matching `fail_on` fails the step at once.
  spawn  madre's side of flow B: the portal's daughters app spawns a daughter (DaughterTask.spawn).
Captured values are used by later steps as `{{ steps.N.name }}` (N is the 1-based step number).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from django.apps import apps as django_apps
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, ValidationError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
CAPTURE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
TEMPLATE = re.compile(r"\{\{\s*(steps\.(\d+)\.([A-Za-z_][A-Za-z0-9_]*)|env\.(VX11_[A-Z0-9_]+))\s*\}\}")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
CHECK_OPS = ("equals", "exists", "one_of", "regex")
KINDS = ("http", "db", "spawn")
MAX_STEPS = 50
# keys a step spec may carry, per kind (plus name, kind)
STEP_KEYS = {
    "http": {"module", "method", "path", "headers", "body", "timeout", "expect", "capture"},
    "db": {"db", "capture"},
    "spawn": {"spawn", "capture"},
}
EXPECT_KEYS = {"status", "max_latency_ms", "json"}
DB_KEYS = {"model", "filter", "expect", "fail_on", "within", "min_count"}
SPAWN_KEYS = {"kind", "params", "source", "description", "ttl_seconds", "max_retries", "intent_id"}
SPAWN_CAPTURES = ("task_id", "daughter_ids", "status")
DEFINITIONS = Path(__file__).resolve().parent / "definitions"
CANONICAL = ("A", "B", "C")  # frozen into migration 0002 (a test keeps the two in step)
MAX_FILE_BYTES = 1_000_000  # a definition file larger than this is refused
# apps whose tables hold credentials or sessions: a db step never reads them, whatever VX11_FLOW_DB_MODELS says
NEVER_APPS = {"auth", "sessions", "accounts", "admin", "contenttypes", "authtoken", "otp_static", "otp_totp"}
NEVER_ENV = {"VX11_TOKEN", "VX11_TOKEN_FILE"}  # secrets of the portal itself: never readable by a flow


# -- what a flow may read: models (db steps) and environment variables ({{ env.NAME }}) ---------


def model_allowed(model) -> bool:
    """A model a db step may query: listed in VX11_FLOW_DB_MODELS ("app.Model" or "app.*") and not in an app
    holding credentials (NEVER_APPS) nor the user model."""
    app, name = model._meta.app_label.lower(), model._meta.object_name.lower()
    if app in NEVER_APPS or model._meta.label_lower == settings.AUTH_USER_MODEL.lower():
        return False
    for entry in settings.VX11_FLOW_DB_MODELS:
        want_app, _, want_model = entry.lower().partition(".")
        if want_app == app and want_model in ("*", name):
            return True
    return False


def flow_model(label: str):
    """The model a db step names, if flows may read it; ValueError otherwise."""
    try:
        model = django_apps.get_model(label)
    except (LookupError, ValueError):
        raise ValueError(f"unknown model {label!r}") from None
    if not model_allowed(model):
        raise ValueError(
            f"model {label!r} is not one a flow may read; allowed (setting VX11_FLOW_DB_MODELS): "
            f"{', '.join(settings.VX11_FLOW_DB_MODELS) or 'none'}"
        )
    return model


def check_lookup(model, lookup: str, what: str) -> None:
    """A filter/expect/fail_on lookup names a field of the model and follows relations only into models a
    flow may read (else `task__created_by__password__startswith` would read the user table a bit at a time)."""
    parts = lookup.split("__")
    current = model
    for i, part in enumerate(parts):
        meta = current._meta
        try:
            field = meta.pk if part == "pk" else meta.get_field(part)
        except FieldDoesNotExist:
            field = next((f for f in meta.concrete_fields if f.attname == part), None)
            if field is None:
                if i == 0:
                    raise ValueError(f"{what}: {model._meta.label} has no field {part!r}") from None
                return  # a lookup or transform: status__in, created__date
            return  # an attname (task_id): the value itself, no relation followed
        if not field.is_relation or field.related_model is None or i + 1 == len(parts):
            return  # a plain field (what follows is a lookup or a JSON key), or a relation compared by pk
        related = field.related_model
        following = parts[i + 1]
        names = {f.name for f in related._meta.get_fields()} | {f.attname for f in related._meta.concrete_fields}
        if following not in names or following in ("pk", related._meta.pk.name, related._meta.pk.attname):
            return  # task__in, triggered_by__isnull, task__pk: compares the key only
        if not model_allowed(related):
            raise ValueError(f"{what}: {lookup!r} reaches {related._meta.label}, which a flow may not read")
        current = related


def env_allowed(name: str) -> bool:
    """An environment variable a flow may read: VX11_FLOW_* or listed in VX11_FLOW_ENV_NAMES; never VX11_TOKEN."""
    if name in NEVER_ENV or name.endswith("_FILE"):
        return False
    return name.startswith("VX11_FLOW_") or name in settings.VX11_FLOW_ENV_NAMES


def env_refused(name: str) -> str:
    return (
        f"{name} is not an environment variable a flow may read (names starting VX11_FLOW_, or listed in "
        f"VX11_FLOW_ENV_NAMES; never VX11_TOKEN)"
    )


# -- the definition: one validating function for every way in ---------------------------------


def _templates_in(value) -> list[re.Match]:
    """Every {{ ... }} in a value (strings inside dicts and lists too); a malformed one raises."""
    if isinstance(value, str):
        found = list(TEMPLATE.finditer(value))
        if value.count("{{") != len(found):
            raise ValueError(f"malformed template in {value!r}: use {{{{ steps.N.name }}}} or {{{{ env.VX11_NAME }}}}")
        return found
    if isinstance(value, dict):
        return [m for k, v in value.items() for m in _templates_in(k) + _templates_in(v)]
    if isinstance(value, list):
        return [m for v in value for m in _templates_in(v)]
    return []


def _jsonpath(expr, what: str) -> None:
    from jsonpath_ng.ext import parse

    if not isinstance(expr, str) or not expr.strip():
        raise ValueError(f"{what} must be a JSONPath string like $.status")
    try:
        parse(expr)
    except Exception as exc:  # JsonPathParserError, and the lexer's own plain exceptions
        raise ValueError(f"{what}: invalid JSONPath {expr!r} ({exc})") from None


def _number(value, what: str, low: float = 0, high: float | None = None, integer: bool = False):
    kinds = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or not math.isfinite(value)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f" and at most {high:g}" if high is not None else ""
        raise ValueError(
            f"{what} must be a{'n integer' if integer else ' number'} of at least {low:g}{bound}, not {value!r}"
        )
    return value


def _finite(value, what: str) -> None:
    """NaN and Infinity: Python's JSON reads them, PostgreSQL's jsonb and every other JSON reader refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} is {value!r}: numbers must be finite (NaN and Infinity are not JSON)")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(item, f"{what}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _finite(item, f"{what}[{i}]")


def _unknown(keys, allowed, what: str) -> None:
    extra = sorted(set(keys) - set(allowed))
    if extra:
        raise ValueError(f"unknown {what} key(s): {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")


def _check(raw, i: int) -> dict:
    """One JSON check, {path, equals|exists|one_of|regex: value}, normalised to {path, op, value}."""
    what = f"expect.json[{i}]"
    if not isinstance(raw, dict) or "path" not in raw:
        raise ValueError(f"{what} must be an object like {{path: $.status, equals: ok}}")
    if "op" in raw:  # the stored form
        _unknown(raw, {"path", "op", "value"}, what)
        op, value = raw["op"], raw.get("value")
    else:
        ops = [k for k in raw if k != "path"]
        if len(ops) != 1 or ops[0] not in CHECK_OPS:
            raise ValueError(f"{what} needs exactly one of {', '.join(CHECK_OPS)} besides path")
        op, value = ops[0], raw[ops[0]]
    if op not in CHECK_OPS:
        raise ValueError(f"{what}: unknown op {op!r}; expected one of {', '.join(CHECK_OPS)}")
    _jsonpath(raw["path"], f"{what}.path")
    if op == "exists" and not isinstance(value, bool):
        raise ValueError(f"{what}: exists takes true or false")
    if op == "one_of" and (not isinstance(value, list) or not value):
        raise ValueError(f"{what}: one_of takes a non-empty list")
    if op == "regex":
        if not isinstance(value, str):
            raise ValueError(f"{what}: regex takes a string")
        if not TEMPLATE.search(value):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{what}: invalid regex {value!r} ({exc})") from None
    return {"path": raw["path"], "op": op, "value": value}


def _http_step(raw: dict) -> dict:
    module = raw.get("module")
    if not isinstance(module, str) or not module:
        raise ValueError("module is required (a module slug, e.g. madre)")
    method = str(raw.get("method", "GET")).upper()
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")
    path = raw.get("path")
    if not isinstance(path, str) or not path.startswith("/") or len(path) > 500:
        raise ValueError("path is required and must start with / (at most 500 characters)")
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ValueError("headers must be an object of strings")
    timeout = raw.get("timeout")
    if timeout is not None:
        _number(timeout, "timeout", 0.01, settings.VX11_FLOW_MAX_WAIT_SECONDS)
    expect = raw.get("expect") or {}
    if not isinstance(expect, dict):
        raise ValueError("expect must be an object with status, max_latency_ms, json")
    _unknown(expect, EXPECT_KEYS, "expect")
    status = expect.get("status", 200)
    if status is not None:
        _number(status, "expect.status", 100, 599, integer=True)
    latency = expect.get("max_latency_ms")
    if latency is not None:
        _number(latency, "expect.max_latency_ms", 0)
    checks = expect.get("json") or []
    if not isinstance(checks, list):
        raise ValueError("expect.json must be a list of checks")
    return {
        "module": module,
        "method": method,
        "path": path,
        "headers": headers,
        "body": raw.get("body"),
        "timeout": timeout,
        "expect_status": status,
        "max_latency_ms": latency,
        "checks": [_check(c, i) for i, c in enumerate(checks)],
    }


def _db_step(raw: dict) -> dict:
    db = raw.get("db")
    if not isinstance(db, dict):
        raise ValueError("db must be an object with model, filter, expect, fail_on, within")
    _unknown(db, DB_KEYS, "db")
    label = db.get("model")
    if not isinstance(label, str) or label.count(".") != 1:
        raise ValueError("db.model must be an app_label.Model, e.g. daughters.Daughter")
    for key in ("filter", "expect", "fail_on"):
        if not isinstance(db.get(key) or {}, dict):
            raise ValueError(f"db.{key} must be an object of field lookups")
    if not db.get("filter"):
        raise ValueError("db.filter is required (which rows to watch)")
    _number(db.get("within", 0), "db.within", 0, settings.VX11_FLOW_MAX_WAIT_SECONDS)
    _number(db.get("min_count", 1), "db.min_count", 1, integer=True)
    return {
        "db": {
            "model": label,
            "filter": db["filter"],
            "expect": db.get("expect") or {},
            "fail_on": db.get("fail_on") or {},
            "within": db.get("within", 0),
            "min_count": db.get("min_count", 1),
        }
    }


def _spawn_step(raw: dict) -> dict:
    spawn = raw.get("spawn")
    if not isinstance(spawn, dict):
        raise ValueError("spawn must be an object with kind, params, ttl_seconds ...")
    _unknown(spawn, SPAWN_KEYS, "spawn")
    if not isinstance(spawn.get("kind"), str) or not spawn["kind"]:
        raise ValueError("spawn.kind is required (http, command, ...)")
    if spawn["kind"].strip().lower() == "flow":
        raise ValueError(
            "spawn.kind 'flow' is refused: a flow may not start flows (one naming itself, or A -> B -> A, "
            "would spawn forever); run the other flow on its own"
        )
    if not isinstance(spawn.get("params", {}), dict):
        raise ValueError("spawn.params must be an object")
    if "ttl_seconds" in spawn:
        _number(spawn["ttl_seconds"], "spawn.ttl_seconds", 1, settings.VX11_FLOW_MAX_WAIT_SECONDS, integer=True)
    if "max_retries" in spawn:
        _number(spawn["max_retries"], "spawn.max_retries", 0, 10, integer=True)
    return {"spawn": {"params": {}, "source": "madre", **spawn}}


def _step(raw, number: int, captured: dict[int, set]) -> dict:
    if not isinstance(raw, dict):
        raise ValueError("a step must be an object")
    kind = raw.get("kind") or next((k for k in ("db", "spawn") if k in raw), "http")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    _unknown(raw, STEP_KEYS[kind] | {"name", "kind"}, "step")
    for key, value in raw.items():
        _finite(value, key)
    name = raw.get("name") or f"step {number}"
    if not isinstance(name, str) or len(name) > 100:
        raise ValueError("name must be a string of at most 100 characters")
    fields = {"http": _http_step, "db": _db_step, "spawn": _spawn_step}[kind](raw)
    capture = raw.get("capture") or {}
    if not isinstance(capture, dict):
        raise ValueError("capture must be an object of name: JSONPath")
    for key, expr in capture.items():
        if not CAPTURE_NAME.match(str(key)):
            raise ValueError(f"capture name {key!r} must be a Python-like identifier")
        _jsonpath(expr, f"capture.{key}")
    for match in _templates_in(fields):
        if match[2] is None:  # {{ env.VX11_... }}
            if not env_allowed(match[4]):
                raise ValueError(f"template {match[0]}: {env_refused(match[4])}")
            continue
        ref, key = int(match[2]), match[3]
        if ref >= number:
            raise ValueError(f"template {match[0]} refers to step {ref}, which does not run before step {number}")
        if key not in captured.get(ref, set()):
            names = ", ".join(sorted(captured.get(ref, ()))) or "nothing"
            raise ValueError(f"template {match[0]}: step {ref} captures no {key!r} (it captures: {names})")
    captured[number] = set(capture) | (set(SPAWN_CAPTURES) if kind == "spawn" else set())
    return {"position": number, "name": name, "kind": kind, "capture": capture, **fields}


def check_spec(spec) -> dict:
    """Validate a flow definition (the YAML/JSON shape) and return it normalised:
    {"name", "title", "description", "enabled", "steps": [step fields...]}. Raises ValidationError
    whose message names the bad step ("step 3 (madre plan): ...")."""
    if not isinstance(spec, dict):
        raise ValidationError("a flow definition must be an object with name and steps")
    extra = sorted(set(spec) - {"name", "title", "description", "enabled", "steps"})
    if extra:
        raise ValidationError(f"unknown flow key(s): {', '.join(extra)}")
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ValidationError(f"flow name {name!r} must be 1-32 letters, digits, _ or - (e.g. A)")
    steps = spec.get("steps")
    if not isinstance(steps, list) or not steps or len(steps) > MAX_STEPS:
        raise ValidationError(f"flow {name}: steps must be a list of 1 to {MAX_STEPS} steps")
    captured: dict[int, set] = {}
    normalised = []
    for number, raw in enumerate(steps, start=1):
        try:
            normalised.append(_step(raw, number, captured))
        except ValueError as exc:
            label = raw.get("name") if isinstance(raw, dict) and isinstance(raw.get("name"), str) else ""
            raise ValidationError(f"{where(name, number, label)}: {exc}") from None
    return {
        "name": name,
        "title": str(spec.get("title") or name)[:200],
        "description": str(spec.get("description") or ""),
        "enabled": bool(spec.get("enabled", True)),
        "steps": normalised,
    }


def where(flow_name: str, number: int, step_name: str = "") -> str:
    """How a message names a step: "flow A: step 3 (madre plan)"."""
    label = f" ({step_name})" if step_name and step_name != f"step {number}" else ""
    return f"flow {flow_name}: step {number}{label}"


def check_references(steps: list[dict], flow_name: str) -> None:
    """The checks that need the database: modules and models exist. Raises ValidationError naming the step."""
    from apps.fleet.models import Module

    slugs = set(Module.objects.values_list("slug", flat=True))
    for step in steps:
        where_ = where(flow_name, step["position"], step["name"])
        if step["kind"] == "http" and step["module"] not in slugs:
            raise ValidationError(f"{where_}: unknown module {step['module']!r}; known: {', '.join(sorted(slugs))}")
        if step["kind"] == "db":
            try:
                model = flow_model(step["db"]["model"])
                for part in ("filter", "expect", "fail_on"):
                    for lookup in step["db"][part]:
                        check_lookup(model, lookup, f"db.{part}")
            except ValueError as exc:
                raise ValidationError(f"{where_}: {exc}") from None


def parse_file(text: str, filename: str = "") -> dict:
    """A definition from YAML or JSON text (JSON is YAML, so one parser reads both)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(f"{filename or 'definition'} is not valid YAML/JSON: {exc}") from None
