"""SIMULATOR: a fake VX11 fleet for demos and tests, never part of the real portal.

Ten aiohttp servers on 127.0.0.1, one per VX11 module, answer GET /health with the body the real
module sends (HEALTH below: each module's own keys, e.g. madre's "time" and its deps "up"/"down",
manifestator's "healthy" instead of "ok"). They also answer the two upstream calls the operator backend
makes (hermes GET /tools, shub POST /metrics) and what the E2E flows A/B/C call, with the real paths and
answer shapes: tentaculo_link proxies /vx11/* to its siblings, madre turns an intent into an IntentV2
and a PlanV2 (POST /vx11/intent, /madre/plans), hormiguero's ants scan into incidents (its queen asks
manifestator for a patch plan when a scan finds fs_drift, over loopback HTTP as the real one does), manifestator
answers drift, patches and patch plans (see E2E below).
A control server (GET /_sim, POST /_sim/<slug>) and `SimFleet.set_mode()` make any module misbehave
(MISBEHAVIOURS): slow, hang, error, garbage, wrong_status, down; "ok" sets it back to normal.
All servers share one asyncio loop in one background thread, so a test starts the fleet in a line:

    with SimFleet(ephemeral=True) as fleet:
        fleet.set_mode("madre", "hang")
        httpx.get(fleet.base_url("madre") + "/health", timeout=0.5)  # -> ReadTimeout
"""

import asyncio
import itertools
import json
import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime

import aiohttp
from aiohttp import web

from apps.fleet.reference import REFERENCE_MODULES

PORTS = {spec["slug"]: spec["port"] for spec in REFERENCE_MODULES}
CONTROL_PORT = 8099
DEFAULT_DELAY = 1.0  # seconds, for "slow" without a delay
SHUTDOWN_TIMEOUT = 0.2  # seconds an in-flight (hanging) request may delay stop() or "down"
MADRE_DEPS = ("switch", "hormiguero", "spawner")
MADRE_PROBE_TIMEOUT = 2.0  # real madre probes its deps with a 2 s timeout
DEAD_MISBEHAVIOURS = {"down", "hang", "error", "garbage"}  # what madre would see as a dead dependency

# What set_mode() accepts; "ok" is the absence of misbehaviour.
MISBEHAVIOURS = {
    "ok": "answer normally",
    "slow": f"sleep --delay seconds (default {DEFAULT_DELAY}), then answer normally",
    "hang": "never answer; the client times out",
    "error": "HTTP 500 with a JSON error body",
    "garbage": "HTTP 200 with a text/plain body that is not JSON",
    "wrong_status": 'HTTP 200, the real shape but "status": "broken"',
    "down": "listening socket closed: connection refused (same port when it comes back)",
}

# /health bodies of the real modules; madre's "time" and "deps" and shub's warm-up are filled per request.
HEALTH = {
    "tentaculo_link": {"status": "ok", "module": "tentaculo_link", "version": "7.0"},
    "madre": {"module": "madre", "status": "ok", "version": "7.0", "time": None, "deps": None},
    "switch": {
        "status": "ok",
        "module": "switch",
        "active_model": "general-7b",
        "warm_model": "deepseek-r1-7b",
        "queue_size": 0,
    },
    "hermes": {"status": "ok", "module": "hermes", "version": "minimal"},
    "hormiguero": {"status": "ok", "service": "hormiguero", "version": "v7"},
    "manifestator": {"status": "healthy", "service": "manifestator"},
    "mcp": {"status": "ok"},
    "shub": {"status": "ok", "module": "shubniggurath", "version": "7.0-FASE1"},
    "spawner": {"status": "ok", "service": "spawner", "version": "v7.0"},
    "operator": {"status": "ok", "module": "operator", "version": "7.0"},
}

HERMES_TOOLS = {
    "cli_tools": [
        {"name": "deepseek_r1", "available": True, "version": "1.0"},
        {"name": "copilot_cli", "available": True, "version": "1.2"},
    ],
    "local_models": [
        {"name": "general-7b", "size": "4.1GB", "loaded": True},
        {"name": "deepseek-r1-7b", "size": "4.7GB", "loaded": False},
    ],
}

# POST shub /metrics: each name in "include" adds these keys to the answer.
SHUB_METRICS = {
    "sessions": {
        "active_sessions": 2,
        "projects": [{"id": "proj-001", "name": "Demo mix"}, {"id": "proj-002", "name": "Podcast master"}],
    },
    "resources": {"resources": {"cpu_percent": 12.5, "memory_mb": 512.0}},
    "queue": {"queue": {"pending": 0}},
}


def json_error(http_error, detail):
    """An aiohttp HTTP exception whose body is {"detail": ...}, ready to raise."""
    return http_error(text=json.dumps({"detail": detail}), content_type="application/json")


async def mark_simulated(request, response):
    response.headers["X-VX11-Simulated"] = "1"


def health_body(fleet, slug):
    body = dict(HEALTH[slug])
    if slug == "madre":
        body["time"] = datetime.now(UTC).isoformat()
        body["deps"] = {dep: fleet.dep_state(dep) for dep in MADRE_DEPS}
    if slug == "shub" and fleet.warming_up():
        body["status"] = "initializing"
    return body


async def shub_metrics(request):
    try:
        body = await request.json()
    except ValueError:
        raise json_error(web.HTTPBadRequest, "body must be JSON") from None
    include = body.get("include") if isinstance(body, dict) else None
    if not isinstance(include, list) or not all(isinstance(name, str) and name in SHUB_METRICS for name in include):
        raise json_error(web.HTTPBadRequest, f'"include" must be a list of names from {list(SHUB_METRICS)}')
    answer = {}
    for name in include:
        answer.update(SHUB_METRICS[name])
    return answer


async def normal_answer(fleet, slug, request):
    """What the real module answers (a dict, or a whole response when proxied), or a 404 like FastAPI's."""
    route = (request.method, request.path)
    if route == ("GET", "/health"):
        return health_body(fleet, slug)
    if slug == "hermes" and route == ("GET", "/tools"):
        return HERMES_TOOLS
    if slug == "shub" and route == ("POST", "/metrics"):
        return await shub_metrics(request)
    if slug == "tentaculo_link" and request.path.startswith("/vx11/"):
        return await proxy(fleet, request)
    handler = E2E_ROUTES.get(slug)
    if handler is not None:
        return await handler(fleet, request)
    raise json_error(web.HTTPNotFound, "Not Found")


# -- E2E: what flows A (gateway -> switch -> hermes -> madre), B (madre -> daughter) and C
# (hormiguero -> manifestator) call. State (plans, incidents, drift reports, patches) lives in the
# SimFleet's bounded memory, so one module can answer about what another produced.

PROXY_TIMEOUT = 3.0  # seconds; the real gateway gives up on an upstream module after 3 s
MEMORY_SIZE = 500  # plans, incidents, drift reports and patches kept per kind (oldest dropped)
MAX_TEXT = 2000  # longest intent text madre accepts
RISK_HIGH = {"delete", "drop", "destroy", "reset", "migrate", "restore", "stop", "kill", "terminate"}
RISK_MED = {"restart", "reboot", "suspend", "cleanup", "patch", "update"}
SPAWN_ACTIONS = {"run", "execute", "start"}
OTHER_ACTIONS = {"status", "check", "scan", "analyze", "route", "list", "show"}
DENIED_ACTIONS = {"stop", "kill", "delete", "destroy"}  # ... on madre or tentaculo_link
PROTECTED = {"madre", "tentaculo_link"}
ANTS = ("fs_drift", "health", "db_sanity", "cpu_pressure")
BLUEPRINT = "vx11-v7"
# What the fs_drift ant finds and manifestator's /drift reports: the blueprint against the module dirs.
FS_DRIFT = [
    {"module": "shubniggurath", "missing": ["shubniggurath/engines/"], "extra": [], "changed": []},
    {"module": "hermes", "missing": [], "extra": ["switch/hermes/tmp_cache/"], "changed": ["hermes/main.py"]},
]
# manifestator's patch plan: each kind of drift (a key of FS_DRIFT's rows) becomes one action with its reason
PLAN_ACTIONS = (
    ("missing", "add", "missing_from_canonical"),
    ("extra", "remove", "extra_not_in_canonical"),
    ("changed", "verify", "changed_from_canonical"),
)
PLAN_SCOPES = ("local", "global")
PLAN_SECONDS_PER_ACTION = 2  # the real manifestator's rough estimate
QUEEN_TIMEOUT = 1.0  # seconds hormiguero's queen waits for manifestator's patch plan before going on without one


class Memory:
    """Bounded dicts (oldest entry dropped) and id counters for the E2E endpoints."""

    def __init__(self, size=MEMORY_SIZE):
        self.size = size
        self._tables = {}
        self._ids = itertools.count(1)

    def put(self, table, key, value):
        rows = self._tables.setdefault(table, OrderedDict())
        rows[key] = value
        while len(rows) > self.size:
            rows.popitem(last=False)
        return value

    def get(self, table, key):
        return self._tables.get(table, {}).get(key)

    def values(self, table):
        return list(self._tables.get(table, {}).values())

    def next_id(self):
        return next(self._ids)


def now_iso():
    return datetime.now(UTC).isoformat()


async def json_body(request, required=True):
    """The request's JSON object, or a FastAPI-like 422 {"detail": ...}."""
    if not required and not await request.read():
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise json_error(web.HTTPUnprocessableEntity, "body must be JSON") from None
    if not isinstance(body, dict):
        raise json_error(web.HTTPUnprocessableEntity, "body must be a JSON object")
    return body


async def proxy(fleet, request):
    """tentaculo_link: /vx11/intent and /vx11/result/* go to madre; /vx11/<module>/<rest> to <module> /<rest>."""
    if request.path == "/vx11/intent" or request.path.startswith("/vx11/result/"):
        target, path = "madre", request.path
    else:
        parts = request.path.split("/", 3)  # "", "vx11", module, rest
        target = parts[2] if len(parts) > 2 else ""
        if target not in PORTS or target == "tentaculo_link":
            raise json_error(
                web.HTTPNotFound,
                f"no upstream for {request.path}; use /vx11/<module>/<path>, /vx11/intent or /vx11/result/<id>",
            )
        path = "/" + (parts[3] if len(parts) > 3 else "")
    url = fleet.base_url(target) + path + (f"?{request.query_string}" if request.query_string else "")
    headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept", "x-vx11-token")}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROXY_TIMEOUT)) as session:
            async with session.request(request.method, url, data=await request.read(), headers=headers) as upstream:
                body = await upstream.read()
                return web.Response(
                    body=body,
                    status=upstream.status,
                    content_type=upstream.content_type,
                    headers={"X-VX11-Upstream": target},
                )
    except TimeoutError:
        return web.json_response({"detail": f"upstream {target} timed out after {PROXY_TIMEOUT:g} s"}, status=504)
    except aiohttp.ClientError as err:
        return web.json_response({"detail": f"upstream {target} unreachable: {type(err).__name__}"}, status=502)


def parse_intent(body):
    """IntentV2 from madre's /vx11/intent body {text, session_id?, mode?, require?: {spawner}}."""
    text = body.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise json_error(
            web.HTTPUnprocessableEntity, f'"text" must be a non-empty string of at most {MAX_TEXT} characters'
        )
    mode = body.get("mode", "MADRE")
    if mode not in ("MADRE", "AUDIO_ENGINEER"):
        raise json_error(web.HTTPUnprocessableEntity, '"mode" must be "MADRE" or "AUDIO_ENGINEER"')
    require = body.get("require") or {}
    if not isinstance(require, dict):
        raise json_error(web.HTTPUnprocessableEntity, '"require" must be an object like {"spawner": true}')
    words = re.findall(r"[a-z_]+", text.lower())
    known = RISK_HIGH | RISK_MED | SPAWN_ACTIONS | OTHER_ACTIONS
    action = next((w for w in words if w in known), "chat")
    targets = list(
        dict.fromkeys("shub" if w == "shubniggurath" else w for w in words if w in PORTS or w == "shubniggurath")
    )
    risk = "HIGH" if action in RISK_HIGH else "MED" if action in RISK_MED else "LOW"
    denied = [t for t in targets if t in PROTECTED] if action in DENIED_ACTIONS else []
    if denied:
        raise json_error(web.HTTPForbidden, f"{action} on {', '.join(denied)} is denied")
    return {
        "intent_id": str(uuid.uuid4()),
        "session_id": str(body.get("session_id") or uuid.uuid4())[:64],
        "mode": mode,
        "dsl": {
            "domain": "audio" if mode == "AUDIO_ENGINEER" else ("system" if action != "chat" else "general"),
            "action": action,
            "parameters": {"targets": targets},
            "confidence": 0.9 if action != "chat" else 0.5,
            "original_text": text,
        },
        "risk": risk,
        "requires_confirmation": risk in ("MED", "HIGH"),
        "targets": targets,
    }, bool(require.get("spawner"))


def plan_for(fleet, intent, spawner):
    """PlanV2: SYSTEM_HEALTHCHECK -> (blocking NOOP awaiting_confirmation) -> CALL_SWITCH|CALL_SHUB
    -> SPAWNER_REQUEST (run/execute/start, or required) -> NOOP plan_complete."""

    def step(kind, payload, blocking=False):
        return {
            "type": kind,
            "payload": payload,
            "blocking": blocking,
            "status": "pending",
            "result": None,
            "error": None,
        }

    steps = [step("SYSTEM_HEALTHCHECK", {"modules": intent["targets"] or ["madre"]})]
    if intent["requires_confirmation"]:
        steps.append(step("NOOP", {"reason": "awaiting_confirmation"}, blocking=True))
    audio = intent["mode"] == "AUDIO_ENGINEER"
    steps.append(step("CALL_SHUB" if audio else "CALL_SWITCH", {"prompt": intent["dsl"]["original_text"]}))
    if spawner or intent["dsl"]["action"] in SPAWN_ACTIONS:
        steps.append(step("SPAWNER_REQUEST", {"action": intent["dsl"]["action"], "targets": intent["targets"]}))
    steps.append(step("NOOP", {"reason": "plan_complete"}))
    plan = {
        "plan_id": str(uuid.uuid4()),
        "intent_id": intent["intent_id"],
        "session_id": intent["session_id"],
        "status": "PENDING",
        "steps": steps,
        "created_at": now_iso(),
    }
    advance(fleet, plan)
    return plan


def advance(fleet, plan):
    """Run the plan's steps up to the first that must wait: a blocking NOOP (confirmation) or the spawner."""
    plan["status"] = "RUNNING"
    for s in plan["steps"]:
        if s["status"] == "done":
            continue
        if s["blocking"] and s["status"] == "pending":
            s["status"] = plan["status"] = "WAITING"
            return
        if s["type"] == "SPAWNER_REQUEST" and s["status"] == "pending":
            s["status"] = "queued"
            return
        s["status"] = "done"
        if s["type"] == "SYSTEM_HEALTHCHECK":
            s["result"] = {"deps": {dep: fleet.dep_state(dep) for dep in MADRE_DEPS}}
        elif s["type"] == "CALL_SWITCH":
            s["result"] = {"model": HEALTH["switch"]["active_model"], "reply": "ok"}
        elif s["type"] == "CALL_SHUB":
            s["result"] = {"engine": "shubniggurath", "reply": "ok"}
    plan["status"] = "DONE"


async def madre_answer(fleet, request):
    path, method = request.path, request.method
    if (method, path) == ("POST", "/vx11/intent"):
        intent, spawner = parse_intent(await json_body(request))
        plan = plan_for(fleet, intent, spawner)
        correlation_id = str(uuid.uuid4())
        status = {"DONE": "DONE", "WAITING": "WAITING"}.get(plan["status"], "QUEUED")
        fleet.memory.put("plans", plan["plan_id"], plan)
        fleet.memory.put(
            "results",
            correlation_id,
            {"correlation_id": correlation_id, "intent_id": intent["intent_id"], "plan_id": plan["plan_id"]},
        )
        return {"status": status, "correlation_id": correlation_id, "intent": intent, "plan": plan}
    if (method, path) == ("GET", "/madre/plans"):
        return {
            "plans": [
                {k: p[k] for k in ("plan_id", "intent_id", "session_id", "status")}
                for p in fleet.memory.values("plans")
            ]
        }
    match = re.fullmatch(r"/madre/plans/([\w-]+)(/confirm)?", path)
    if match:
        plan = fleet.memory.get("plans", match[1])
        if plan is None:
            raise json_error(web.HTTPNotFound, f"plan {match[1]} not found")
        if match[2] and method == "POST":
            if plan["status"] != "WAITING":
                raise json_error(web.HTTPConflict, f"plan {match[1]} is {plan['status']}, not WAITING")
            next(s for s in plan["steps"] if s["status"] == "WAITING")["status"] = "done"
            advance(fleet, plan)
            return plan
        if not match[2] and method == "GET":
            return plan
    match = re.fullmatch(r"/vx11/result/([\w-]+)", path)
    if match and method == "GET":
        result = fleet.memory.get("results", match[1])
        if result is None:
            raise json_error(web.HTTPNotFound, f"no intent with correlation id {match[1]}")
        plan = fleet.memory.get("plans", result["plan_id"]) or {}
        return {**result, "status": plan.get("status", "UNKNOWN")}
    raise json_error(web.HTTPNotFound, "Not Found")


def incident(kind, severity, evidence, actions, scan_id, fleet):
    row = {
        "id": fleet.memory.next_id(),
        "kind": kind,
        "severity": severity,
        "status": "open",
        "evidence": evidence,
        "correlation_id": str(uuid.uuid4()),
        "suggested_actions": actions,
        "scan_id": scan_id,
        "created_at": now_iso(),
    }
    return fleet.memory.put("incidents", row["id"], row)


async def run_ant(fleet, name, scan_id):
    """One ant's incidents: fs_drift always finds FS_DRIFT, and the queen asks manifestator for its patch plan;
    health finds the siblings madre would see down."""
    if name == "fs_drift":
        row = incident(
            "fs_drift",
            "medium",
            {"blueprint": BLUEPRINT, "drift": FS_DRIFT},
            ["manifestator_patch"],
            scan_id,
            fleet,
        )
        row["patchplan"], row["patchplan_error"] = await ask_for_patch_plan(fleet, FS_DRIFT)
        return [row]
    if name == "health":
        down = sorted(slug for slug in PORTS if slug != "hormiguero" and fleet.dep_state(slug) == "down")
        return [incident("health", "high", {"down": down}, ["restart_service"], scan_id, fleet)] if down else []
    return []  # db_sanity, cpu_pressure: nothing to report in the demo


async def ask_for_patch_plan(fleet, drift):
    """The queen on an fs_drift finding: manifestator's POST /manifestator/patchplan for the drift, as
    (plan, None), or (None, why) when manifestator cannot give one: the scan goes on without it, as the
    real queen's does."""
    evidence = {key: [path for row in drift for path in row[key]] for key, _, _ in PLAN_ACTIONS}
    url = fleet.base_url("manifestator") + "/manifestator/patchplan"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=QUEEN_TIMEOUT)) as session:
            async with session.post(url, json={"drift_evidence": evidence, "scope": "local"}) as answer:
                if answer.status != 200:
                    return None, f"manifestator answered HTTP {answer.status}"
                plan = await answer.json(content_type=None)
    except TimeoutError:
        return None, f"manifestator timed out after {QUEEN_TIMEOUT:g} s"
    except aiohttp.ClientError as err:
        return None, f"manifestator unreachable: {type(err).__name__}"
    except ValueError:
        return None, "manifestator answered invalid JSON"
    if not isinstance(plan, dict) or "plan_id" not in plan:
        return None, "manifestator answered no patch plan"
    return plan, None


async def hormiguero_answer(fleet, request):
    path, method = request.path, request.method
    if (method, path) == ("POST", "/hormiguero/scan"):
        body = await json_body(request, required=False)
        ants = body.get("ants", list(ANTS))
        if not isinstance(ants, list) or not ants or not all(a in ANTS for a in ants):
            raise json_error(web.HTTPUnprocessableEntity, f'"ants" must be a non-empty list of names from {list(ANTS)}')
        scan_id = f"scan-{fleet.memory.next_id()}"
        found, report = [], []
        for name in ants:
            rows = await run_ant(fleet, name, scan_id)
            found += rows
            report.append({"name": name, "status": "ok", "incidents": len(rows)})
        return {"scan_id": scan_id, "status": "done", "ants": report, "incidents": found}
    if (method, path) == ("GET", "/hormiguero/incidents"):
        status = request.query.get("status")
        return {"incidents": [i for i in fleet.memory.values("incidents") if status in (None, i["status"])]}
    match = re.fullmatch(r"/hormiguero/incidents/(\d+)", path)
    if match and method == "GET":
        row = fleet.memory.get("incidents", int(match[1]))
        if row is None:
            raise json_error(web.HTTPNotFound, f"incident {match[1]} not found")
        return row
    raise json_error(web.HTTPNotFound, "Not Found")


def incident_by_correlation(fleet, correlation_id):
    row = next((i for i in fleet.memory.values("incidents") if i["correlation_id"] == correlation_id), None)
    if row is None:
        raise json_error(web.HTTPNotFound, f"no incident with correlation id {correlation_id}")
    return row


async def manifestator_answer(fleet, request):
    path, method = request.path, request.method
    if (method, path) == ("GET", "/drift"):
        correlation_id = request.query.get("correlation_id")
        if correlation_id:
            incident_by_correlation(fleet, correlation_id)
        report = {
            "drift_id": f"drift-{fleet.memory.next_id()}",
            "status": "drift_detected",
            "blueprint": BLUEPRINT,
            "correlation_id": correlation_id,
            "modules": FS_DRIFT,
            "checked_at": now_iso(),
        }
        return fleet.memory.put("drift", report["drift_id"], report)
    if (method, path) == ("POST", "/generate-patch"):
        body = await json_body(request)
        drift_id, correlation_id = body.get("drift_id"), body.get("correlation_id")
        if not drift_id and not correlation_id:
            raise json_error(web.HTTPUnprocessableEntity, 'send "drift_id" or "correlation_id"')
        if drift_id and fleet.memory.get("drift", drift_id) is None:
            raise json_error(web.HTTPNotFound, f"drift report {drift_id} not found")
        if correlation_id:
            incident_by_correlation(fleet, correlation_id)
        operations = [{"op": "add", "path": "/" + d, "value": {"type": "dir"}} for m in FS_DRIFT for d in m["missing"]]
        operations += [{"op": "remove", "path": "/" + d} for m in FS_DRIFT for d in m["extra"]]
        operations += [
            {"op": "replace", "path": "/" + d, "value": {"type": "file"}} for m in FS_DRIFT for d in m["changed"]
        ]
        patch = {
            "patch_id": f"patch-{fleet.memory.next_id()}",
            "status": "proposed",
            "drift_id": drift_id,
            "correlation_id": correlation_id,
            "operations": operations,
            "created_at": now_iso(),
        }
        return fleet.memory.put("patches", patch["patch_id"], patch)
    if (method, path) == ("POST", "/manifestator/patchplan"):
        return patch_plan(await json_body(request, required=False))
    raise json_error(web.HTTPNotFound, "Not Found")


def patch_plan(body):
    """manifestator's plan for {drift_evidence: {missing, extra, changed}, scope}: one action per path, the
    risk from how many (low under 3, mid under 10, else high), about 2 s per action."""
    drift, scope = body.get("drift_evidence", {}), body.get("scope", "local")
    if not isinstance(drift, dict) or not all(
        isinstance(drift.get(key, []), list) and all(isinstance(path, str) for path in drift.get(key, []))
        for key, _, _ in PLAN_ACTIONS
    ):
        raise json_error(
            web.HTTPUnprocessableEntity,
            '"drift_evidence" must be an object of path lists: {"missing": [...], "extra": [...], "changed": [...]}',
        )
    if scope not in PLAN_SCOPES:
        raise json_error(web.HTTPUnprocessableEntity, f'"scope" must be one of {list(PLAN_SCOPES)}')
    actions = [
        {"action": action, "target": target, "reason": reason}
        for key, action, reason in PLAN_ACTIONS
        for target in drift.get(key, [])
    ]
    return {
        "plan_id": str(uuid.uuid4()),
        "actions": actions,
        "risk": "low" if len(actions) < 3 else "mid" if len(actions) < 10 else "high",
        "estimated_time_sec": PLAN_SECONDS_PER_ACTION * len(actions),
        "notes": f"Plan for {scope} scope with {len(actions)} actions",
    }


E2E_ROUTES = {"madre": madre_answer, "hormiguero": hormiguero_answer, "manifestator": manifestator_answer}


def module_app(fleet, slug):
    async def handle(request):
        mode, delay = fleet.mode_of(slug)
        if mode == "hang":
            await asyncio.Event().wait()  # forever; stop() and "down" cancel it
        if mode == "slow":
            await asyncio.sleep(delay)
        if mode == "error":
            return web.json_response({"detail": f"simulated internal error in {slug}"}, status=500)
        if mode == "garbage":
            return web.Response(text="<<simulated garbage>> this body is not JSON", content_type="text/plain")
        body = await normal_answer(fleet, slug, request)
        if isinstance(body, web.StreamResponse):  # proxied: the upstream's answer as it came
            return body
        if mode == "wrong_status":
            body = {**body, "status": "broken"}
        return web.json_response(body)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handle)
    app.on_response_prepare.append(mark_simulated)
    return app


def control_app(fleet):
    async def show(request):
        return web.json_response(fleet.describe())

    async def change(request):
        slug = request.match_info["slug"]
        if slug not in PORTS:
            raise json_error(web.HTTPNotFound, f"unknown module {slug!r}; expected one of: {', '.join(PORTS)}")
        try:
            body = await request.json()
        except ValueError:
            raise json_error(web.HTTPBadRequest, 'body must be JSON like {"mode": "slow", "delay": 1.5}') from None
        if not isinstance(body, dict):
            raise json_error(web.HTTPBadRequest, 'body must be a JSON object like {"mode": "slow", "delay": 1.5}')
        try:
            fleet.store_mode(slug, body.get("mode"), body.get("delay"))
        except ValueError as err:
            raise json_error(web.HTTPBadRequest, str(err)) from None
        await fleet.apply_mode(slug)
        return web.json_response({"module": slug, **fleet.describe()["modules"][slug]})

    app = web.Application()
    app.router.add_get("/_sim", show)
    app.router.add_post("/_sim/{slug}", change)
    app.on_response_prepare.append(mark_simulated)
    return app


class SimFleet:
    """The ten simulated modules plus the control server, in one background thread."""

    def __init__(
        self, host="127.0.0.1", port_offset=0, ephemeral=False, control_port=None, shub_warmup=0.0, exclude=()
    ):
        """`exclude`: modules this fleet does not serve, leaving their ports free (the demo runs them as their
        own processes under the power manager, with apps.simfleet.serve_one)."""
        unknown = sorted(set(exclude) - set(PORTS))
        if unknown:
            raise ValueError(
                f"unknown module(s) to exclude: {', '.join(unknown)}; expected some of: {', '.join(PORTS)}"
            )
        if exclude and ephemeral:
            raise ValueError("exclude needs fixed ports (not ephemeral): their processes must know where to listen")
        self.host = host
        self.shub_warmup = shub_warmup
        self.excluded = frozenset(exclude)
        self._wanted_ports = {slug: 0 if ephemeral else port + port_offset for slug, port in PORTS.items()}
        if control_port is None:
            control_port = 0 if ephemeral else CONTROL_PORT + port_offset
        self._wanted_control_port = control_port
        self.control_port = None
        self._ports = {}  # slug -> port actually bound; kept while a module is down
        self._modes = dict.fromkeys(PORTS, ("ok", None))  # slug -> (mode, delay)
        self._modes_lock = threading.Lock()
        self._runners = {}  # slug -> AppRunner of each module that is listening now
        self._control_runner = None
        self._loop = self._thread = self._started_at = None
        self.memory = Memory()  # plans, incidents, drift reports, patches of the E2E endpoints

    # -- life cycle --------------------------------------------------------------------------

    def start(self):
        if self._thread:
            raise RuntimeError("this SimFleet is already running")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vx11-simfleet", daemon=True)
        self._thread.start()
        try:
            self._run(self._start_all())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if not self._thread:
            return
        try:
            self._run(self._stop_all())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
            self._loop = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # -- where things are --------------------------------------------------------------------

    @property
    def ports(self):
        return dict(self._ports)

    def base_url(self, slug):
        if slug in self.excluded:
            return f"http://{self.host}:{self._wanted_ports[slug]}"
        if slug not in self._ports:
            raise ValueError(f"unknown or not started module {slug!r}; known: {', '.join(PORTS)}")
        return f"http://{self.host}:{self._ports[slug]}"

    @property
    def control_url(self):
        return f"http://{self.host}:{self.control_port}"

    # -- modes -------------------------------------------------------------------------------

    def set_mode(self, slug, mode, delay=None):
        """Make a module misbehave (see MISBEHAVIOURS); safe to call from any thread but the fleet's own."""
        self.store_mode(slug, mode, delay)
        if self._thread:
            if threading.current_thread() is self._thread:
                raise RuntimeError("inside the fleet's loop, use store_mode() and await apply_mode()")
            self._run(self.apply_mode(slug))

    def get_modes(self):
        """{slug: {"mode": ..., "delay": seconds or None}}"""
        with self._modes_lock:
            return {slug: {"mode": mode, "delay": delay} for slug, (mode, delay) in self._modes.items()}

    def describe(self):
        modules = {slug: {"port": self._ports.get(slug), **state} for slug, state in self.get_modes().items()}
        for slug in self.excluded:
            modules[slug] = {"port": self._wanted_ports[slug], "mode": "own process (power manager)", "delay": None}
        return {"simulator": True, "modules": modules}

    def mode_of(self, slug):
        with self._modes_lock:
            return self._modes[slug]

    def store_mode(self, slug, mode, delay=None):
        """Validate and record a mode; apply_mode() then opens or closes the socket."""
        if slug not in PORTS:
            raise ValueError(f"unknown module {slug!r}; expected one of: {', '.join(PORTS)}")
        if slug in self.excluded:
            raise ValueError(
                f"{slug} is not simulated here: it runs as its own process under the power manager "
                "(start/stop it from the admin's power console)"
            )
        if mode not in MISBEHAVIOURS:
            raise ValueError(f"unknown mode {mode!r}; expected one of: {', '.join(MISBEHAVIOURS)}")
        if delay is not None:
            if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay):
                raise ValueError(f"delay must be a number of seconds, not {delay!r}")
            if delay < 0:
                raise ValueError(f"delay must be >= 0 seconds, not {delay!r}")
        delay = (DEFAULT_DELAY if delay is None else float(delay)) if mode == "slow" else None
        with self._modes_lock:
            self._modes[slug] = (mode, delay)

    def dep_state(self, slug):
        """ "up" or "down", as real madre's 2 s probe would see the simulated sibling."""
        mode, delay = self.mode_of(slug)
        too_slow = mode == "slow" and delay >= MADRE_PROBE_TIMEOUT
        return "down" if mode in DEAD_MISBEHAVIOURS or too_slow else "up"

    def warming_up(self, now=None):
        """`now`: a time.monotonic() reading to judge at (default: the current one), so a caller can test the
        end of warm-up without waiting for it."""
        now = time.monotonic() if now is None else now
        return self._started_at is not None and now - self._started_at < self.shub_warmup

    # -- inside the loop ---------------------------------------------------------------------

    def _run(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _listen(self, app, port, what):
        # handler_cancellation: a hanging handler ends when its client gives up.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, self.host, port)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            raise RuntimeError(
                f"simfleet: {what} cannot listen on {self.host}:{port} ({err.strerror or err}); "
                "is another fleet running? use port_offset or ephemeral=True"
            ) from err
        return runner, site.port

    async def _start_all(self):
        self._started_at = time.monotonic()
        self._apply_lock = asyncio.Lock()  # one socket change at a time (set_mode vs control server)
        self._control_runner, self.control_port = await self._listen(
            control_app(self), self._wanted_control_port, "control server"
        )
        for slug in PORTS:
            if slug in self.excluded:
                continue
            self._runners[slug], self._ports[slug] = await self._listen(
                module_app(self, slug), self._wanted_ports[slug], slug
            )
            await self.apply_mode(slug)  # a module set "down" before start() closes again at once

    async def _stop_all(self):
        runners = [*self._runners.values(), self._control_runner]
        self._runners, self._control_runner = {}, None
        await asyncio.gather(*(runner.cleanup() for runner in runners if runner))
        leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    async def apply_mode(self, slug):
        """Close the module's socket when it is "down", re-open it on the same port otherwise."""
        async with self._apply_lock:
            down = self.mode_of(slug)[0] == "down"
            if down and slug in self._runners:
                await self._runners.pop(slug).cleanup()
            elif not down and slug not in self._runners and slug in self._ports:
                self._runners[slug], _ = await self._listen(module_app(self, slug), self._ports[slug], slug)
