"""Runs a flow: each step in order, its result stored; the first failure skips the rest.

A step raises StepFailed(reason) to fail; anything unexpected (a bad filter, a module gone) is
caught and stored as a failure too, so a run always ends with a reason, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field

import httpx
from django.conf import settings
from django.core.exceptions import FieldError, ValidationError
from django.db import transaction
from django.utils import timezone

from apps.daughters.models import DaughterTask
from apps.events.models import publish
from vx11_site import db, outbound

from .models import ContractCoherence, Flow, FlowRun, Step, StepResult
from .spec import TEMPLATE, check_lookup, env_allowed, env_refused, flow_model

MAX_RESPONSE_BYTES = 5_000_000  # a step reads at most this much of an answer
SECRET_HEADERS = re.compile(r"token|key|secret|authorization|cookie|password", re.I)
ENV_TEMPLATE = re.compile(r"\{\{\s*env\.(VX11_[A-Z0-9_]+)\s*\}\}")
MASK = "***"
_MISSING = object()

log = logging.getLogger(__name__)


class StepFailed(Exception):
    """A step's expectation did not hold; the message is the reason stored and shown."""


@dataclass
class StepRecord:
    """What a step's runner fills in as it goes, stored as the step's StepResult whether it passes or fails."""

    request: dict = field(default_factory=dict)
    response_status: int | None = None
    response_excerpt: str = ""
    captured: dict = field(default_factory=dict)
    secrets: tuple = ()  # values of the environment variables the flow reads: masked wherever stored


def excerpt(text: str) -> str:
    limit = settings.VX11_FLOW_EXCERPT_CHARS
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


def short(value, limit: int = 120) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


# -- templates -------------------------------------------------------------------------------


def render(value, captured: dict[int, dict]):
    """Fill {{ steps.N.name }} and {{ env.VX11_NAME }} in strings (inside dicts and lists too).
    A string that is one template keeps the captured value's type (a task id stays an int)."""
    if isinstance(value, dict):
        return {render(k, captured): render(v, captured) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, captured) for v in value]
    if not isinstance(value, str) or "{{" not in value:
        return value

    def lookup(match: re.Match):
        if match[4]:
            if not env_allowed(match[4]):
                raise StepFailed(f"template {match[0]}: {env_refused(match[4])}")
            if match[4] not in os.environ:
                raise StepFailed(f"template {match[0]}: environment variable {match[4]} is not set")
            return os.environ[match[4]]
        ref, key = int(match[2]), match[3]
        found = captured.get(ref, {}).get(key, _MISSING)
        if found is _MISSING:
            names = ", ".join(captured.get(ref, {})) or "nothing"
            raise StepFailed(f"template {match[0]}: step {ref} captured no value {key!r} (captured: {names})")
        if found is None:
            raise StepFailed(f"template {match[0]}: step {ref} captured {key!r} as null")
        return found

    whole = TEMPLATE.fullmatch(value.strip())
    if whole:
        return lookup(whole)
    return TEMPLATE.sub(lambda m: str(lookup(m)), value)


def env_secrets(steps) -> tuple[str, ...]:
    """The values of the environment variables these steps read (longest first): a run stores none of them."""
    text = json.dumps(
        [[step.path, step.headers, step.body, step.checks, step.db, step.spawn] for step in steps], default=str
    )
    values = {os.environ.get(name) for name in ENV_TEMPLATE.findall(text) if env_allowed(name)}
    return tuple(sorted((v for v in values if v), key=len, reverse=True))


def mask(value, secrets: tuple):
    """`value` with every secret replaced by ***, in strings inside dicts and lists too."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {mask(k, secrets): mask(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, secrets) for v in value]
    if value is not None and not isinstance(value, bool) and str(value) in secrets:
        return MASK
    return value


# -- JSON paths ------------------------------------------------------------------------------


def json_values(data, expr: str) -> list:
    """The values at a JSONPath in `data`, in document order."""
    from jsonpath_ng.ext import parse

    return [m.value for m in parse(expr).find(data)]


def check_json(data, check: dict) -> None:
    path, op, want = check["path"], check["op"], check["value"]
    found = json_values(data, path)
    if op == "exists":
        if want and not found:
            raise StepFailed(f"{path} is missing from the response")
        if not want and found:
            raise StepFailed(f"{path} should be absent, found {short(found[0])}")
        return
    if not found:
        raise StepFailed(f"{path} is missing from the response (expected {op} {short(want)})")
    got = found[0]
    if op == "equals" and got != want:
        raise StepFailed(f"{path} is {short(got)}, expected {short(want)}")
    if op == "one_of" and got not in want:
        raise StepFailed(f"{path} is {short(got)}, expected one of {short(want)}")
    if op == "regex" and not re.search(want, str(got)):
        raise StepFailed(f"{path} is {short(got)}, which does not match /{want}/")


def capture_from(data, capture: dict) -> dict:
    values = {}
    for name, expr in capture.items():
        found = json_values(data, expr)
        if not found:
            raise StepFailed(f"capture {name}: {expr} matched nothing in the response")
        values[name] = found[0] if len(found) == 1 else found
    return values


# -- the three kinds -------------------------------------------------------------------------


def masked_headers(headers: dict) -> dict:
    return {k: ("***" if SECRET_HEADERS.search(k) else v) for k, v in headers.items()}


def error_detail(response: httpx.Response) -> str:
    """ ": <detail>" from a {"detail": ...} error body (FastAPI's and ours), else ""."""
    try:
        body = response.json()
    except ValueError:
        return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    return f": {str(detail)[:300]}" if detail else ""


def fetch(method: str, url: str, headers: dict, body, timeout: float) -> httpx.Response:
    """One request whose body is read up to MAX_RESPONSE_BYTES; a bigger answer fails the step."""
    with outbound.client(timeout=timeout) as client, client.stream(method, url, headers=headers, json=body) as response:
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise StepFailed(f"response larger than {MAX_RESPONSE_BYTES} bytes; not read further")
            chunks.append(chunk)
    return httpx.Response(
        response.status_code, headers=response.headers, content=b"".join(chunks), request=response.request
    )


def run_http_step(step: Step, captured: dict, out: StepRecord) -> None:
    from apps.fleet.models import Module

    module = Module.objects.filter(slug=step.module).first()
    if module is None:
        raise StepFailed(f"unknown module {step.module!r}")
    path, headers = render(step.path, captured), render(step.headers or {}, captured)
    body = render(step.body, captured)
    url = module.base_url.rstrip("/") + path
    out.request = {"method": step.method, "url": url, "headers": masked_headers(headers)}
    if body is not None:
        out.request["body"] = excerpt(mask(json.dumps(body), out.secrets))
    timeout = min(step.timeout or settings.VX11_FLOW_HTTP_TIMEOUT, settings.VX11_FLOW_MAX_WAIT_SECONDS)
    started = time.perf_counter()
    try:
        response = fetch(step.method, url, headers, body, timeout)
    except httpx.TimeoutException:
        raise StepFailed(f"{step.module} did not answer {step.method} {path} within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        refused = outbound.why(exc)
        if refused:
            raise StepFailed(f"{step.module} at {url}: {refused}") from None
        raise StepFailed(f"{step.module} unreachable at {url}: {type(exc).__name__} {exc}".strip()) from None
    latency = (time.perf_counter() - started) * 1000
    out.response_status = response.status_code
    out.response_excerpt = excerpt(mask(response.text, out.secrets))
    if step.expect_status is not None and response.status_code != step.expect_status:
        raise StepFailed(f"expected status {step.expect_status}, got {response.status_code}{error_detail(response)}")
    if step.max_latency_ms is not None and latency > step.max_latency_ms:
        raise StepFailed(f"took {latency:.0f} ms, over the bound of {step.max_latency_ms:g} ms")
    if step.checks or step.capture:
        try:
            data = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            raise StepFailed(f"response is not JSON ({kind}): {short(response.text, 80)}") from None
        for check in step.checks or []:
            check_json(data, {**check, "value": render(check["value"], captured)})
        out.captured = capture_from(data, step.capture or {})


def run_db_step(step: Step, captured: dict, out: StepRecord) -> None:
    spec = render(step.db, captured)
    try:  # checked at save too; again here for a step edited behind validation's back or a narrowed setting
        model = flow_model(spec["model"])
        for part in ("filter", "expect", "fail_on"):
            for lookup in spec[part]:
                check_lookup(model, lookup, f"db.{part}")
    except ValueError as exc:
        raise StepFailed(str(exc)) from None
    within, min_count = float(spec.get("within") or 0), int(spec.get("min_count") or 1)
    out.request = {
        "model": spec["model"],
        "filter": spec["filter"],
        "expect": spec["expect"],
        "fail_on": spec["fail_on"],
        "within": within,
    }
    deadline = time.monotonic() + within
    lookups = [*spec["expect"], *spec["fail_on"]]
    try:
        while True:
            rows = model.objects.filter(**spec["filter"])
            count = rows.count()
            bad = rows.filter(**spec["fail_on"]).first() if spec["fail_on"] else None
            if bad is not None:
                out.response_excerpt = excerpt(mask(describe_rows(rows, lookups), out.secrets))
                raise StepFailed(
                    f"{spec['model']} row {bad.pk} matches fail_on {short(spec['fail_on'])}: "
                    f"{describe_row(bad, lookups)}"
                )
            matching = rows.filter(**spec["expect"]).count() if spec["expect"] else count
            if count >= min_count and matching == count:
                out.response_excerpt = excerpt(mask(describe_rows(rows, lookups), out.secrets))
                out.captured = {"count": count, "ids": list(rows.values_list("pk", flat=True)[:100])}
                return
            if time.monotonic() >= deadline:
                out.response_excerpt = excerpt(mask(describe_rows(rows, lookups), out.secrets))
                if count < min_count:
                    raise StepFailed(
                        f"{count} {spec['model']} row(s) match {short(spec['filter'])} after {within:g} s; "
                        f"expected at least {min_count}"
                    )
                raise StepFailed(
                    f"{count - matching} of {count} {spec['model']} row(s) still not {short(spec['expect'])} "
                    f"after {within:g} s"
                )
            time.sleep(settings.VX11_FLOW_DB_POLL_SECONDS)
    except (FieldError, ValidationError, ValueError, TypeError) as exc:
        raise StepFailed(f"bad query on {spec['model']}: {exc}") from None


WHY_FIELDS = ("status", "error_last", "error", "reason")  # shown for a row when the model has them


def describe_row(row, lookups=()) -> str:
    """pk plus the fields the step asks about and the usual why-fields: what a reader needs first."""
    names = {f.attname for f in row._meta.concrete_fields}
    wanted = [n for n in dict.fromkeys([*(k.split("__")[0] for k in lookups), *WHY_FIELDS]) if n in names]
    return ", ".join([f"pk={row.pk}", *(f"{n}={short(getattr(row, n), 200)}" for n in wanted)])


def describe_rows(rows, lookups=()) -> str:
    return "\n".join(describe_row(row, lookups) for row in rows[:20])


def run_spawn_step(step: Step, captured: dict, out: StepRecord) -> None:
    spec = render(step.spawn, captured)
    if str(spec.get("kind", "")).strip().lower() == "flow":
        raise StepFailed("spawn.kind 'flow' is refused: a flow may not start flows")
    kwargs = {k: spec[k] for k in ("source", "description", "ttl_seconds", "max_retries", "intent_id") if k in spec}
    kwargs.setdefault("description", f"flow {step.flow.name} step {step.position}: {step.name}")
    out.request = {"spawn": spec["kind"], "params": spec.get("params", {}), **kwargs}
    try:
        task = DaughterTask.spawn(spec["kind"], spec.get("params", {}), **kwargs)
    except ValidationError as exc:
        raise StepFailed(f"the daughters app refused the spawn: {'; '.join(exc.messages)}") from None
    daughters = list(task.daughters.values_list("id", flat=True))
    out.captured = {"task_id": task.id, "daughter_ids": daughters, "status": getattr(task, "status", "")}
    out.response_excerpt = excerpt(json.dumps(out.captured, default=str))
    data = {}
    for name, expr in (step.capture or {}).items():  # extra captures read the summary above
        found = json_values(out.captured, expr)
        if not found:
            raise StepFailed(f"capture {name}: {expr} matched nothing in the spawned task")
        data[name] = found[0]
    out.captured.update(data)


KIND_RUNNERS = {"http": run_http_step, "db": run_db_step, "spawn": run_spawn_step}


# -- the run ---------------------------------------------------------------------------------


def run_flow(flow: Flow, trigger: str = "api", user=None, on_step=None) -> FlowRun:
    """Run every step in order, in this process (see execute)."""
    with transaction.atomic():  # the run and the event that announces its start
        run = FlowRun.objects.create(
            flow=flow,
            trigger=trigger,
            heartbeat_at=timezone.now(),
            triggered_by=user if getattr(user, "pk", None) else None,
        )
        run.announce()
    return execute(run, on_step)


def run_queued(run_id: int) -> FlowRun | None:
    """Run a queued run, claimed with a conditional UPDATE (queued -> running) so a redelivered task, or
    a run the sweep already failed, is not run again; None when there was nothing to claim."""
    now = timezone.now()
    with transaction.atomic():
        claimed = FlowRun.objects.filter(id=run_id, status=FlowRun.Status.QUEUED).update(
            status=FlowRun.Status.RUNNING, started_at=now, heartbeat_at=now
        )
        if not claimed:
            return None
        run = FlowRun.objects.select_related("flow").get(id=run_id)
        run.announce()
    return execute(run)


def heartbeat_thread(run: FlowRun):
    """While the block runs, mark the run alive every VX11_FLOW_RUN_HEARTBEAT_SECONDS, so the sweep tells a run whose
    process is gone (silent for VX11_FLOW_RUN_SILENT_SECONDS) from a long one."""
    return db.heartbeat_thread(run.beat, settings.VX11_FLOW_RUN_HEARTBEAT_SECONDS, f"flow run {run.id}")


def execute(run: FlowRun, on_step=None) -> FlowRun:
    """Run every step of a running run in order; the first failure marks the rest skipped. Stores the
    step results, publishes plan_updated (each step, with its result) and status_changed (the end, with it),
    recomputes contract_coherence_pct. `on_step(result)` is called after each step (the CLI's progress bar).
    A run the sweep failed meanwhile (FlowRun.sweep_stale) stays failed: the runner stops at the next
    step, and its end is stored only if the run is still running. Should the runner itself fail (the
    database, the process being stopped), the run ends as failed at once (FlowRun.end_on_error)."""
    try:
        with heartbeat_thread(run):
            return _execute(run, on_step)
    except BaseException as exc:
        try:
            run.end_on_error(exc)
        except Exception as inner:  # the database that failed the run may refuse this too: the sweep will end it
            log.warning("flow run %s could not be ended after %s: %s", run.id, type(exc).__name__, inner)
        raise


def _execute(run: FlowRun, on_step) -> FlowRun:
    flow = run.flow
    steps = list(flow.steps.all())
    started = time.perf_counter()
    captured: dict[int, dict] = {}
    secrets = env_secrets(steps)
    failed: StepResult | None = None
    for step in steps:
        if step is not steps[0] and not FlowRun.objects.filter(id=run.id, status=FlowRun.Status.RUNNING).exists():
            run.refresh_from_db()  # swept as interrupted (this process looked dead): stop, keep that verdict
            return run
        if failed is not None:
            result = StepResult(
                run=run,
                position=step.position,
                name=step.name,
                kind=step.kind,
                status=StepResult.Status.SKIPPED,
                reason=f"skipped: step {failed.position} failed",
            )
        else:
            result = run_step(run, step, captured, secrets)
            if result.status == StepResult.Status.FAILED:
                failed = result
        with transaction.atomic():  # the step's result and its event
            result.save()
            publish(
                "plan_updated",
                {
                    "source": "flows",
                    "flow": flow.name,
                    "run_id": run.id,
                    "step": step.position,
                    "name": step.name,
                    "status": result.status,
                    "reason": result.reason,
                },
            )
        if on_step:
            on_step(result)
    run.finished_at = timezone.now()
    run.duration_ms = round((time.perf_counter() - started) * 1000, 1)
    run.captured = mask(json.loads(json.dumps({str(k): v for k, v in captured.items()}, default=str)), secrets)
    if failed is None:
        run.status = FlowRun.Status.PASSED
    else:
        run.status, run.failed_step = FlowRun.Status.FAILED, failed.position
        run.reason = f"step {failed.position} ({failed.name}): {failed.reason}"[:1000]
    with transaction.atomic():  # the end, its event and the coherence it changes
        ended = FlowRun.objects.filter(id=run.id, status=FlowRun.Status.RUNNING).update(
            status=run.status,
            finished_at=run.finished_at,
            duration_ms=run.duration_ms,
            captured=run.captured,
            failed_step=run.failed_step,
            reason=run.reason,
        )
        if ended:
            run.announce()
            ContractCoherence.recompute()
    if not ended:  # swept as interrupted meanwhile: keep that verdict
        run.refresh_from_db()
    return run


def run_step(run: FlowRun, step: Step, captured: dict, secrets: tuple = ()) -> StepResult:
    out = StepRecord(secrets=secrets)
    started = time.perf_counter()
    status, reason = StepResult.Status.PASSED, ""
    try:
        KIND_RUNNERS[step.kind](step, captured, out)
        captured[step.position] = out.captured
    except StepFailed as exc:
        status, reason = StepResult.Status.FAILED, str(exc)
    except Exception as exc:  # a bug or an outage must still end the run with a reason
        status, reason = StepResult.Status.FAILED, f"unexpected error: {type(exc).__name__}: {exc}"
    return StepResult(  # stored by the caller, with its event
        run=run,
        position=step.position,
        name=step.name,
        kind=step.kind,
        status=status,
        reason=mask(reason, secrets)[:1000],
        request=mask(json.loads(json.dumps(out.request, default=str)), secrets),
        response_status=out.response_status,
        response_excerpt=mask(out.response_excerpt, secrets),
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        captured=mask(json.loads(json.dumps(out.captured, default=str)), secrets),
    )
