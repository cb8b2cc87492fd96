"""E2E flows: ordered steps that call modules or watch the database, their runs and step results.

A flow is stored in the ORM (editable in the admin, steps inline) and can be loaded from a YAML or
JSON file of the same shape as `Flow.to_spec()`. Validation lives in one place, `check_spec()`, a
pure function the loader, the API and the admin all go through, so a bad
definition is refused everywhere with a message naming the bad step.

A step is one of three kinds:
  http   call a module (method, path, headers, body) and state what must hold: the status code,
         values at JSON paths (equals, exists, one_of, regex) and a latency bound; capture values.
  db     rows of a model matching a filter appear (and all match `expect`) within `within` seconds;
         a row matching `fail_on` fails the step at once.
  spawn  madre's side of flow B: the portal's daughters app spawns a daughter (DaughterTask.spawn).
Captured values are used by later steps as `{{ steps.N.name }}` (N is the 1-based step number).
"""

from __future__ import annotations

import logging
import math
import re
from datetime import timedelta
from pathlib import Path

from django.apps import apps as django_apps
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models, transaction
from django.db.models import Count, Prefetch, Q
from django.utils import timezone

from apps.events.models import publish
from vx11_site.db import prune_in_chunks

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
            raise ValueError(
                f"template {match[0]}: step {ref} captures no {key!r} (it captures: {', '.join(sorted(captured.get(ref, ()))) or 'nothing'})"
            )
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


# -- the models ------------------------------------------------------------------------------


log = logging.getLogger(__name__)


class Flow(models.Model):
    """An E2E flow (A, B, C...): an ordered list of steps."""

    name = models.CharField(max_length=32, unique=True, help_text="short name used by the CLI and API, e.g. A")
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True, help_text="run on beat and counted in contract_coherence_pct")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("run_flow", "Can run a flow now (API, admin, CLI)")]

    def __str__(self) -> str:
        return f"{self.name}: {self.title}" if self.title and self.title != self.name else self.name

    def clean(self):
        if not NAME.match(self.name or ""):
            raise ValidationError({"name": "1-32 letters, digits, _ or - (e.g. A)"})

    # definitions in and out

    def to_spec(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "enabled": self.enabled,
            "steps": [step.to_spec() for step in self.steps.all()],
        }

    @classmethod
    def save_spec(cls, spec, replace: bool = False) -> Flow:
        """Create (or with replace, overwrite) a flow from a definition; ValidationError names the bad step."""
        clean = check_spec(spec)
        check_references(clean["steps"], clean["name"])
        with transaction.atomic():
            flow = cls.objects.select_for_update().filter(name=clean["name"]).first()
            if flow is not None and not replace:
                raise ValidationError(f"flow {clean['name']} already exists")
            flow = flow or cls(name=clean["name"])
            flow.title, flow.description, flow.enabled = clean["title"], clean["description"], clean["enabled"]
            flow.save()
            flow.steps.all().delete()
            Step.objects.bulk_create([Step(flow=flow, **Step.fields_from(s)) for s in clean["steps"]])
        return flow

    @classmethod
    def load_file(cls, path, replace: bool = False) -> Flow:
        """Create a flow from a YAML or JSON file (the shape of `to_spec()`)."""
        path = Path(path)
        if not path.is_file():
            raise ValidationError(f"no such file: {path}")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValidationError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
        return cls.save_spec(parse_file(path.read_text(), path.name), replace=replace)

    @classmethod
    def load_upload(cls, upload, replace: bool = False) -> Flow:
        """Create a flow from an uploaded YAML or JSON file (the admin's "Load from file")."""
        if upload.size > MAX_FILE_BYTES:
            raise ValidationError(f"{upload.name} is larger than {MAX_FILE_BYTES} bytes")
        try:
            text = upload.read().decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError(f"{upload.name} is not UTF-8 text") from None
        return cls.save_spec(parse_file(text, upload.name), replace=replace)

    def to_yaml(self) -> str:
        """The definition as a file `vx11 flow load` and "Load from file" read back."""
        import yaml

        return yaml.safe_dump(self.to_spec(), sort_keys=False, allow_unicode=True)

    @classmethod
    def load_canonical(cls) -> list[Flow]:
        """The canonical flows A, B, C from apps/flows/definitions/, where they are missing."""
        return [
            cls.load_file(DEFINITIONS / f"{name}.yaml")
            for name in CANONICAL
            if not cls.objects.filter(name=name).exists()
        ]

    # runs

    HISTORY = 20  # finished runs in a flow's pass/fail strip on the admin list

    def last_run(self) -> FlowRun | None:
        if hasattr(self, "recent_runs"):  # attached by summarised()
            return self.recent_runs[0] if self.recent_runs else None
        return self.runs.exclude(status__in=FlowRun.UNFINISHED).first()

    def history(self, limit: int = HISTORY) -> list[FlowRun]:
        """The latest finished runs, oldest first (the admin's pass/fail strip)."""
        if hasattr(self, "recent_runs") and limit <= self.HISTORY:
            return self.recent_runs[:limit][::-1]
        return list(self.runs.exclude(status__in=FlowRun.UNFINISHED)[:limit])[::-1]

    def step_count(self) -> int:
        return self.step_total if hasattr(self, "step_total") else self.steps.count()

    @classmethod
    def summarised(cls, queryset):
        """The flows with their step count and latest HISTORY finished runs (newest first) attached, in two
        queries however many flows a page holds (the admin list, the API list); last_run(), history() and
        step_count() read them."""
        finished = FlowRun.objects.exclude(status__in=FlowRun.UNFINISHED).order_by("-started_at", "-id")
        return (
            queryset.annotate(step_total=Count("steps"))
            .prefetch_related(Prefetch("runs", queryset=finished[: cls.HISTORY], to_attr="recent_runs"))
            .order_by(*cls._meta.ordering)
        )  # GROUP BY drops Meta.ordering

    def run(self, trigger: str = "api", user=None, on_step=None) -> FlowRun:
        """Run now, in this process; see apps.flows.runner."""
        from .runner import run_flow

        return run_flow(self, trigger=trigger, user=user, on_step=on_step)

    def queue(self, trigger: str = "api", user=None) -> FlowRun:
        """Store a queued run at once and hand it to a Celery worker (after commit); callers poll the row."""
        from .tasks import run_queued_flow

        run = FlowRun.objects.create(
            flow=self,
            status=FlowRun.Status.QUEUED,
            trigger=trigger,
            triggered_by=user if getattr(user, "pk", None) else None,
        )

        def send():
            try:
                run_queued_flow.delay(run.id)
            except Exception as exc:  # the broker is unreachable: say so on the run now, not after the sweep
                log.warning("flow %s run %s could not be queued: %s", self.name, run.id, exc)
                FlowRun.objects.filter(pk=run.id, status=FlowRun.Status.QUEUED).update(
                    status=FlowRun.Status.FAILED,
                    finished_at=timezone.now(),
                    reason=f"could not be queued: the Celery broker is unreachable ({exc})"[:1000],
                )
                run.refresh_from_db()

        transaction.on_commit(send)
        return run

    def longest_seconds(self) -> float:
        """The most its steps may wait in all: each HTTP step's timeout, each DB step's `within` (both capped
        at VX11_FLOW_MAX_WAIT_SECONDS), a spawn at most one HTTP timeout. A bound, not an estimate."""
        cap, http = settings.VX11_FLOW_MAX_WAIT_SECONDS, settings.VX11_FLOW_HTTP_TIMEOUT
        total = 0.0
        for step in self.steps.all():
            if step.kind == Step.Kind.HTTP:
                total += min(step.timeout or http, cap)
            elif step.kind == Step.Kind.DB:
                total += min(float(step.db.get("within") or 0), cap) + settings.VX11_FLOW_DB_POLL_SECONDS
            else:
                total += min(http, cap)
        return total

    @classmethod
    def contract_coherence_pct(cls):
        """passed / total over the latest run of each enabled flow, as last stored; "NV" before any run."""
        row = ContractCoherence.objects.first()
        return "NV" if row is None or row.pct is None else row.pct


class Step(models.Model):
    """One step of a flow. The kind decides which fields matter; `clean()` and the admin formset check them."""

    class Kind(models.TextChoices):
        HTTP = "http", "HTTP call to a module"
        DB = "db", "database rows appear"
        SPAWN = "spawn", "spawn a daughter"

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(help_text="1-based; later steps refer to it as {{ steps.N.name }}")
    name = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.HTTP)
    module = models.CharField(max_length=64, blank=True, help_text="http: module slug")
    method = models.CharField(max_length=8, default="GET", blank=True)
    path = models.CharField(max_length=500, blank=True, help_text="http: e.g. /madre/plans/{{ steps.2.plan_id }}")
    headers = models.JSONField(default=dict, blank=True)
    body = models.JSONField(null=True, blank=True, help_text="http: JSON body (templates allowed in strings)")
    timeout = models.FloatField(null=True, blank=True, help_text="http: seconds; empty = VX11_FLOW_HTTP_TIMEOUT")
    expect_status = models.PositiveSmallIntegerField(
        null=True, blank=True, default=200, help_text="http: empty = any status"
    )
    max_latency_ms = models.FloatField(null=True, blank=True)
    checks = models.JSONField(
        default=list,
        blank=True,
        help_text='http: [{"path": "$.status", "equals": "ok"}, ...]; ops: equals, exists, one_of, regex',
    )
    capture = models.JSONField(
        default=dict, blank=True, help_text='{"plan_id": "$.plan.plan_id"}; spawn steps always capture task_id'
    )
    db = models.JSONField(
        default=dict,
        blank=True,
        help_text='db: {"model": "daughters.Daughter", "filter": {...}, "expect": {...}, "fail_on": {...}, "within": 30}',
    )
    spawn = models.JSONField(
        default=dict, blank=True, help_text='spawn: {"kind": "http", "params": {...}, "ttl_seconds": 30}'
    )

    class Meta:
        ordering = ["flow", "position"]
        constraints = [models.UniqueConstraint(fields=["flow", "position"], name="flow_step_position")]

    def __str__(self) -> str:
        return f"{self.flow.name}.{self.position} {self.name}"

    @staticmethod
    def fields_from(step: dict) -> dict:
        """Model fields from one normalised step of check_spec()."""
        fields = {
            "position": step["position"],
            "name": step["name"],
            "kind": step["kind"],
            "capture": step["capture"],
            "module": "",
            "method": "GET",
            "path": "",
            "headers": {},
            "body": None,
            "timeout": None,
            "expect_status": None,
            "max_latency_ms": None,
            "checks": [],
            "db": {},
            "spawn": {},
        }
        if step["kind"] == "http":
            for key in (
                "module",
                "method",
                "path",
                "headers",
                "body",
                "timeout",
                "expect_status",
                "max_latency_ms",
                "checks",
            ):
                fields[key] = step[key]
        else:
            fields[step["kind"]] = step[step["kind"]]
        return fields

    def to_spec(self) -> dict:
        spec = {"name": self.name, "kind": self.kind}
        if self.kind == self.Kind.HTTP:
            expect = {"status": self.expect_status}
            if self.max_latency_ms is not None:
                expect["max_latency_ms"] = self.max_latency_ms
            if self.checks:
                expect["json"] = self.checks
            spec.update(module=self.module, method=self.method, path=self.path, expect=expect)
            if self.headers:
                spec["headers"] = self.headers
            if self.body is not None:
                spec["body"] = self.body
            if self.timeout is not None:
                spec["timeout"] = self.timeout
        else:
            spec[self.kind] = getattr(self, self.kind)
        if self.capture:
            spec["capture"] = self.capture
        return spec


class FlowRun(models.Model):
    """One run of a flow: when, who or what started it, the outcome and why."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        PASSED = "passed", "passed"
        FAILED = "failed", "failed"

    UNFINISHED = (Status.QUEUED, Status.RUNNING)

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING)
    trigger = models.CharField(max_length=16, help_text="beat, admin, api, cli, daughter")
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(
        default=timezone.now, help_text="when it started; for a queued run, when it was queued"
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    failed_step = models.PositiveSmallIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=1000, blank=True)
    captured = models.JSONField(default=dict, blank=True, help_text="values captured by each step, by step number")
    heartbeat_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="while it runs: its runner's last sign of life (every VX11_FLOW_RUN_HEARTBEAT_SECONDS)",
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            # a flow's runs newest first: admin strip, API /flows/{name}/runs, latest run per flow (coherence)
            models.Index(fields=["flow", "-started_at"], name="flowrun_flow_time"),
            # prune by age: FlowRun.prune()
            models.Index(fields=["started_at"], name="flowrun_time"),
            # unfinished runs by age: FlowRun.sweep_stale()
            models.Index(fields=["status", "started_at"], name="flowrun_status_time"),
        ]

    def __str__(self) -> str:
        return f"{self.flow.name} #{self.id} {self.status}"

    @property
    def passed(self) -> bool:
        return self.status == self.Status.PASSED

    @property
    def api_url(self) -> str:
        return f"/api/flow-runs/{self.id}"

    def summary(self) -> dict:
        return {
            "flow": self.flow.name,
            "run_id": self.id,
            "status": self.status,
            "trigger": self.trigger,
            "started_at": self.started_at.isoformat(),
            "duration_ms": self.duration_ms,
            "failed_step": self.failed_step,
            "reason": self.reason,
        }

    def announce(self) -> None:
        """status_changed on the bus when a run starts and ends."""
        publish("status_changed", {"source": "flows", **self.summary()})

    def beat(self) -> bool:
        """Its runner is alive: say so while the run is running; False once it ended or was swept."""
        return bool(FlowRun.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(heartbeat_at=timezone.now()))

    def end_on_error(self, exc: BaseException) -> bool:
        """The runner itself failed (not a step: the database, the process being stopped): end the run as failed now,
        with its unreached steps skipped, rather than leave it running until the sweep. False if it had ended."""
        reason = f"error: the runner stopped on {type(exc).__name__}: {exc}"[:1000]
        with transaction.atomic():
            ended = FlowRun.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(
                status=self.Status.FAILED, finished_at=timezone.now(), reason=reason
            )
            if ended:
                StepResult.skip_unreached([self.pk], "skipped: the run stopped on an error")
                self.refresh_from_db()
                self.announce()
        return bool(ended)

    @classmethod
    def stale_after(cls, flow: Flow) -> float:
        """Seconds after which an unfinished run of this flow cannot still be going: VX11_FLOW_RUN_STALE_SECONDS
        (default 1800, the Celery soft time limit of a flow task), or twice the flow's longest possible wait."""
        return max(float(settings.VX11_FLOW_RUN_STALE_SECONDS), 2 * flow.longest_seconds())

    @classmethod
    def sweep_stale(cls, now=None) -> int:
        """Fail runs still queued or running past stale_after() (their process died or no worker took them), and
        running runs without a heartbeat for VX11_FLOW_RUN_SILENT_SECONDS (their process is gone, whatever the
        bound): one conditional UPDATE per (status, bound), the steps they never reached stored as skipped.
        Returns how many runs were swept; safe to run from several workers at once."""
        now = now or timezone.now()
        silent = settings.VX11_FLOW_RUN_SILENT_SECONDS
        silent_before = now - timedelta(seconds=silent)
        unfinished = cls.objects.filter(status__in=cls.UNFINISHED)
        flows = Flow.objects.filter(id__in=unfinished.values("flow_id")).prefetch_related("steps")
        by_bound: dict[float, list[int]] = {}
        for flow in flows:
            by_bound.setdefault(cls.stale_after(flow), []).append(flow.id)
        swept: list[int] = []
        with transaction.atomic():
            for bound, flow_ids in by_bound.items():
                stale = unfinished.filter(flow_id__in=flow_ids, started_at__lt=now - timedelta(seconds=bound))
                for status, why in (
                    (cls.Status.QUEUED, f"queued over {bound:g} s ago and never started (is a Celery worker running?)"),
                    (cls.Status.RUNNING, f"no end recorded {bound:g} s after it started (its process died?)"),
                ):
                    ids = list(
                        stale.filter(status=status).select_for_update(skip_locked=True).values_list("id", flat=True)
                    )
                    if ids:
                        cls.objects.filter(id__in=ids, status=status).update(
                            status=cls.Status.FAILED, finished_at=now, reason=f"interrupted: {why}"
                        )
                        swept += ids
            silence = Q(heartbeat_at__lt=silent_before) | Q(heartbeat_at__isnull=True, started_at__lt=silent_before)
            ids = list(
                cls.objects.filter(silence, status=cls.Status.RUNNING)
                .select_for_update(skip_locked=True)
                .values_list("id", flat=True)
            )
            if ids:
                cls.objects.filter(id__in=ids, status=cls.Status.RUNNING).update(
                    status=cls.Status.FAILED,
                    finished_at=now,
                    reason=f"interrupted: no heartbeat for {silent} s (its process died?)",
                )
                swept += ids
            if swept:
                StepResult.skip_unreached(swept, "skipped: the run was interrupted")
                for run in cls.objects.filter(id__in=swept).select_related("flow"):
                    run.announce()
                ContractCoherence.recompute()
        return len(swept)

    @classmethod
    def prune(cls, now=None) -> int:
        """Delete runs (and, by cascade, their step results) past VX11_FLOW_RUN_RETENTION_DAYS, in chunks."""
        cutoff = (now or timezone.now()) - timedelta(days=settings.VX11_FLOW_RUN_RETENTION_DAYS)
        deleted = prune_in_chunks(StepResult.objects.filter(run__started_at__lt=cutoff))
        deleted += prune_in_chunks(cls.objects.filter(started_at__lt=cutoff))
        deleted += prune_in_chunks(ContractCoherence.objects.filter(computed_at__lt=cutoff))
        return deleted


class StepResult(models.Model):
    """What one step of one run did: the request, an excerpt of the response, how long, pass/fail and why."""

    class Status(models.TextChoices):
        PASSED = "passed", "passed"
        FAILED = "failed", "failed"
        SKIPPED = "skipped", "skipped"

    run = models.ForeignKey(FlowRun, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8)
    status = models.CharField(max_length=8, choices=Status.choices)
    reason = models.CharField(max_length=1000, blank=True)
    request = models.JSONField(
        default=dict, blank=True, help_text="method, URL, headers (secrets masked), body excerpt; or the DB query"
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True, help_text="at most VX11_FLOW_EXCERPT_CHARS characters")
    duration_ms = models.FloatField(null=True, blank=True)
    captured = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["run", "position"]

    def __str__(self) -> str:
        return f"{self.position}. {self.name}: {self.status}"

    @classmethod
    def skip_unreached(cls, run_ids: list[int], reason: str) -> None:
        """A skipped result for each step of these runs' flows that has no result yet (three queries in all)."""
        runs = dict(FlowRun.objects.filter(id__in=run_ids).values_list("id", "flow_id"))
        done = set(cls.objects.filter(run_id__in=run_ids).values_list("run_id", "position"))
        steps: dict[int, list] = {}
        for step in Step.objects.filter(flow_id__in=set(runs.values())):
            steps.setdefault(step.flow_id, []).append(step)
        cls.objects.bulk_create(
            [
                cls(
                    run_id=run_id,
                    position=step.position,
                    name=step.name,
                    kind=step.kind,
                    status=cls.Status.SKIPPED,
                    reason=reason,
                )
                for run_id, flow_id in runs.items()
                for step in steps.get(flow_id, [])
                if (run_id, step.position) not in done
            ]
        )


class ContractCoherence(models.Model):
    """contract_coherence_pct = passed / total over the latest run of each enabled flow, stored after
    every run so metrics read a number instead of re-deriving it."""

    computed_at = models.DateTimeField(default=timezone.now)
    passed = models.PositiveIntegerField()
    total = models.PositiveIntegerField()
    pct = models.FloatField(null=True, blank=True, help_text="0-100; empty (NV) when no enabled flow has run")
    detail = models.JSONField(default=dict, help_text="flow name -> status of its latest run")

    class Meta:
        ordering = ["-computed_at", "-id"]
        indexes = [models.Index(fields=["computed_at"], name="coherence_time")]  # latest row; prune by age

    def __str__(self) -> str:
        return f"{self.pct if self.pct is not None else 'NV'} % at {self.computed_at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def recompute(cls) -> ContractCoherence:
        detail = {}
        for flow in Flow.summarised(
            Flow.objects.filter(enabled=True)
        ):  # the latest runs in one query, not one per flow
            last = flow.last_run()
            if last is not None:
                detail[flow.name] = last.status
        passed = sum(status == FlowRun.Status.PASSED for status in detail.values())
        total = len(detail)
        return cls.objects.create(
            passed=passed, total=total, pct=round(100.0 * passed / total, 2) if total else None, detail=detail
        )
