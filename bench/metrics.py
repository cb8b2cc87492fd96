"""Issue 14's benchmark: a scorecard snapshot, the scorecard page and /metrics at fleet scale. Figures, not tests.

    .venv/bin/python bench/metrics.py [--modules 1000] [--days 30] [--flows 50] [--raw-minutes 60] [--postgres]

One process, a throwaway database (a SQLite file in a temp dir, or with --postgres the database
`vx11_bench_metrics` on 127.0.0.1:5432 as user postgres, created and dropped) and VX11_VAR_DIR in the temp dir
(the snapshots' evidence bags go there). Three stages, each measured the same way:

  A. 10 modules (the ten reference modules) with 1 day of history;
  B. `--modules` modules with 1 day of history;
  C. `--modules` modules with `--days` days of history.

History per module and day: 24 hourly and 1 daily rollup and 2 state changes; per flow and day: a run every
15 minutes; per day: a scorecard every hour (with its metric rows). Raw checks: the last `--raw-minutes` minutes,
one round every 15 s (raw checks are kept for VX11_RAW_RETENTION_HOURS only, so they do not grow with days).

In each stage: apps.metrics.snapshot.take_snapshot (wall time, median of 3, and its queries), the admin's
scorecard page (admin:metrics_scorecard_page) against the admin index in the same stage (server time through
the Django test client, median of 7, and queries), and GET /metrics. The goal is queries independent of module
count (A vs B) and of history length (B vs C); the table prints the ratios. Nothing fails on timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_BENCH_DB = "vx11_bench_metrics"
BATCH = 5000


def postgres_db(drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {POSTGRES_BENCH_DB} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {POSTGRES_BENCH_DB}")


def setup_django(var_dir: Path, postgres: bool) -> None:
    # settings read these once, at start-up: set before django.setup()
    os.environ["VX11_VAR_DIR"] = str(var_dir)
    os.environ["DEBUG"] = "0"
    os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1,localhost"
    os.environ.pop("VX11_METRICS_KEY", None)  # /metrics open to the test client (loopback)
    if postgres:
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{POSTGRES_BENCH_DB}"
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{var_dir / 'bench.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "vx11_site.settings"
    sys.path.insert(0, str(PROJECT_DIR))
    import django

    django.setup()


def bulk(model, rows, batch: int = BATCH) -> int:
    """bulk_create an iterable `batch` rows at a time; returns how many."""
    from itertools import islice

    rows = iter(rows)
    total = 0
    while chunk := list(islice(rows, batch)):
        model.objects.bulk_create(chunk, batch_size=batch)
        total += len(chunk)
    return total


def add_modules(count: int, now) -> None:
    """Modules beyond the ten reference ones, states spread like a real fleet's."""
    from apps.fleet.models import Module

    have = Module.objects.count()
    states = ["up"] * 8 + ["degraded", "down"]
    bulk(
        Module,
        (
            Module(
                slug=f"bench-{i}",
                name=f"Bench module {i}",
                base_url="http://127.0.0.1:1",
                port=1,  # bulk_create skips Module.save(), which derives the port
                state=states[i % 10],
                state_since=now,
                last_checked_at=now - timedelta(seconds=i % 3),
                last_outcome="fail" if states[i % 10] == "down" else "ok",
                last_latency_ms=5.0 + i % 40,
                uptime_24h=99.0,
            )
            for i in range(have, count)
        ),
    )
    # the reference modules are up, freshly checked: health_core_pct has a value
    Module.objects.filter(slug__in=["madre", "tentaculo_link", "switch", "spawner", "hormiguero"]).update(
        state="up", state_since=now, last_checked_at=now, last_outcome="ok", last_latency_ms=8.0
    )


def add_flows(count: int) -> None:
    from apps.flows.models import Flow

    have = Flow.objects.count()
    bulk(Flow, (Flow(name=f"F{i}", title=f"bench flow {i}") for i in range(have, count)))


def module_history(module_ids, first_day: int, last_day: int, now) -> int:
    """Rollups and state changes for days first_day..last_day-1 back from now (0 = the last 24 h)."""
    from apps.fleet.models import Rollup, StateChange

    hour_end = Rollup.floor(now, "hour")
    day_end = Rollup.floor(now, "day")

    def rollups():
        for module_id in module_ids:
            for hour in range(24 * first_day, 24 * last_day):
                yield Rollup(
                    module_id=module_id,
                    period="hour",
                    bucket_start=hour_end - (hour + 1) * timedelta(hours=1),
                    count=240,
                    failures=3 if (module_id + hour) % 11 == 0 else 0,
                    latency_samples=240,
                    latency_min=2.0,
                    latency_avg=8.0,
                    latency_p95=16.0,
                    latency_max=40.0,
                )
            for day in range(first_day, last_day):
                yield Rollup(
                    module_id=module_id,
                    period="day",
                    bucket_start=day_end - (day + 1) * timedelta(days=1),
                    count=5760,
                    failures=6,
                    latency_samples=5760,
                    latency_min=2.0,
                    latency_avg=8.0,
                    latency_p95=16.0,
                    latency_max=40.0,
                )

    def changes():
        for module_id in module_ids:
            for day in range(first_day, last_day):
                at = now - timedelta(days=day, hours=3)
                yield StateChange(module_id=module_id, at=at, from_state="up", to_state="down", reason="bench")
                yield StateChange(
                    module_id=module_id, at=at + timedelta(minutes=2), from_state="down", to_state="up", reason="bench"
                )

    return bulk(Rollup, rollups()) + bulk(StateChange, changes())


def raw_checks(module_ids, minutes: int, now) -> int:
    from apps.fleet.models import HealthCheck

    rounds = minutes * 4
    return bulk(
        HealthCheck,
        (
            HealthCheck(module_id=m, checked_at=now - timedelta(seconds=15 * r), outcome="ok", latency_ms=8.0)
            for r in range(rounds)
            for m in module_ids
        ),
    )


def flow_history(first_day: int, last_day: int, now) -> int:
    from apps.flows.models import Flow, FlowRun

    flow_ids = list(Flow.objects.values_list("id", flat=True))

    def runs():
        for flow_id in flow_ids:
            for n in range(96 * first_day, 96 * last_day):
                started = now - timedelta(minutes=15 * n + 1)
                passed = (flow_id + n) % 7 != 0
                yield FlowRun(
                    flow_id=flow_id,
                    status="passed" if passed else "failed",
                    trigger="beat",
                    started_at=started,
                    finished_at=started + timedelta(seconds=2),
                    duration_ms=2000.0,
                )

    return bulk(FlowRun, runs())


def scorecard_history(first_day: int, last_day: int, now, names: list[str]) -> int:
    """A scorecard every hour with one row per metric (as the hourly schedule would leave)."""
    from apps.metrics.models import MetricSnapshot, Scorecard

    cards = bulk(
        Scorecard,
        (
            Scorecard(generated_at=now - timedelta(hours=h + 1), actor="bench-history", verdict="DEGRADED")
            for h in range(24 * first_day, 24 * last_day)
        ),
    )
    start = now - timedelta(hours=24 * last_day + 1)
    end = now - timedelta(hours=24 * first_day)
    ids = Scorecard.objects.filter(actor="bench-history", generated_at__gte=start, generated_at__lt=end).values_list(
        "id", flat=True
    )
    rows = bulk(
        MetricSnapshot,
        (
            MetricSnapshot(
                scorecard_id=card, name=name, value=None if i % 5 == 0 else 75.0, status="NV" if i % 5 == 0 else "ok"
            )
            for card in ids
            for i, name in enumerate(names)
        ),
    )
    return cards + rows


def median_ms(fn, times: int) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(samples)


def count_queries(fn) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        fn()
    return len(queries)


def get(client, path: str) -> None:
    response = client.get(path)
    if response.status_code != 200:
        raise SystemExit(f"{path} answered {response.status_code}: {response.content[:300]!r}")


def measure(stage: str, client, page_url: str | None) -> dict:
    from apps.fleet.models import Module
    from apps.metrics.snapshot import take_snapshot

    figures = {"stage": stage, "modules": Module.objects.count()}
    take_snapshot(actor="bench")  # warm-up: imports, template and query caches
    figures["snapshot_queries"] = count_queries(lambda: take_snapshot(actor="bench"))
    figures["snapshot_ms"] = median_ms(lambda: take_snapshot(actor="bench"), 3)
    get(client, "/admin/")
    figures["index_ms"] = median_ms(lambda: get(client, "/admin/"), 7)
    figures["index_queries"] = count_queries(lambda: get(client, "/admin/"))
    if page_url:
        get(client, page_url)
        figures["page_ms"] = median_ms(lambda: get(client, page_url), 7)
        figures["page_queries"] = count_queries(lambda: get(client, page_url))
    get(client, "/metrics")
    figures["metrics_ms"] = median_ms(lambda: get(client, "/metrics"), 7)
    figures["metrics_queries"] = count_queries(lambda: get(client, "/metrics"))
    print(f"  measured {stage}: {figures}", file=sys.stderr)
    return figures


def scorecard_page_url() -> str | None:
    """The scorecard helper's page, if it is registered (apps/metrics/admin.py)."""
    from django.urls import NoReverseMatch, reverse

    try:
        return reverse("admin:metrics_scorecard_page")
    except NoReverseMatch:
        return None


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def print_table(stages: list[dict], page_url: str | None, backend: str, args) -> None:
    print(
        f"\nissue 14 benchmark on {backend}: {args.flows} flows, raw checks {args.raw_minutes} min, "
        f"history 1 / {args.days} days"
    )
    header = f"  {'figure':<34}" + "".join(f"{s['stage']:>22}" for s in stages)
    print(header)
    keys = [
        ("modules", "modules"),
        ("take_snapshot wall (ms)", "snapshot_ms"),
        ("take_snapshot queries", "snapshot_queries"),
    ]
    if page_url:
        keys += [("scorecard page (ms)", "page_ms"), ("scorecard page queries", "page_queries")]
    keys += [
        ("admin index (ms)", "index_ms"),
        ("admin index queries", "index_queries"),
        ("/metrics (ms)", "metrics_ms"),
        ("/metrics queries", "metrics_queries"),
    ]
    for label, key in keys:
        cells = "".join(f"{s[key]:>22.1f}" if isinstance(s[key], float) else f"{s[key]:>22}" for s in stages)
        print(f"  {label:<34}{cells}")
    a, b, c = stages
    print("\n  ratios (goal for queries: 1.00x)")
    for label, key in [("take_snapshot", "snapshot"), ("/metrics", "metrics")] + (
        [("scorecard page", "page")] if page_url else []
    ):
        q = key + "_queries"
        ms = key + "_ms"
        queries = f"B/A {ratio(b[q], a[q]):>7}  C/B {ratio(c[q], b[q]):>7}"
        times = f"B/A {ratio(b[ms], a[ms]):>7}  C/B {ratio(c[ms], b[ms]):>7}"
        print(f"  {label:<20} queries {queries}   time {times}")
    if page_url:
        print(
            "  scorecard page / admin index, same stage: "
            + ", ".join(f"{s['stage']} {ratio(s['page_ms'], s['index_ms'])}" for s in stages)
        )
    else:
        print(
            "  the scorecard page is not registered (admin:metrics_scorecard_page): "
            "only /metrics and the index measured"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--flows", type=int, default=50)
    parser.add_argument("--raw-minutes", type=int, default=60)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vx11-bench-metrics-"))
    if args.postgres:
        postgres_db()
    try:
        setup_django(tmp, args.postgres)
        from django.contrib.auth.models import User
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client
        from django.utils import timezone

        from apps.fleet.models import Module
        from apps.metrics.definitions import METRICS

        call_command("migrate", verbosity=0)
        user = User.objects.create_superuser("bench", password="bench-password-1")
        client = Client()
        client.force_login(user)
        page_url = scorecard_page_url()
        names = [d.name for d in METRICS]
        now = timezone.now()

        def analyze():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("ANALYZE")

        add_flows(args.flows)
        add_modules(10, now)
        ids = list(Module.objects.values_list("id", flat=True))
        started = time.perf_counter()
        module_history(ids, 0, 1, now)
        raw_checks(ids, args.raw_minutes, now)
        flow_history(0, 1, now)
        scorecard_history(0, 1, now, names)
        analyze()
        stages = [measure("A 10 mod, 1 d", client, page_url)]

        add_modules(args.modules, now)
        new = list(Module.objects.exclude(id__in=ids).values_list("id", flat=True))
        module_history(new, 0, 1, now)
        raw_checks(new, args.raw_minutes, now)
        analyze()
        stages.append(measure(f"B {args.modules} mod, 1 d", client, page_url))

        all_ids = ids + new
        module_history(all_ids, 1, args.days, now)
        flow_history(1, args.days, now)
        scorecard_history(1, args.days, now, names)
        analyze()
        stages.append(measure(f"C {args.modules} mod, {args.days} d", client, page_url))
        print(f"  data built in {time.perf_counter() - started:.0f} s (with the measurements)", file=sys.stderr)
        print_table(stages, page_url, connection.vendor, args)
    finally:
        from django.db import connections

        connections.close_all()
        if args.postgres:
            postgres_db(drop_only=True)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
