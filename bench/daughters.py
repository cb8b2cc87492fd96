"""Daughters at scale: figures, not tests.

    .venv/bin/python bench/daughters.py [--count 10000] [--reap-rows 100000] [--workers 2] [--threads 4]

On PostgreSQL (database vx11_bench_daughters on 127.0.0.1:5432, created and dropped by the run) and
Redis (db 12, a private queue), with two real `celery worker` processes:

  1. baseline: the same workers run `count` no-op Celery tasks (celery.accumulate): Celery's own rate;
  2. the spawn rate of `singles` one-daughter tasks spawned one by one (as the API does); then `count`
     short daughters (kind sleep, 0 s, in tasks of 100) run until every one has finished: daughters/s
     end to end and its ratio to the baseline;
  3. the reaper over `reap-rows` daughters (40 % past their TTL, 30 % stale with retries left, 10 %
     stale with none, 20 % healthy): one Daughter.reap() sweep, against a per-row loop (load, decide,
     save) measured on a 5,000-row sample in the same run, scaled per row.

Goals are printed next to each figure; nothing here fails on timing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from tqdm import tqdm

PROJECT_DIR = Path(__file__).resolve().parents[1]
DB = "vx11_bench_daughters"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/12"


def recreate_db(drop_only=False):
    import psycopg

    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {DB}")


def start_workers(n, threads, env, log_dir):
    procs = []
    for i in range(n):
        log = (log_dir / f"worker{i}.log").open("w")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "vx11_site",
                    "worker",
                    "-P",
                    "threads",
                    "-c",
                    str(threads),
                    "-l",
                    "WARNING",
                    "-n",
                    f"bench{i}@%h",
                ],
                cwd=PROJECT_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def stop_workers(procs):
    import signal

    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def wait_until(count_done, total, desc):
    with tqdm(total=total, desc=desc, unit="task", file=sys.stderr, leave=False) as bar:
        done = 0
        while done < total:
            time.sleep(0.2)
            now = count_done()
            bar.update(now - done)
            done = now


def baseline(app, count):
    start = time.perf_counter()
    results = [
        app.send_task("celery.accumulate", args=(i,))
        for i in tqdm(range(count), desc="baseline send", file=sys.stderr, leave=False)
    ]
    for r in tqdm(results, desc="baseline wait", file=sys.stderr, leave=False):
        r.get(timeout=300)
    return count / (time.perf_counter() - start)


def daughters_run(count, singles):
    """`singles` API-shaped spawns (one daughter each) for the spawn rate, then `count` daughters
    spawned as tasks of 100 so the workers, not the spawning, set the pace."""
    from apps.daughters.models import Daughter, DaughterTask

    start = time.perf_counter()
    for _ in tqdm(range(singles), desc="single spawns", file=sys.stderr, leave=False):
        DaughterTask.spawn("sleep", {"seconds": 0}, source="madre")
    spawn_per_s = singles / (time.perf_counter() - start)
    wait_until(lambda: Daughter.objects.filter(status="finished").count(), singles, "single spawns finished")

    start = time.perf_counter()
    for lo in range(0, count, 100):
        DaughterTask.spawn("sleep", {"seconds": 0}, source="madre", count=min(100, count - lo))
    wait_until(lambda: Daughter.objects.filter(status="finished").count() - singles, count, "daughters finished")
    end = time.perf_counter()
    assert Daughter.objects.exclude(status="finished").count() == 0
    return {"spawn_per_s": spawn_per_s, "e2e_per_s": count / (end - start), "seconds": end - start}


def make_rows(total):
    """`total` running daughters under total/100 tasks, in the four groups of the module docstring."""
    from django.utils import timezone

    from apps.daughters.models import Daughter, DaughterTask

    now = timezone.now()
    Daughter.objects.all().delete()
    DaughterTask.objects.all().delete()
    tasks = DaughterTask.objects.bulk_create(
        DaughterTask(priority=2, max_retries=2 if i % 8 else 0, status="running") for i in range(max(1, total // 100))
    )

    # i % 10: 0-3 past TTL, 4-6 stale (retries left unless its task has none), 7 stale, 8-9 healthy
    def row(i):
        task = tasks[i % len(tasks)]
        group = i % 10
        started = now - timedelta(seconds=400 if group < 4 else 90)
        heartbeat = now - timedelta(seconds=1 if group < 4 or group >= 8 else 120)
        level = 2 if group == 7 else 0
        return Daughter(
            task=task,
            name=f"d{i}",
            kind="sleep",
            params={"seconds": 0},
            status="running",
            priority=2,
            ttl_seconds=300,
            max_retries=task.max_retries,
            dispatched_at=started,
            started_at=started,
            expires_at=started + timedelta(seconds=300),
            last_heartbeat_at=heartbeat,
            mutation_level=level,
        )

    batch = 10_000
    with tqdm(total=total, desc="insert daughters", unit="row", unit_scale=True, file=sys.stderr, leave=False) as bar:
        for lo in range(0, total, batch):
            Daughter.objects.bulk_create([row(i) for i in range(lo, min(total, lo + batch))], batch_size=batch)
            bar.update(min(batch, total - lo))


def naive_reap(limit):
    """What a per-row reaper does: load every live daughter, decide in Python, save each one."""
    from django.conf import settings
    from django.utils import timezone

    from apps.daughters.models import Daughter

    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.VX11_DAUGHTER_STALE_SECONDS)
    start = time.perf_counter()
    rows = list(Daughter.objects.filter(status="running")[:limit])
    for d in rows:
        if d.expires_at < now:
            d.status, d.ended_at = "expired", now
        elif d.last_heartbeat_at < stale_before:
            if d.mutation_level < d.max_retries:
                d.status, d.mutation_level, d.dispatched_at = "mutated", d.mutation_level + 1, None
            else:
                d.status, d.ended_at = "failed", now
        else:
            continue
        d.save(update_fields=["status", "ended_at", "mutation_level", "dispatched_at"])
    return (time.perf_counter() - start) / len(rows)


def reaper(total):
    from apps.daughters.models import Daughter

    make_rows(total)
    start = time.perf_counter()
    result = Daughter.reap()
    set_based = time.perf_counter() - start
    make_rows(5000)
    per_row = naive_reap(5000)
    return {"seconds": set_based, "result": result, "naive_per_row_s": per_row, "naive_scaled_s": per_row * total}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--singles", type=int, default=1000, help="one-daughter spawns timed for the spawn rate")
    parser.add_argument("--reap-rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    args = parser.parse_args()

    recreate_db()
    tmp = Path(tempfile.mkdtemp(prefix="vx11-bench-daughters-"))
    queue = f"bench-daughters-{os.getpid()}"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}",
        "REDIS_URL": REDIS,
        "VX11_VAR_DIR": str(tmp),
        "VX11_CELERY_QUEUE": queue,
        "DJANGO_SETTINGS_MODULE": "vx11_site.settings",
        "DEBUG": "0",
        "VX11_DAUGHTER_MAX_RUNNING": str(args.workers * args.threads),
    }
    os.environ.update(env)
    sys.path.insert(0, str(PROJECT_DIR))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from vx11_site.celery import app

    workers = start_workers(args.workers, args.threads, env, tmp)
    try:
        time.sleep(3)
        base = baseline(app, args.count)
        run = daughters_run(args.count, args.singles)
    finally:
        stop_workers(workers)
    reap = reaper(args.reap_rows)
    import redis

    redis.Redis.from_url(REDIS).flushdb()
    from django.db import connections

    connections.close_all()
    recreate_db(drop_only=True)

    print(
        f"\nDaughters on {args.workers} workers x {args.threads} threads, PostgreSQL + Redis, "
        f"cap {args.workers * args.threads} running"
    )
    print("| figure | result | goal |\n|---|---|---|")
    print(f"| baseline: no-op Celery tasks | {base:,.0f} tasks/s | |")
    print(
        f"| spawn ({args.singles:,} one-daughter tasks, one by one, workers running) "
        f"| {run['spawn_per_s']:,.0f} spawns/s | |"
    )
    print(
        f"| spawn, run and finish {args.count:,} daughters "
        f"| {run['seconds']:.1f} s = {run['e2e_per_s']:,.0f} daughters/s "
        f"({run['e2e_per_s'] / base:.2f}x the no-op baseline) | none set; all {args.count:,} finished |"
    )
    r = reap["result"]
    print(
        f"| reaper, one sweep over {args.reap_rows:,} rows "
        f"| {reap['seconds']:.2f} s (expired {r['expired']:,}, retried {r['retried']:,}, "
        f"failed {r['failed']:,}) | set-based |"
    )
    print(
        f"| per-row reaper, scaled to {args.reap_rows:,} rows | {reap['naive_scaled_s']:.1f} s "
        f"({reap['naive_scaled_s'] / reap['seconds']:.1f}x the sweep) | |"
    )


if __name__ == "__main__":
    main()
