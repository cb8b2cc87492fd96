"""Probe round and fleet API at scale: figures, not tests.

    .venv/bin/python bench/probe_round.py [--endpoints 1000] [--timeout 3] [--hanging 0.2]
                                          [--repeat 3] [--with-httpx] [--skip-api] [--postgres]

Part 1 probes N loopback origins served by a separate process (bench/_servers.py):
  * a mixed round (healthy + hanging ports): wall time / T, when the last healthy result arrived,
    and whether every healthy port is "ok" and every hanging one a timeout;
  * an all-healthy round: apps.fleet.probe.probe_targets against a raw asyncio baseline
    (open_connection + GET + read + status line, asyncio.gather) measured in the same run;
  * optionally httpx.AsyncClient on the mixed round, the reason aiohttp was chosen.
Part 2 serves GET /api/modules and /api/overview through django.test.Client over 1,000 modules
with 1 day and then 30 days of rollups, in a throwaway database (a child process per backend,
because settings read DATABASE_URL once).

Goals are printed next to each figure; nothing here fails on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_BENCH_DB = "vx11_bench"


def setup_django(var_dir: str) -> None:
    os.environ.setdefault("VX11_VAR_DIR", var_dir)  # keep secret_key/static out of the project's var/
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vx11_site.settings")
    sys.path.insert(0, str(PROJECT_DIR))
    import django

    django.setup()


def median(values):
    return statistics.median(values)


def nearest_rank(values, q):
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * q // 100) - 1)]


# ---------------------------------------------------------------------------------------------
# Part 1: the probe round
# ---------------------------------------------------------------------------------------------


def make_targets(ports, timeout):
    from apps.fleet.probe import Target

    return [
        Target(i, f"p{port}", f"http://127.0.0.1:{port}/health", timeout, ("ok",), None)
        for i, (port, _) in enumerate(ports)
    ]


async def timed_probe_round(targets):
    """probe_targets wall time plus, per slug, the moment its result reached on_result."""
    from apps.fleet.probe import probe_targets

    arrivals = {}
    start = time.perf_counter()
    results = await probe_targets(
        targets, on_result=lambda r: arrivals.__setitem__(r.slug, time.perf_counter() - start)
    )
    return time.perf_counter() - start, results, arrivals


async def raw_get(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % port)
    answer = await reader.read()  # the server closes after answering
    writer.close()
    return int(answer.split(b" ", 2)[1])


async def raw_round(ports):
    start = time.perf_counter()
    statuses = await asyncio.gather(*(raw_get(port) for port, _ in ports))
    return time.perf_counter() - start, statuses


async def httpx_round(ports, timeout):
    import httpx

    limits = httpx.Limits(max_connections=2 * len(ports), max_keepalive_connections=2 * len(ports))

    async def one(client, port):
        try:
            response = await client.get(f"http://127.0.0.1:{port}/health")
            return response.status_code == 200 and response.json().get("status") == "ok"
        except httpx.HTTPError:
            return False

    start = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        oks = await asyncio.gather(*(one(client, port) for port, _ in ports))
    return time.perf_counter() - start, sum(oks)


def mixed_round(ports, timeout, repeat):
    """The mixed round `repeat` times: medians of the wall time and of the last healthy arrival."""
    targets = make_targets(ports, timeout)
    hangs = {f"p{port}": hanging for port, hanging in ports}
    walls, healthy_in, checks = [], [], []
    for _ in tqdm(range(repeat), desc="mixed rounds", file=sys.stderr, leave=False):
        wall, results, arrivals = asyncio.run(timed_probe_round(targets))
        walls.append(wall)
        healthy_in.append(max(t for slug, t in arrivals.items() if not hangs[slug]))
        healthy = [r for r in results if not hangs[r.slug]]
        hanging = [r for r in results if hangs[r.slug]]
        checks.append(
            {
                "healthy": len(healthy),
                "healthy_ok": sum(r.outcome == "ok" for r in healthy),
                "healthy_not_ok": sorted({f"{r.outcome}: {r.error}" for r in healthy if r.outcome != "ok"})[:3],
                "hanging": len(hanging),
                "hanging_timeout": sum(r.outcome == "fail" and r.error.startswith("timeout") for r in hanging),
                "hanging_other": sorted(
                    {f"{r.outcome}: {r.error}" for r in hanging if not r.error.startswith("timeout")}
                )[:3],
                "results": len(results),
            }
        )
    return {"wall": median(walls), "walls": walls, "healthy_in": median(healthy_in), "checks": checks}


def healthy_round(ports, timeout, repeat):
    """probe_targets and the raw baseline on all-healthy ports, interleaved, after one warm-up each."""
    targets = make_targets(ports, timeout)
    asyncio.run(timed_probe_round(targets))
    asyncio.run(raw_round(ports))
    probe_walls, raw_walls, probe_ok, raw_ok = [], [], [], []
    for _ in tqdm(range(repeat), desc="all-healthy rounds", file=sys.stderr, leave=False):
        wall, results, _ = asyncio.run(timed_probe_round(targets))
        probe_walls.append(wall)
        probe_ok.append(sum(r.outcome == "ok" for r in results))
        wall, statuses = asyncio.run(raw_round(ports))
        raw_walls.append(wall)
        raw_ok.append(sum(s == 200 for s in statuses))
    return {
        "probe": median(probe_walls),
        "raw": median(raw_walls),
        "probe_walls": probe_walls,
        "raw_walls": raw_walls,
        "pair_ratios": [p / r for p, r in zip(probe_walls, raw_walls, strict=True)],
        "probe_ok": min(probe_ok),
        "raw_ok": min(raw_ok),
    }


def run_part1(args):
    from _servers import raise_fd_limit, start_fleet, stop_fleet

    fd_limit = raise_fd_limit()
    print(f"starting {2 * args.endpoints} loopback endpoints in a separate process ...", file=sys.stderr)
    process, (mixed_ports, healthy_ports) = start_fleet([(args.endpoints, args.hanging), (args.endpoints, 0.0)])
    try:
        mixed = mixed_round(mixed_ports, args.timeout, args.repeat)
        healthy = healthy_round(healthy_ports, args.timeout, args.repeat)
        httpx_figure = None
        if args.with_httpx:
            print("httpx.AsyncClient on the mixed round (up to 45 s) ...", file=sys.stderr)
            try:
                wall, ok = asyncio.run(asyncio.wait_for(httpx_round(mixed_ports, args.timeout), 45))
                httpx_figure = {"wall": wall, "ok": ok}
            except TimeoutError:
                httpx_figure = {"wall": None, "ok": None}
    finally:
        stop_fleet(process)
    return {"fd_limit": fd_limit, "mixed": mixed, "healthy": healthy, "httpx": httpx_figure}


# ---------------------------------------------------------------------------------------------
# Part 2: the fleet API at scale (runs in a child process: `--api-worker OUT.json`)
# ---------------------------------------------------------------------------------------------


def create_postgres_db(drop_only=False):
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {POSTGRES_BENCH_DB} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {POSTGRES_BENCH_DB}")


def bulk_insert(make_rows, total, desc, batch=10_000):
    """bulk_create rows from a generator, `batch` at a time, with a progress bar; returns seconds."""
    from itertools import islice

    from apps.fleet.models import Rollup

    rows = make_rows()
    start = time.perf_counter()
    with tqdm(total=total, desc=desc, unit="row", unit_scale=True, file=sys.stderr, leave=False) as bar:
        while chunk := list(islice(rows, batch)):
            Rollup.objects.bulk_create(chunk, batch_size=batch)
            bar.update(len(chunk))
    return time.perf_counter() - start


def rollup_rows(module_ids, period, first, last, newest_end):
    """Rollups for buckets `first`..`last`-1 counted back from newest_end (0 = the newest bucket)."""
    from apps.fleet.models import Rollup

    size = Rollup.SIZES[period]
    per_bucket = 240 if period == "hour" else 5760  # one check every 15 s
    for module_id in module_ids:
        base = 5.0 + module_id % 40
        for n in range(first, last):
            failures = 3 if (module_id + n) % 11 == 0 else 0
            yield Rollup(
                module_id=module_id,
                period=period,
                bucket_start=newest_end - (n + 1) * size,
                count=per_bucket,
                failures=failures,
                latency_samples=per_bucket - failures,
                latency_min=base * 0.5,
                latency_avg=base,
                latency_p95=base * 2.0,
                latency_max=base * 4.0,
            )


def make_modules(count):
    from django.utils import timezone

    from apps.fleet.models import Module

    now = timezone.now()
    states = ["up"] * 8 + ["degraded", "down"]
    Module.objects.bulk_create(
        [
            Module(
                slug=f"bench-{i}",
                name=f"Bench module {i}",
                base_url="http://127.0.0.1:1",
                port=1,  # bulk_create skips Module.save(), which derives the port
                role="benchmark",
                state=states[i % 10],
                state_since=now,
                last_checked_at=now,
                last_outcome="fail" if states[i % 10] == "down" else "ok",
                last_status_code=None if states[i % 10] == "down" else 200,
                last_latency_ms=12.5,
                last_status_value="ok",
                last_error="timeout after 3 s" if states[i % 10] == "down" else "",
            )
            for i in range(count)
        ],
        batch_size=500,
    )


def time_requests(client, path, count):
    for _ in range(3):  # warm-up
        client.get(path)
    times, size = [], 0
    for _ in range(count):
        start = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - start) * 1000.0)
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.content[:200]!r}")
        size = len(response.content)
    return {"p50": median(times), "p95": nearest_rank(times, 95), "bytes": size}


def time_call(fn, times=5):
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return median(samples)


def modules_breakdown(plain_key):
    """Where the time of GET /api/modules goes, step by step, outside the request cycle."""
    from ninja.responses import NinjaJSONEncoder

    from apps.accounts.models import ApiKey
    from apps.fleet.api import ModuleOut
    from apps.fleet.models import Module

    objs = list(Module.objects.all())
    data = [ModuleOut.model_validate(m).model_dump() for m in objs]
    return {
        "auth_ms": time_call(lambda: ApiKey.authenticate(plain_key)),
        "orm_ms": time_call(lambda: list(Module.objects.all())),
        "schema_ms": time_call(lambda: [ModuleOut.model_validate(m).model_dump() for m in objs]),
        "json_ms": time_call(lambda: json.dumps(data, cls=NinjaJSONEncoder)),
        "rows": len(objs),
    }


def measure_stage(client, plain_key, requests):
    from datetime import timedelta

    from django.utils import timezone

    from apps.fleet.models import Rollup

    refresh = [time_call(Rollup.refresh_uptimes, times=1) for _ in range(3)]
    now = timezone.now()
    windows = {
        name: time_call(lambda span=span: Rollup.uptimes_since(now - span), times=3)
        for name, span in (("24h", timedelta(hours=24)), ("7d", timedelta(days=7)), ("30d", timedelta(days=30)))
    }
    return {
        "rollups": Rollup.objects.count(),
        "refresh_ms": median(refresh),
        "uptimes_since_ms": windows,
        "modules": time_requests(client, "/api/modules", requests),
        "modules_all": time_requests(client, "/api/modules?limit=1000", max(10, requests // 4)),
        "overview": time_requests(client, "/api/overview", requests),
        "breakdown": modules_breakdown(plain_key),
    }


def api_worker(args):
    """Child process: throwaway database, 1,000 modules, two history sizes, figures to a JSON file."""
    database_url = os.environ["DATABASE_URL"]
    postgres = database_url.startswith("postgres")
    if postgres:
        create_postgres_db()
    setup_django(os.environ["VX11_VAR_DIR"])

    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from apps.accounts.models import ApiKey
    from apps.fleet.models import Module, Rollup

    out = {"backend": connection.vendor, "history_days": args.history_days, "requests": args.requests}
    try:
        start = time.perf_counter()
        call_command("migrate", verbosity=0)
        out["migrate_s"] = time.perf_counter() - start
        user = User.objects.create_user("bench", password="bench-password-1", is_staff=True)
        plain = ApiKey.issue(user, "bench")[1]
        client = Client(headers={"X-API-Key": plain})

        make_modules(args.api_modules)
        module_ids = list(Module.objects.values_list("id", flat=True))
        out["modules"] = len(module_ids)
        now = timezone.now()
        hour_end = Rollup.floor(now, "hour")
        day_end = Rollup.floor(now, "day")

        # (a) one day of hourly rollups per module
        out["insert_1d_s"] = bulk_insert(
            lambda: rollup_rows(module_ids, "hour", 0, 24, hour_end), 24 * len(module_ids), "1 day hourly rollups"
        )
        out["day1"] = measure_stage(client, plain, args.requests)

        # (b) the rest of the history: hourly back to `history_days`, plus daily rollups
        days = args.history_days
        hourly_rest = (24 * days - 24) * len(module_ids)
        out["insert_hourly_s"] = bulk_insert(
            lambda: rollup_rows(module_ids, "hour", 24, 24 * days, hour_end), hourly_rest, f"{days} days hourly rollups"
        )
        out["insert_daily_s"] = bulk_insert(
            lambda: rollup_rows(module_ids, "day", 0, days, day_end),
            days * len(module_ids),
            f"{days} days daily rollups",
        )
        if postgres:
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        out["dayN"] = measure_stage(client, plain, args.requests)
    finally:
        from django.db import connections

        connections.close_all()
        if postgres:
            create_postgres_db(drop_only=True)
    Path(args.api_worker).write_text(json.dumps(out))


def run_part2(args, backend, tmp):
    """Run api_worker in a child process with its own DATABASE_URL; return its figures."""
    var_dir = Path(tmp) / f"api-{backend}"
    var_dir.mkdir()
    if backend == "sqlite":
        database_url = f"sqlite:///{var_dir / 'bench.sqlite3'}"
    else:
        database_url = f"postgres://postgres@127.0.0.1:5432/{POSTGRES_BENCH_DB}"
    out = var_dir / "figures.json"
    env = {**os.environ, "DATABASE_URL": database_url, "VX11_VAR_DIR": str(var_dir), "DEBUG": "0"}
    command = [
        sys.executable,
        __file__,
        "--api-worker",
        str(out),
        "--requests",
        str(args.requests),
        "--history-days",
        str(args.history_days),
        "--api-modules",
        str(args.api_modules),
    ]
    print(f"fleet API on {backend} ({database_url}) ...", file=sys.stderr)
    subprocess.run(command, env=env, cwd=PROJECT_DIR, check=True)
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------
# The figures table
# ---------------------------------------------------------------------------------------------


def verdict(value, goal):
    return "met" if value <= goal else "MISSED"


def row(label, value, goal="", status=""):
    print(f"  {label:<52} {value:>16}   {goal:<12} {status}")


def print_part1(args, p1):
    mixed, healthy, T = p1["mixed"], p1["healthy"], args.timeout
    n_hang = round(args.endpoints * args.hanging)
    print(
        f"\nPart 1 - probe round: {args.endpoints} loopback origins, T = {T:g} s, "
        f"RLIMIT_NOFILE {p1['fd_limit']}, median of {args.repeat}"
    )
    row("figure", "value", "goal", "")
    print("  " + "-" * 92)
    ratio = mixed["wall"] / T
    row(f"mixed round ({args.endpoints - n_hang} healthy, {n_hang} hanging): wall", f"{mixed['wall']:.3f} s")
    row("  wall / T", f"{ratio:.3f}", "<= 1.17", verdict(ratio, 1.17))
    row("  all healthy results in after", f"{mixed['healthy_in']:.3f} s", "<= 1 s", verdict(mixed["healthy_in"], 1.0))
    for i, c in enumerate(mixed["checks"], 1):
        good = c["healthy_ok"] == c["healthy"] and c["hanging_timeout"] == c["hanging"]
        row(
            f"  round {i}: healthy -> ok / hanging -> fail (timeout)",
            f"{c['healthy_ok']}/{c['healthy']}  {c['hanging_timeout']}/{c['hanging']}",
            "all",
            "met" if good else "MISSED",
        )
        for problem in c["healthy_not_ok"] + c["hanging_other"]:
            print(f"      e.g. {problem}")
    ratio = healthy["probe"] / healthy["raw"]
    row(f"all-healthy round ({args.endpoints}): probe_targets (aiohttp)", f"{healthy['probe']:.3f} s")
    row("  raw asyncio baseline (open_connection + gather)", f"{healthy['raw']:.3f} s")
    row("  ratio probe_targets / baseline", f"{ratio:.2f}x", "<= 2x", verdict(ratio, 2.0))
    row("  ok answers (probe / baseline, worst round)", f"{healthy['probe_ok']} / {healthy['raw_ok']}")
    print(
        f"      runs: probe {', '.join(f'{w:.3f}' for w in healthy['probe_walls'])} s; "
        f"baseline {', '.join(f'{w:.3f}' for w in healthy['raw_walls'])} s"
    )
    print(
        f"      per-run ratios {min(healthy['pair_ratios']):.2f}x .. {max(healthy['pair_ratios']):.2f}x "
        "(client and server share the CPUs: read the spread as noise)"
    )
    if p1["httpx"] is None:
        row("httpx.AsyncClient, mixed round", "not run", "(--with-httpx)")
    elif p1["httpx"]["wall"] is None:
        row("httpx.AsyncClient, mixed round", "> 45 s", "for the record")
    else:
        h = p1["httpx"]
        row("httpx.AsyncClient, mixed round", f"{h['wall']:.3f} s", "for the record")
        row("  httpx wall / T;  ok answers", f"{h['wall'] / T:.2f}; {h['ok']}/{args.endpoints - n_hang}")


def print_part2(f):
    a, b = f["day1"], f["dayN"]
    days = f["history_days"]
    print(
        f"\nPart 2 - fleet API at scale: {f['backend']}, {f['modules']} modules, "
        f"{f['requests']} requests per figure (django.test.Client)"
    )
    print(
        f"  set-up: migrate {f['migrate_s']:.1f} s; rollups 1 day hourly {f['insert_1d_s']:.1f} s, "
        f"{days} days hourly {f['insert_hourly_s']:.1f} s, daily {f['insert_daily_s']:.1f} s"
    )
    print(
        f"  {'history':<34} {'rollup rows':>12} {'/api/modules p50/p95':>22} "
        f"{'/api/overview p50/p95':>23} {'refresh_uptimes':>16}"
    )
    print("  " + "-" * 112)
    for label, s in (("(a) 1 day hourly", a), (f"(b) {days} d hourly + {days} d daily", b)):
        m, o = s["modules"], s["overview"]
        print(
            f"  {label:<34} {s['rollups']:>12,} {m['p50']:>10.1f} / {m['p95']:>5.1f} ms "
            f"{o['p50']:>11.1f} / {o['p95']:>5.1f} ms {s['refresh_ms']:>10.0f} ms"
        )
    row("/api/modules p50 (b)", f"{b['modules']['p50']:.1f} ms", "<= 20 ms", verdict(b["modules"]["p50"], 20))
    row("/api/overview p50 (b)", f"{b['overview']['p50']:.1f} ms", "<= 20 ms", verdict(b["overview"]["p50"], 20))
    row(
        "/api/modules?limit=1000 p50 (a), (b)",
        f"{a['modules_all']['p50']:.1f} ms, {b['modules_all']['p50']:.1f} ms",
        "for the record (full objects, one page)",
    )
    for name in ("modules", "overview"):
        ratio = b[name]["p50"] / a[name]["p50"]
        row(f"/api/{name} p50 growth (b)/(a)", f"{ratio:.2f}x", "~1.0 (flat)", "met" if ratio <= 1.25 else "MISSED")
    ratio = b["refresh_ms"] / a["refresh_ms"]
    row("Rollup.refresh_uptimes (b)/(a)", f"{ratio:.2f}x", "for the record")
    for label, s in (("(a)", a), ("(b)", b)):
        w = s["uptimes_since_ms"]
        print(
            f"      refresh_uptimes {label}: uptimes_since 24h {w['24h']:.0f} ms, 7d {w['7d']:.0f} ms, "
            f"30d {w['30d']:.0f} ms; "
            f"the rest (Module fetch + bulk_update of 3 fields) ~{s['refresh_ms'] - sum(w.values()):.0f} ms"
        )
    row(
        "response size /api/modules, /api/overview",
        f"{b['modules']['bytes'] / 1024:.0f} KB, {b['overview']['bytes'] / 1024:.0f} KB",
    )
    k = b["breakdown"]
    print(f"  where /api/modules time goes at (b), outside the request cycle, {k['rows']} rows (medians of 5):")
    print(
        f"      API-key auth (SELECT + UPDATE last_used_at) {k['auth_ms']:.1f} ms | ORM fetch {k['orm_ms']:.1f} ms | "
        f"ModuleOut validate+dump {k['schema_ms']:.1f} ms | json.dumps {k['json_ms']:.1f} ms"
    )


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", type=int, default=1000, help="loopback origins per round (default 1000)")
    parser.add_argument("--timeout", type=float, default=3.0, help="probe timeout T in seconds (default 3)")
    parser.add_argument(
        "--hanging", type=float, default=0.2, help="fraction of hanging endpoints in the mixed round (default 0.2)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="rounds per figure, median reported (default 5)")
    parser.add_argument(
        "--with-httpx", action="store_true", help="also time httpx.AsyncClient on the mixed round (up to 45 s)"
    )
    parser.add_argument("--skip-probe", action="store_true", help="skip part 1")
    parser.add_argument("--skip-api", action="store_true", help="skip part 2 (fleet API at scale)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also run part 2 on PostgreSQL at 127.0.0.1:5432 (database vx11_bench, dropped after)",
    )
    parser.add_argument("--requests", type=int, default=40, help="requests per API figure (default 40)")
    parser.add_argument(
        "--history-days", type=int, default=30, help="history length of part 2's stage (b) (default 30)"
    )
    parser.add_argument("--api-modules", type=int, default=1000, help="bench modules created in part 2 (default 1000)")
    parser.add_argument("--api-worker", metavar="OUT.json", help=argparse.SUPPRESS)
    return parser.parse_args()


def main():
    args = parse_args()
    if args.api_worker:
        api_worker(args)
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vx11-bench-") as tmp:
        sections = []
        if not args.skip_probe:
            setup_django(tmp)  # probe_targets reads settings and timezone; no database is touched
            p1 = run_part1(args)
            sections.append(lambda: print_part1(args, p1))
        if not args.skip_api:
            for backend in ["sqlite"] + (["postgres"] if args.postgres else []):
                figures = run_part2(args, backend, tmp)
                sections.append(lambda f=figures: print_part2(f))
        print(f"VX11 bench/probe_round.py  (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
        for section in sections:
            section()
    print(f"\ntotal run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
