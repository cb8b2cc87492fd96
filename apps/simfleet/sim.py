"""SIMULATOR: a fake VX11 fleet for demos and tests, never part of the real portal.

Ten aiohttp servers on 127.0.0.1, one per VX11 module, answer with the exact /health shapes of
the real modules (../shared/vx11/REFERENCE.md section 1) plus the two upstream calls the operator
backend makes (hermes GET /tools, shub POST /metrics). A control server (GET /_sim, POST /_sim/<slug>)
and `SimFleet.set_mode()` make any module misbehave: slow, hang, error, garbage, wrong_status, down.
All servers share one asyncio loop in one background thread, so a test starts the fleet in a line:

    with SimFleet(ephemeral=True) as fleet:
        fleet.set_mode("madre", "hang")
        httpx.get(fleet.base_url("madre") + "/health", timeout=0.5)  # -> ReadTimeout
"""

import asyncio
import json
import math
import threading
import time
from datetime import datetime, timezone

from aiohttp import web

from apps.fleet.reference import REFERENCE_MODULES

PORTS = {spec["slug"]: spec["port"] for spec in REFERENCE_MODULES}
CONTROL_PORT = 8099
DEFAULT_DELAY = 1.0  # seconds, for "slow" without a delay
SHUTDOWN_TIMEOUT = 0.2  # seconds an in-flight (hanging) request may delay stop() or "down"
MADRE_DEPS = ("switch", "hormiguero", "spawner")
MADRE_PROBE_TIMEOUT = 2.0  # real madre probes its deps with a 2 s timeout
DEAD_MODES = {"down", "hang", "error", "garbage"}  # what madre would see as a dead dependency

MODES = {
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
    "switch": {"status": "ok", "module": "switch", "active_model": "general-7b", "warm_model": "deepseek-r1-7b", "queue_size": 0},
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
    "sessions": {"active_sessions": 2, "projects": [{"id": "proj-001", "name": "Demo mix"}, {"id": "proj-002", "name": "Podcast master"}]},
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
        body["time"] = datetime.now(timezone.utc).isoformat()
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
    """What the real module answers (a dict), or a 404 like FastAPI's."""
    route = (request.method, request.path)
    if route == ("GET", "/health"):
        return health_body(fleet, slug)
    if slug == "hermes" and route == ("GET", "/tools"):
        return HERMES_TOOLS
    if slug == "shub" and route == ("POST", "/metrics"):
        return await shub_metrics(request)
    raise json_error(web.HTTPNotFound, "Not Found")


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

    def __init__(self, host="127.0.0.1", port_offset=0, ephemeral=False, control_port=None, shub_warmup=0.0):
        self.host = host
        self.shub_warmup = shub_warmup
        self._wanted_ports = {slug: 0 if ephemeral else port + port_offset for slug, port in PORTS.items()}
        if control_port is None:
            control_port = 0 if ephemeral else CONTROL_PORT + port_offset
        self._wanted_control_port = control_port
        self.control_port = None
        self._ports = {}  # slug -> port actually bound; kept while a module is down
        self._modes = {slug: ("ok", None) for slug in PORTS}  # slug -> (mode, delay)
        self._modes_lock = threading.Lock()
        self._runners = {}  # slug -> AppRunner of each module that is listening now
        self._control_runner = None
        self._loop = self._thread = self._started_at = None

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
        if slug not in self._ports:
            raise ValueError(f"unknown or not started module {slug!r}; known: {', '.join(PORTS)}")
        return f"http://{self.host}:{self._ports[slug]}"

    @property
    def control_url(self):
        return f"http://{self.host}:{self.control_port}"

    # -- modes -------------------------------------------------------------------------------

    def set_mode(self, slug, mode, delay=None):
        """Make a module misbehave (see MODES); safe to call from any thread but the fleet's own."""
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
        return {"simulator": True, "modules": modules}

    def mode_of(self, slug):
        with self._modes_lock:
            return self._modes[slug]

    def store_mode(self, slug, mode, delay=None):
        """Validate and record a mode; apply_mode() then opens or closes the socket."""
        if slug not in PORTS:
            raise ValueError(f"unknown module {slug!r}; expected one of: {', '.join(PORTS)}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of: {', '.join(MODES)}")
        if delay is not None:
            if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay):
                raise ValueError(f"delay must be a number of seconds, not {delay!r}")
            if delay < 0:
                raise ValueError(f"delay must be >= 0 seconds, not {delay!r}")
        delay = (DEFAULT_DELAY if delay is None else float(delay)) if mode == "slow" else None
        with self._modes_lock:
            self._modes[slug] = (mode, delay)

    def dep_state(self, slug):
        """"up" or "down", as real madre's 2 s probe would see the simulated sibling."""
        mode, delay = self.mode_of(slug)
        too_slow = mode == "slow" and delay >= MADRE_PROBE_TIMEOUT
        return "down" if mode in DEAD_MODES or too_slow else "up"

    def warming_up(self):
        return self._started_at is not None and time.monotonic() - self._started_at < self.shub_warmup

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
        self._control_runner, self.control_port = await self._listen(control_app(self), self._wanted_control_port, "control server")
        for slug in PORTS:
            self._runners[slug], self._ports[slug] = await self._listen(module_app(self, slug), self._wanted_ports[slug], slug)
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
