"""WebSocket fan-out through the channel layer: Redis against in-memory, figures, not tests.

    .venv/bin/python bench/ws_fanout.py [--clients 200] [--events 1000] [--paced-ms 1]
                                        [--sustained-ms 100] [--sustained-events 150]
                                        [--redis-url redis://127.0.0.1:6379/13] [--skip-extra] [--what-if]

N WebSocket clients (aiohttp, in this process) connect to /ws/bench-<i> of ONE daphne process
(a child process per channel-layer configuration), each with its own session id, so the only
group they share is `vx11.broadcast`; events are then group_send to that group with the send
time (`time.time()`) in the event data, and each client parses it on arrival.

The in-memory layer only works inside one process, so the publisher runs inside the daphne
process for both layers: the child is this same script with `--serve PORT`, which runs daphne
programmatically (daphne.server.Server) on `vx11_site.asgi:application` wrapped by a small ASGI
shim that answers `GET /__bench/publish` by calling `get_channel_layer().group_send(...)` on the
server's own event loop (and `GET /__bench/stats` with the server's CPU time and drop counters).
Nothing of the app is changed. For Redis the runs are repeated with the publisher in this (client)
process, a RedisChannelLayer on the same URL: the path publish() from a Celery worker takes.
Note: a publisher inside a saturated daphne is slowed down by the fan-out itself ("send s" in the
table), so its latency leaves out the time events would have waited before being sent; the
publisher-outside rows (pub=bench) show the queueing a burst really meets.

Runs, per configuration: a burst (--events as fast as the publisher can send), a paced run (one
event every --paced-ms ms) and a sustained run (--sustained-events, one every --sustained-ms ms,
a rate one daphne process keeps up with). Configurations, each in a fresh daphne process:
  * in-memory, capacity 5000 (*)  the baseline: lossless, same capacity as Redis, poll off
  * in-memory, capacity 100       as settings.py builds it (no CONFIG), poll off
  * in-memory, app default        capacity 100 and the 1 s DB poll per client (burst only; --skip-extra)
  * redis, capacity 5000          VX11_CHANNEL_CAPACITY's default: the figures under test
  * redis, capacity 100           channels-redis's own default: why the setting is sized
  * --what-if (*): RedisPubSubChannelLayer; and RedisChannelLayer with vx11.event handed to the
    handler without channels' per-message close_old_connections thread-pool hop
(*) set up by this bench inside its daphne child only (settings / EventConsumer.dispatch patched
in memory before the first connection).

Per run: delivered total and minimum per client, duplicates, latency (receive - send) p50/p99/max,
drain (first send -> last receive), frames/s, the server's CPU time and CPU per delivered frame, and
where messages were dropped, counted inside the server by wrapping the layer's own drop points
(channels-redis's group_send "over capacity" log line and its receive-buffer eviction; the
in-memory layer's ChannelFull, which its group_send swallows). The DB is a throwaway SQLite file
in a temp dir (migrated first); Redis keys `asgi*` of the bench's db (13) are deleted before and
after. RLIMIT_NOFILE is raised to the hard limit. Progress goes to stderr, the figures table to
stdout. Nothing fails on timing. A full run takes ~10 min (~12 min with --what-if) on 2 CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from urllib.parse import parse_qs

from _servers import raise_fd_limit  # bench/ is on sys.path when a bench script runs

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
GROUP = "vx11.broadcast"
P99_GOAL_MS = 250.0
P99_RATIO_GOAL = 3.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------------
# The publisher: the same loop inside daphne (in-process) or in this process (Redis only)
# ---------------------------------------------------------------------------------------------


async def publish_events(layer, run: str, n: int, interval: float, cursor: int) -> dict:
    """group_send n envelopes to the broadcast group, back to back (interval 0) or one every
    `interval` seconds on an absolute schedule (a late send does not push the later ones back)."""
    from datetime import datetime

    start = time.perf_counter()
    started_at = time.time()
    for i in range(n):
        if interval:
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        now = time.time()
        envelope = {
            "type": "status_changed",
            "session_id": None,
            "timestamp": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            "data": {"run": run, "seq": i, "t": now},
            "cursor": cursor + i,  # unique: the consumer de-duplicates by cursor when it polls
        }
        await layer.group_send(GROUP, {"type": "vx11.event", "event": envelope})
    return {"sent": n, "seconds": time.perf_counter() - start, "started_at": started_at}


class DropCounters:
    """Where a channel layer drops messages, counted by wrapping its own drop points."""

    def __init__(self):
        self.redis_over_capacity = 0  # channels-redis group_send: channel keys skipped (ZCOUNT >= capacity)
        self.redis_buffer_evicted = 0  # channels-redis receive buffer (BoundedQueue) full: oldest dropped
        self.memory_channel_full = 0  # in-memory layer: ChannelFull, swallowed by its group_send

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def install(self) -> None:
        counters = self

        class OverCapacity(logging.Handler):
            def emit(self, record):
                # "%s of %s channels over capacity in group %s"
                if "over capacity" in str(record.msg) and record.args:
                    counters.redis_over_capacity += int(record.args[0])

        redis_logger = logging.getLogger("channels_redis.core")
        redis_logger.setLevel(logging.INFO)
        redis_logger.propagate = False
        redis_logger.addHandler(OverCapacity(logging.INFO))

        try:
            from channels_redis import core as redis_core

            original_put = redis_core.BoundedQueue.put_nowait

            def put_nowait(queue, item):
                if queue.full():
                    counters.redis_buffer_evicted += 1
                return original_put(queue, item)

            redis_core.BoundedQueue.put_nowait = put_nowait
        except ImportError:
            pass

        from channels.exceptions import ChannelFull
        from channels.layers import InMemoryChannelLayer

        original_send = InMemoryChannelLayer.send

        async def send(layer, channel, message):
            try:
                return await original_send(layer, channel, message)
            except ChannelFull:
                counters.memory_channel_full += 1
                raise

        InMemoryChannelLayer.send = send


_bench_counters: DropCounters | None = None


def bench_counters() -> DropCounters:
    """The drop counters of this (client) process, installed once, for the Redis publisher run here."""
    global _bench_counters
    if _bench_counters is None:
        _bench_counters = DropCounters()
        _bench_counters.install()
    return _bench_counters


# ---------------------------------------------------------------------------------------------
# Server mode: daphne + the app + the publish/stats shim, in one process and one event loop
# ---------------------------------------------------------------------------------------------


class BenchShim:
    """ASGI: /__bench/* handled here (on daphne's loop), everything else to the real app."""

    def __init__(self, app, counters: DropCounters):
        self.app, self.counters = app, counters

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/__bench/"):
            return await self.bench(scope, receive, send)
        return await self.app(scope, receive, send)

    async def bench(self, scope, receive, send):
        from channels.layers import get_channel_layer

        while (await receive()).get("more_body"):
            pass
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        layer = get_channel_layer()
        if scope["path"] == "/__bench/publish":
            body = await publish_events(
                layer, query["run"], int(query["n"]), float(query.get("interval", 0)), int(query["cursor"])
            )
        else:  # /__bench/stats
            body = {
                "cpu": cpu_seconds(),
                "layer": type(layer).__name__,
                "capacity": getattr(layer, "capacity", None),
                "groups": len(getattr(layer, "groups", {}) or {}),
                **self.counters.as_dict(),
            }
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


def serve(port: int) -> None:
    raise_fd_limit()
    sys.path.insert(0, str(PROJECT_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vx11_site.settings")
    import daphne.server  # installs the asyncio reactor before anything imports twisted's default one

    from vx11_site.asgi import application

    capacity = os.environ.get("VX11_BENCH_MEMORY_CAPACITY")
    if capacity:  # the lossless in-memory baseline: this process only, before the layer is first built
        from django.conf import settings

        layer_settings = settings.CHANNEL_LAYERS["default"]
        assert layer_settings["BACKEND"] == "channels.layers.InMemoryChannelLayer", layer_settings
        layer_settings["CONFIG"] = {**layer_settings.get("CONFIG", {}), "capacity": int(capacity)}
    if os.environ.get("VX11_BENCH_LAYER") == "pubsub":  # what-if: channels-redis's pub/sub layer, this process only
        from django.conf import settings

        settings.CHANNEL_LAYERS["default"] = {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [settings.REDIS_URL]},
        }
    if os.environ.get("VX11_BENCH_DIRECT_EVENTS"):
        # what-if: channels' dispatch() runs close_old_connections in the thread pool before EVERY handler;
        # vx11_event touches no database (with the poller off), so hand it the message directly
        from apps.operator.consumers import EventConsumer

        original_dispatch = EventConsumer.dispatch

        async def dispatch(self, message):
            if message["type"] == "vx11.event" and not getattr(self, "poller", None):
                return await self.vx11_event(message)
            return await original_dispatch(self, message)

        EventConsumer.dispatch = dispatch

    counters = DropCounters()
    counters.install()
    daphne.server.Server(
        application=BenchShim(application, counters),
        endpoints=[f"tcp:port={port}:interface=127.0.0.1:backlog=2048"],
        signal_handlers=True,
        verbosity=0,
        websocket_handshake_timeout=30,
    ).run()


# ---------------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------------


@dataclass
class RunStats:
    clients: int
    events: int
    counts: list = field(default_factory=list)
    seen: list = field(default_factory=list)
    latencies: list = field(default_factory=list)
    duplicates: int = 0
    last_receive: float = 0.0

    def __post_init__(self):
        self.counts = [0] * self.clients
        self.seen = [bytearray(self.events) for _ in range(self.clients)]

    def record(self, client: int, seq: int, latency: float, now: float) -> None:
        if self.seen[client][seq]:
            self.duplicates += 1
            return
        self.seen[client][seq] = 1
        self.counts[client] += 1
        self.latencies.append(latency)
        self.last_receive = now

    @property
    def delivered(self) -> int:
        return sum(self.counts)


class Fleet:
    """N WebSocket clients, one session id each, reading into the current run's stats."""

    def __init__(self, base_url: str, token: str, clients: int):
        self.base_url, self.token, self.n = base_url, token, clients
        self.runs: dict[str, RunStats] = {}
        self.sockets, self.readers, self.session = [], [], None
        self.stray = 0

    async def open(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        gate = asyncio.Semaphore(50)

        async def connect(i):
            async with gate:
                ws = await self.session.ws_connect(
                    f"{self.base_url.replace('http', 'ws', 1)}/ws/bench-{i}?token={self.token}",
                    max_msg_size=0,
                    autoping=True,
                    heartbeat=None,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5),
                )
                hello = json.loads((await ws.receive(timeout=30)).data)
                if hello.get("type") != "connected":
                    raise RuntimeError(f"client {i}: expected the connected control message, got {hello}")
                return ws

        self.sockets = await asyncio.gather(*(connect(i) for i in range(self.n)))
        self.readers = [asyncio.create_task(self.read(i, ws)) for i, ws in enumerate(self.sockets)]

    async def read(self, i: int, ws) -> None:
        import aiohttp

        loads, clock = json.loads, time.time
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            now = clock()
            frame = loads(msg.data)
            data = frame.get("data")
            stats = self.runs.get(data.get("run")) if isinstance(data, dict) else None
            if stats is None:
                self.stray += 1  # control messages, events of no run of ours
                continue
            stats.record(i, data["seq"], now - data["t"], now)

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        await asyncio.gather(*self.readers, return_exceptions=True)
        await self.session.close()

    async def get(self, path: str, **params) -> dict:
        async with self.session.get(
            f"{self.base_url}{path}", params={k: str(v) for k, v in params.items()}
        ) as response:
            response.raise_for_status()
            return await response.json()


def percentile(ordered: list, q: float) -> float:
    """Nearest rank on a sorted list."""
    if not ordered:
        return float("nan")
    return ordered[max(0, -(-len(ordered) * q // 100) - 1)]


@dataclass
class Result:
    config: str
    run: str
    publisher: str
    clients: int
    events: int
    delivered: int = 0
    min_per_client: int = 0
    duplicates: int = 0
    p50: float = float("nan")
    p99: float = float("nan")
    max: float = float("nan")
    send_s: float = 0.0
    drain_s: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    drops: dict = field(default_factory=dict)

    @property
    def expected(self) -> int:
        return self.clients * self.events


async def one_run(
    fleet: Fleet,
    config: str,
    name: str,
    publisher: str,
    events: int,
    interval: float,
    cursor: int,
    external_layer=None,
    external_counters: DropCounters | None = None,
    idle: float = 3.0,
    cap: float = 180.0,
) -> Result:
    run = f"{config}/{name}/{publisher}/{secrets.token_hex(3)}"
    stats = fleet.runs[run] = RunStats(fleet.n, events)
    before = await fleet.get("/__bench/stats")
    external_before = external_counters.as_dict() if external_counters else {}
    client_cpu = time.process_time()
    if external_layer is not None:
        sent = await publish_events(external_layer, run, events, interval, cursor)
    else:
        sent = await fleet.get("/__bench/publish", run=run, n=events, interval=interval, cursor=cursor)
    # drained: everything arrived, or nothing new for `idle` seconds (a dropped message never comes)
    deadline = time.monotonic() + cap
    while stats.delivered < stats.clients * events and time.monotonic() < deadline:
        quiet_since = max(stats.last_receive, sent["started_at"] + sent["seconds"])
        if time.time() - quiet_since > idle:
            break
        await asyncio.sleep(0.05)
    after = await fleet.get("/__bench/stats")
    client_cpu = time.process_time() - client_cpu
    ordered = sorted(stats.latencies)
    drops = {k: after[k] - before[k] for k in ("redis_over_capacity", "redis_buffer_evicted", "memory_channel_full")}
    if external_counters:
        for k, v in external_counters.as_dict().items():
            drops[k] += v - external_before[k]
    del fleet.runs[run]
    return Result(
        config=config,
        run=name,
        publisher=publisher,
        clients=fleet.n,
        events=events,
        delivered=stats.delivered,
        min_per_client=min(stats.counts),
        duplicates=stats.duplicates,
        p50=percentile(ordered, 50) * 1000,
        p99=percentile(ordered, 99) * 1000,
        max=(ordered[-1] * 1000 if ordered else float("nan")),
        send_s=sent["seconds"],
        drain_s=(stats.last_receive - sent["started_at"]) if stats.latencies else float("nan"),
        server_cpu_s=after["cpu"] - before["cpu"],
        client_cpu_s=client_cpu,
        drops=drops,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict, log_path: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log_file = open(log_path, "ab")
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", str(port)],
        cwd=PROJECT_DIR,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"daphne did not listen on {port} within 60 s:\n{log_path.read_text()[-3000:]}")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def clean_redis(url: str) -> int:
    """Delete the channel layer's keys (`asgi*`) in the bench's Redis db: stale groups from a killed run."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match="asgi*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
    return len(keys)


@dataclass
class RunSpec:
    name: str
    interval: float  # seconds between sends; 0 = burst
    events: int
    publisher: str = "server"  # "server": inside daphne (both layers); "bench": this process (Redis only)


@dataclass
class Config:
    name: str
    env: dict
    runs: list  # of RunSpec
    redis_capacity: int | None = None


async def run_config(config: Config, args, base_env: dict, tmp: Path) -> list[Result]:
    env = {**base_env, **config.env}
    process, port = start_server(env, tmp / "daphne.log")
    results = []
    external_layer = external_counters = None
    try:
        fleet = Fleet(f"http://127.0.0.1:{port}", base_env["VX11_TOKEN"], args.clients)
        t = time.perf_counter()
        await fleet.open()
        stats = await fleet.get("/__bench/stats")
        log(
            f"[{config.name}] {args.clients} clients connected in {time.perf_counter() - t:.1f} s "
            f"({stats['layer']}, capacity {stats['capacity']})"
        )
        if any(run.publisher == "bench" for run in config.runs):
            from channels_redis.core import RedisChannelLayer

            external_counters = bench_counters()
            external_layer = RedisChannelLayer(hosts=[args.redis_url], capacity=config.redis_capacity, expiry=60)
        for index, spec in enumerate(config.runs):
            await asyncio.sleep(1.0)  # settle
            external = spec.publisher == "bench"
            result = await one_run(
                fleet,
                config.name,
                spec.name,
                spec.publisher,
                spec.events,
                spec.interval,
                cursor=(index + 1) * 10_000_000,
                external_layer=external_layer if external else None,
                external_counters=external_counters if external else None,
            )
            log(
                f"[{config.name}] {spec.name:<14} pub={spec.publisher:<6} "
                f"delivered {result.delivered:>7}/{result.expected} "
                f"min/client {result.min_per_client:>5} p50 {result.p50:8.1f} ms p99 {result.p99:8.1f} ms "
                f"drain {result.drain_s:6.2f} s server CPU {result.server_cpu_s:5.2f} s drops {result.drops}"
            )
            results.append(result)
        await fleet.close()
        if external_layer is not None:
            await external_layer.close_pools()
    finally:
        stop_server(process)
    return results


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


def print_table(results: list[Result]) -> None:
    header = (
        "layer / config",
        "run",
        "pub",
        "delivered",
        "of",
        "min/client",
        "dup",
        "p50 ms",
        "p99 ms",
        "max ms",
        "send s",
        "drain s",
        "frames/s",
        "srv CPU s",
        "us/frame",
        "cli CPU s",
        "drops (where)",
    )
    rows = []
    for r in results:
        where = ", ".join(f"{k}={v:,}" for k, v in r.drops.items() if v) or "0"
        rate = r.delivered / r.drain_s if r.drain_s and r.drain_s == r.drain_s else float("nan")
        per_frame = 1e6 * r.server_cpu_s / r.delivered if r.delivered else float("nan")
        rows.append(
            (
                r.config,
                r.run,
                r.publisher,
                f"{r.delivered:,}",
                f"{r.expected:,}",
                str(r.min_per_client),
                str(r.duplicates),
                fmt(r.p50),
                fmt(r.p99),
                fmt(r.max),
                fmt(r.send_s, 2),
                fmt(r.drain_s, 2),
                fmt(rate, 0),
                fmt(r.server_cpu_s, 2),
                fmt(per_frame, 0),
                fmt(r.client_cpu_s, 2),
                where,
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*header).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row).rstrip())


def print_goals(results: list[Result], run_names: list[str]) -> None:
    def find(config, run, publisher="server"):
        return next((r for r in results if r.config == config and r.run == run and r.publisher == publisher), None)

    def ratio(a, b):
        return a.p99 / b.p99 if a and b and b.p99 else float("nan")

    print()
    print(
        "Goals: Redis (capacity 5000, publisher inside daphne) delivers all; "
        f"p99 <= {P99_RATIO_GOAL:g}x the in-memory p99 "
        f"and <= {P99_GOAL_MS:g} ms."
    )
    print(
        f"Baseline: {BASELINE} (lossless, same capacity as Redis); "
        f"the app's own in-memory config ({MEMORY_APP}) drops, so"
    )
    print("its p99 covers only the messages it kept and is shown for reference.")
    for run in run_names:
        redis_r, base, app = find(REDIS, run), find(BASELINE, run), find(MEMORY_APP, run)
        if not redis_r:
            continue
        ok_all = redis_r.delivered == redis_r.expected
        x = ratio(redis_r, base)
        print(
            f"  {run:<14} delivered {redis_r.delivered:,}/{redis_r.expected:,} (min {redis_r.min_per_client}/client): "
            f"{'MET' if ok_all else 'NOT MET'}"
        )
        print(
            f"  {run:<14} p99 {fmt(redis_r.p99)} ms vs {fmt(base.p99) if base else '-'} ms = {fmt(x, 2)}x: "
            f"{'MET' if x <= P99_RATIO_GOAL else 'NOT MET'}; "
            f"<= {P99_GOAL_MS:g} ms: {'MET' if redis_r.p99 <= P99_GOAL_MS else 'NOT MET'}"
            + (
                f"   (vs {MEMORY_APP}: {fmt(ratio(redis_r, app), 2)}x, which delivered {app.delivered:,})"
                if app
                else ""
            )
        )
        ext = find(REDIS, run, "bench")
        if ext:
            print(
                f"  {run:<14} publisher outside daphne (as publish() from a Celery worker): "
                f"delivered {ext.delivered:,}, "
                f"p99 {fmt(ext.p99)} ms = {fmt(ratio(ext, base), 2)}x the baseline"
            )
    for r in results:
        if r.config == REDIS_SMALL:
            print(
                f"  capacity 100, {r.run:<14} delivered {r.delivered:,}/{r.expected:,} "
                f"({100 * r.delivered / r.expected:.1f}%), "
                f"min {r.min_per_client}/client; "
                + (", ".join(f"{k}={v:,}" for k, v in r.drops.items() if v) or "no drops")
            )
    for config in (PUBSUB, DIRECT):
        for run in run_names:
            r, redis_r = find(config, run), find(REDIS, run)
            if r and redis_r:
                print(
                    f"  what-if {config:<22} {run:<14} delivered {r.delivered:,}/{r.expected:,}, p99 {fmt(r.p99)} ms "
                    f"({fmt(ratio(r, redis_r), 2)}x {REDIS}), "
                    f"server CPU {fmt(1e6 * r.server_cpu_s / max(r.delivered, 1), 0)} us/frame "
                    f"vs {fmt(1e6 * redis_r.server_cpu_s / max(redis_r.delivered, 1), 0)}"
                )


REDIS, REDIS_SMALL = "redis cap 5000", "redis cap 100"
BASELINE, MEMORY_APP, MEMORY_POLL = "in-memory cap 5000*", "in-memory cap 100", "in-memory app default"
PUBSUB, DIRECT = "redis pubsub*", "redis cap 5000 direct*"


async def main_async(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="vx11-wsfanout-"))
    started = time.perf_counter()
    try:
        token = secrets.token_urlsafe(24)
        drop = (
            "REDIS_URL",
            "VX11_CHANNEL_CAPACITY",
            "VX11_WS_POLL_SECONDS",
            "VX11_TOKEN_FILE",
            "VX11_BENCH_MEMORY_CAPACITY",
        )
        base_env = {k: v for k, v in os.environ.items() if k not in drop}
        base_env.update(
            {
                "VX11_TOKEN": token,
                "VX11_VAR_DIR": str(tmp),
                "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}",
                "DJANGO_SETTINGS_MODULE": "vx11_site.settings",
                "LOG_LEVEL": "WARNING",
            }
        )
        log(f"migrating a throwaway SQLite database in {tmp} ...")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=PROJECT_DIR, env=base_env, check=True
        )
        removed = clean_redis(args.redis_url)
        if removed:
            log(f"removed {removed} stale asgi* keys from {args.redis_url}")

        burst = RunSpec("burst", 0.0, args.events)
        paced = RunSpec(f"paced {args.paced_ms:g}ms", args.paced_ms / 1000, args.events)
        sustained = RunSpec(f"sustained {args.sustained_ms:g}ms", args.sustained_ms / 1000, args.sustained_events)
        main_runs = [burst, paced] + ([sustained] if args.sustained_events else [])
        external = [RunSpec(r.name, r.interval, r.events, "bench") for r in main_runs]
        redis_env = {"REDIS_URL": args.redis_url}
        configs = [
            Config(BASELINE, {"VX11_WS_POLL_SECONDS": "0", "VX11_BENCH_MEMORY_CAPACITY": "5000"}, main_runs),
            Config(MEMORY_APP, {"VX11_WS_POLL_SECONDS": "0"}, main_runs),
            Config(REDIS, {**redis_env, "VX11_CHANNEL_CAPACITY": "5000"}, main_runs + external, redis_capacity=5000),
            Config(REDIS_SMALL, {**redis_env, "VX11_CHANNEL_CAPACITY": "100"}, [burst, paced], redis_capacity=100),
        ]
        if not args.skip_extra:
            configs.insert(2, Config(MEMORY_POLL, {}, [burst]))
        if args.what_if:
            configs += [
                Config(PUBSUB, {**redis_env, "VX11_WS_POLL_SECONDS": "0", "VX11_BENCH_LAYER": "pubsub"}, main_runs),
                Config(
                    DIRECT, {**redis_env, "VX11_CHANNEL_CAPACITY": "5000", "VX11_BENCH_DIRECT_EVENTS": "1"}, main_runs
                ),
            ]
        results = []
        for config in configs:
            results += await run_config(config, args, base_env, tmp)
            if "REDIS_URL" in config.env:
                clean_redis(args.redis_url)
        elapsed = time.perf_counter() - started
        print()
        print(
            f"WebSocket fan-out: {args.clients} clients (one session id each) in group {GROUP}; "
            "one daphne process per configuration;"
        )
        print(
            "latency = client receive time - send time embedded in the event "
            "(publisher inside daphne unless pub=bench)."
        )
        print(
            f"  {BASELINE:<22} InMemoryChannelLayer, capacity 5000 set by this bench in its daphne child (*), "
            "VX11_WS_POLL_SECONDS=0"
        )
        print(
            f"  {MEMORY_APP:<22} InMemoryChannelLayer as settings.py builds it (no CONFIG: capacity 100), "
            "VX11_WS_POLL_SECONDS=0"
        )
        if not args.skip_extra:
            print(
                f"  {MEMORY_POLL:<22} as {MEMORY_APP}, "
                "with the app's default DB poll for the in-memory layer (1 s per client)"
            )
        print(f"  {REDIS:<22} RedisChannelLayer, VX11_CHANNEL_CAPACITY=5000 (the project's default), expiry 60")
        print(f"  {REDIS_SMALL:<22} RedisChannelLayer, VX11_CHANNEL_CAPACITY=100 (channels-redis's own default)")
        if args.what_if:
            print(
                f"  {PUBSUB:<22} what-if (*): "
                "channels_redis.pubsub.RedisPubSubChannelLayer set by this bench in its daphne child"
            )
            print(
                f"  {DIRECT:<22} what-if (*): as {REDIS}, "
                "vx11.event handed to the handler without channels' per-message"
            )
            print(f"  {'':<22} close_old_connections thread hop (EventConsumer.dispatch patched in the daphne child)")
        print(
            "  drops: redis_over_capacity = group_send skipped a full channel key "
            "(one key per daphne process, i.e. one event"
        )
        print(
            "         for all its clients); redis_buffer_evicted = receive buffer overflow; "
            "memory_channel_full = ChannelFull per client"
        )
        print()
        print_table(results)
        print_goals(results, [r.name for r in main_runs])
        print()
        print(
            f"run time {elapsed:.1f} s; CPUs {os.cpu_count()}; "
            f"RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"
        )
    finally:
        try:
            clean_redis(args.redis_url)
        except Exception:  # noqa: BLE001  (Redis down: nothing to clean)
            pass
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--events", type=int, default=1000, help="events of the burst and paced runs (default 1000)")
    parser.add_argument("--paced-ms", type=float, default=1.0, help="interval of the paced run, ms (default 1)")
    parser.add_argument(
        "--sustained-ms",
        type=float,
        default=100.0,
        help="interval of the sustained run, a rate one daphne process keeps up with, ms (default 100)",
    )
    parser.add_argument(
        "--sustained-events", type=int, default=150, help="events of the sustained run; 0 skips it (default 150)"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument(
        "--skip-extra", action="store_true", help="skip the in-memory burst with the app's default DB poll"
    )
    parser.add_argument(
        "--what-if",
        action="store_true",
        help="also run two candidate fixes, set up in the daphne child only: RedisPubSubChannelLayer, and "
        "vx11.event dispatched without the per-message close_old_connections thread hop",
    )
    parser.add_argument("--keep-tmp", action="store_true")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the daphne child
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    raise_fd_limit()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
