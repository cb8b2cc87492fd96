"""Issue 15's benchmark: one full autonomy pipeline run against the demo fleet. Figures, not tests.

    .venv/bin/python bench/pipeline.py [--requests 300] [--runs 3] [--postgres] [--keep] [--timeout 240]

Starts `vx11 demo` (the simulated fleet, a Celery worker, beat and daphne) as a child process from a throwaway
VX11_VAR_DIR (a temp dir: its own SQLite database, evidence root, audit target, managed tree, mirror remote), on
free ports. With --postgres the portal's database is `vx11_bench_pipeline` on 127.0.0.1:5432 as user postgres
(created and dropped) and the broker and channel layer are Redis (--redis-url, flushed before and after).
Phase 3 gets a real test command: a small pytest file in the temp dir, its JUnit report read back by the phase.

Then, with an API key of the demo's admin:
  1. idle: `--requests` sequential GET /api/modules and GET /api/pipeline/runs (alternating, one keep-alive
     client) -> p50/p95/p99 of each; the same again after the runs (idle, with the runs stored: the list of runs
     is then as long as during the last run, so that baseline's payload matches);
  2. `--runs` times, one after the other: POST /api/pipeline/runs (all seven phases, queued for the worker); while
     it runs, the same requests in a loop, and GET /api/pipeline/runs/{id} every 0.5 s from a second client (a run
     still going after --timeout seconds is cancelled). A run takes seconds on the demo: one run gives the p99 of
     ~150 requests, three give a steadier one;
  3. the table: per phase its status, wall time in each run (the run's own record), the API requests made while it
     ran and their p99, its summary; each run's total, queue wait and hand-offs between phases; the real VX11
     pipeline's 1 h 38 min beside ours; the API's p50/p95/p99 idle against during the runs, and p99 during / idle
     against the goal <= 2x.

The demo is stopped with SIGTERM to its process group at the end (and on any error); a process still running
with the temp VX11_VAR_DIR in its environment afterwards is reported and ended by its pid. Nothing fails on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

PROJECT_DIR = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_BENCH_DB = "vx11_bench_pipeline"
REDIS_DEFAULT = "redis://127.0.0.1:6379/14"  # 12: bench/daughters.py, 13: bench/ws_fanout.py, 15: the tests
REAL_PIPELINE_SECONDS = 98 * 60  # the real VX11 pipeline's full run: 1 h 38 min
SIM_PORTS = list(range(8000, 8012)) + [8099]  # the reference modules' ports and the simulator's control port
PORTAL_PORT = 8090  # + the offset: daphne's port, beside the fleet's
ENDPOINTS = ("/api/modules", "/api/pipeline/runs")
POLL_SECONDS = 0.5
SMOKE_TESTS = '''
"""A small suite for the pipeline's runner phase: some real work, one skip."""

import hashlib
import json

import pytest


@pytest.mark.parametrize("size", [1_000, 10_000, 100_000])
def test_digest_is_stable(size):
    data = bytes(range(256)) * (size // 256 + 1)
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(bytearray(data)).hexdigest()


def test_json_round_trip():
    doc = {"modules": [{"slug": f"m{i}", "up": i % 3 != 0} for i in range(500)]}
    assert json.loads(json.dumps(doc)) == doc


@pytest.mark.skip(reason="shows a skipped test in the report")
def test_skipped():
    raise AssertionError
'''


# --- the demo ----------------------------------------------------------------------------------------------


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_offset() -> int:
    """A --port-offset under which every simulated module's port, the control port and the portal's are free;
    below the ephemeral range (32768 up), where other processes' outgoing connections would take ports."""
    for _ in range(200):
        offset = random.randrange(2000, 24000, 100)
        if all(port_free(port + offset) for port in [*SIM_PORTS, PORTAL_PORT]):
            return offset
    raise SystemExit("no free --port-offset found for the simulated fleet")


def demo_env(var_dir: Path, postgres: bool, redis_url: str) -> dict:
    """A clean environment: no VX11_* setting of the caller's, so every path derives from the temp VX11_VAR_DIR."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VX11_") and k not in ("DATABASE_URL", "REDIS_URL")}
    tests_dir = var_dir / "bench-tests"
    env.update(
        DJANGO_SETTINGS_MODULE="vx11_site.settings",
        DEBUG="0",
        VX11_VAR_DIR=str(var_dir),
        VX11_PIPELINE_TESTS_CWD=str(tests_dir),
        VX11_PIPELINE_TESTS=json.dumps(
            [
                {
                    "name": "bench-smoke",
                    "kind": "unit",
                    "report": "junit",
                    # -p no:django: the worker's DJANGO_SETTINGS_MODULE must not make pytest-django set up the portal
                    "argv": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:django"]
                    + ["--junitxml", "{report}", "test_bench_smoke.py"],
                    "timeout": 120,
                }
            ]
        ),
    )
    if postgres:
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{POSTGRES_BENCH_DB}"
        env["REDIS_URL"] = redis_url
    else:
        env["DATABASE_URL"] = f"sqlite:///{var_dir / 'vx11.sqlite3'}"
    return env


def write_tests(var_dir: Path) -> None:
    folder = var_dir / "bench-tests"
    folder.mkdir()
    (folder / "pytest.ini").write_text("[pytest]\n")  # the temp dir is the rootdir: no project configuration
    (folder / "test_bench_smoke.py").write_text(SMOKE_TESTS.lstrip())


def postgres_db(drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {POSTGRES_BENCH_DB} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {POSTGRES_BENCH_DB}")


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def manage(env: dict, *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"manage.py {args[0]} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def start_demo(env: dict, var_dir: Path, offset: int, port: int) -> subprocess.Popen:
    log = (var_dir / "demo-terminal.log").open("w")
    argv = [sys.executable, "manage.py", "vx11", "demo", "--port-offset", str(offset), "--portal-port", str(port)]
    # its own session: SIGTERM reaches the demo and its worker, beat and daphne as one group
    return subprocess.Popen(
        argv, cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_ready(demo: subprocess.Popen, var_dir: Path, timeout: float = 180) -> None:
    log = var_dir / "demo-terminal.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if demo.poll() is not None:
            raise SystemExit(f"the demo exited (code {demo.returncode}):\n{log.read_text()[-2000:]}")
        if "Ctrl-C stops everything" in log.read_text():
            return
        time.sleep(0.3)
    raise SystemExit(f"the demo did not print its welcome within {timeout:g} s:\n{log.read_text()[-2000:]}")


def api_key(env: dict) -> str:
    code = (
        "from django.contrib.auth import get_user_model; from apps.accounts.models import ApiKey; "
        "print(ApiKey.issue(get_user_model().objects.get(username='admin'), 'bench-pipeline')[1])"
    )
    return manage(env, "shell", "-c", code).strip().splitlines()[-1]


def stop_demo(demo: subprocess.Popen) -> str:
    if demo.poll() is not None:
        return f"the demo had exited (code {demo.returncode})"
    os.killpg(demo.pid, signal.SIGTERM)
    try:
        demo.wait(timeout=60)
        return "stopped with SIGTERM"
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)
        demo.wait(timeout=10)
        return "did not stop within 60 s of SIGTERM: killed"


def leftovers(var_dir: Path) -> list[int]:
    """Our processes still running with the temp VX11_VAR_DIR in their environment (the demo's descendants)."""
    marker = f"VX11_VAR_DIR={var_dir}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone, or not ours
            continue
    return found


def end_leftovers(var_dir: Path) -> str:
    pids = leftovers(var_dir)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    if pids:
        time.sleep(3)
        for pid in leftovers(var_dir):
            os.kill(pid, signal.SIGKILL)
        return f"{len(pids)} process(es) left behind, ended by pid: {pids}"
    return "no process left behind"


# --- the measurement ---------------------------------------------------------------------------------------


class Sample:
    """Sequential requests: (path, wall-clock start, milliseconds) of each."""

    def __init__(self):
        self.rows: list[tuple[str, float, float]] = []

    def run(self, client: httpx.Client, count: int | None = None, until=None) -> None:
        done = 0
        while (count is None or done < count) and (until is None or not until()):
            for path in ENDPOINTS:
                at = time.time()
                started = time.perf_counter()
                response = client.get(path)
                self.rows.append((path, at, (time.perf_counter() - started) * 1000))
                if response.status_code != 200:
                    raise SystemExit(f"GET {path} answered {response.status_code}: {response.text[:300]}")
            done += 1

    def within(self, path: str, spans: list[tuple[float, float]] | None = None) -> list[float]:
        """Milliseconds of the requests to `path` that started within one of `spans` (all of them if None)."""
        return [ms for p, at, ms in self.rows if p == path and (spans is None or any(a <= at < b for a, b in spans))]


def pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100)[q - 1]


def triple(values: list[float]) -> str:
    return f"{pct(values, 50):.1f} / {pct(values, 95):.1f} / {pct(values, 99):.1f} ms (n={len(values)})"


def epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def watch(client: httpx.Client, url: str, record: dict, stop: threading.Event, timeout: float) -> None:
    """Poll the run every POLL_SECONDS until it ends; cancel it after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        started = time.perf_counter()
        response = client.get(url)
        record["poll_ms"].append((time.perf_counter() - started) * 1000)
        if response.status_code == 200 and response.json()["status"] not in ("queued", "running"):
            record["ended_seen"] = time.time()
            return
        if time.monotonic() > deadline and not record.get("cancelled"):
            record["cancelled"] = client.post(f"{url}/cancel").status_code
            deadline = time.monotonic() + 120  # the phase going on finishes, then the run ends
        elif time.monotonic() > deadline:
            return
        stop.wait(POLL_SECONDS)


def one_run(client: httpx.Client, poller: httpx.Client, busy: Sample, timeout: float) -> dict:
    """POST a run of all seven phases; the GETs in a loop into `busy` until the poller sees it end."""
    deadline = time.monotonic() + 30
    while True:
        posted = time.time()
        answer = client.post("/api/pipeline/runs", json={})
        # the run before frees the slot a moment after its status is final
        if answer.status_code != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if answer.status_code != 202:
        raise SystemExit(f"POST /api/pipeline/runs answered {answer.status_code}: {answer.text[:500]}")
    url = answer.json()["url"]
    record: dict = {"posted": posted, "poll_ms": []}
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(poller, url, record, stop, timeout))
    watcher.start()
    try:
        busy.run(client, until=lambda: not watcher.is_alive())
    finally:
        stop.set()
        watcher.join()
    record["run"] = client.get(url).json()
    return record


def measure(base: str, key: str, requests: int, runs: int, timeout: float) -> dict:
    headers = {"X-API-Key": key}
    with (
        httpx.Client(base_url=base, headers=headers, timeout=30) as client,
        httpx.Client(base_url=base, headers=headers, timeout=30) as poller,
    ):
        Sample().run(client, count=30)  # warm: the first requests open connections and fill caches
        idle = Sample()
        idle.run(client, count=requests)
        busy = Sample()
        records = []
        for number in range(runs):
            print(f"run {number + 1} of {runs} ...", file=sys.stderr)
            records.append(one_run(client, poller, busy, timeout))
        # idle again, with the runs stored: /api/pipeline/runs lists them now, so its payload matches the busy sample's
        after = Sample()
        after.run(client, count=requests)
    return {"idle": idle, "busy": busy, "after": after, "records": records}


# --- the table ---------------------------------------------------------------------------------------------


def gaps(run: dict) -> list[float]:
    """Seconds from each phase's end to the next one's start: the hand-off from one Celery task to the next."""
    ran = [p for p in run["phases"] if p["started_at"] and p["ended_at"]]
    return [epoch(b["started_at"]) - epoch(a["ended_at"]) for a, b in zip(ran, ran[1:], strict=False)]


def interval(item: dict) -> tuple[float, float]:
    return epoch(item["started_at"]) or 0.0, epoch(item["ended_at"]) or float("inf")


def report(figures: dict, options, setup: dict) -> None:
    idle, busy, records = figures["idle"], figures["busy"], figures["records"]
    runs = [record["run"] for record in records]
    backend = "PostgreSQL + Redis" if options.postgres else "SQLite + the embedded SQLite broker"
    print(
        f"\n{len(runs)} full pipeline run(s), back to back, against the demo fleet ({backend}; {os.cpu_count()} "
        f"CPUs), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(
        f"set-up: migrate {setup['migrate']:.1f} s, demo up (fleet, audit target, tree, worker, beat, daphne) "
        f"{setup['demo']:.1f} s; load average before the demo {setup['load']:.2f}, at the end "
        f"{os.getloadavg()[0]:.2f} (other work on the machine makes the p99s noisy)"
    )
    print()
    header = f"{'#':>1}  {'phase':<16} {'status':<9} {'wall s (each run)':>19}  {'API reqs':>8} {'p99 ms':>7}  summary"
    print(header)
    print("-" * len(header))
    for number, last in enumerate(runs[-1]["phases"]):
        phases = [run["phases"][number] for run in runs]
        statuses = sorted({p["status"] for p in phases})
        walls = " / ".join(f"{p['duration_seconds']:.1f}" if p["duration_seconds"] is not None else "-" for p in phases)
        during = busy.within(ENDPOINTS[0], [interval(p) for p in phases if p["started_at"]])
        tail = f"{pct(during, 99):.1f}" if len(during) >= 100 else (f"{max(during):.1f}*" if during else "-")
        summary = textwrap.shorten(last["summary"] or "-", 100, placeholder=" ...")
        print(
            f"{last['number']:>1}  {last['name']:<16} {','.join(statuses):<9} {walls:>19}  {len(during):>8} "
            f"{tail:>7}  {summary}"
        )
    print("(API reqs / p99: GET /api/modules during the phase, all runs; * = the maximum, under 100 requests;")
    print(" summary: the last run's)")
    print()

    rows: list[tuple[str, str, str]] = []
    for record, run in zip(records, runs, strict=True):
        created, started, ended = epoch(run["created_at"]), epoch(run["started_at"]), epoch(run["ended_at"])
        line = f"{run['status']}, verdict {run['verdict']}, exit code {run['exit_code']}"
        if run["duration_seconds"] is not None:
            in_phases = sum(p["duration_seconds"] or 0 for p in run["phases"])
            line += (
                f"; wall {run['duration_seconds']:.1f} s (phases {in_phases:.1f} s, hand-offs {sum(gaps(run)):.1f} s"
                f", the end {ended - max(interval(p)[1] for p in run['phases'] if p['ended_at']):.2f} s)"
            )
        if started and created:
            line += f"; queued {started - created:.2f} s"
        if record.get("ended_seen"):
            line += f"; POST -> end seen {record['ended_seen'] - record['posted']:.1f} s"
        if record.get("cancelled"):
            line += f"; CANCELLED after {options.timeout:g} s (answered {record['cancelled']})"
        if run["mirror"]["commit"]:
            line += f"; mirror {run['mirror']['commit'][:10]} pushed={run['mirror']['pushed']}"
        rows.append((f"run #{run['id']}", line, ""))
    walls = [run["duration_seconds"] for run in runs if run["duration_seconds"] is not None]
    if walls:
        median = statistics.median(walls)
        rows.append(("run wall time, median", f"{median:.1f} s", ""))
        rows.append(
            (
                "the real VX11 pipeline (theirs) / ours",
                f"{REAL_PIPELINE_SECONDS:,} s (1 h 38 min) / {median:.1f} s = {median / REAL_PIPELINE_SECONDS:.2%} of "
                "theirs. Not like for like: ours is 10 simulated modules, a 20,000-row target, a 5-test suite",
                "",
            )
        )
    handoffs = [gap for run in runs for gap in gaps(run)]
    if handoffs:
        rows.append(
            (
                "hand-offs between phases (task to task)",
                f"n={len(handoffs)}: mean {statistics.mean(handoffs):.2f} s, max {max(handoffs):.2f} s",
                "",
            )
        )
    spans = [interval(run) for run in runs if run["started_at"]]
    for path in ENDPOINTS:
        before, after, loaded = idle.within(path), figures["after"].within(path), busy.within(path, spans)
        rows.append((f"GET {path} p50/p95/p99 idle before", triple(before), ""))
        rows.append((f"GET {path} p50/p95/p99 during the runs", triple(loaded), ""))
        rows.append((f"GET {path} p50/p95/p99 idle after", triple(after), ""))
        if before and after and loaded:
            ratios = f"{pct(loaded, 99) / pct(before, 99):.2f}x / {pct(loaded, 99) / pct(after, 99):.2f}x"
            rows.append((f"GET {path} p99 during / idle (before / after)", ratios, "<= 2x"))
    polls = [ms for record in records for ms in record["poll_ms"]]
    rows.append((f"GET /api/pipeline/runs/{{id}} (polled every {POLL_SECONDS:g} s)", triple(polls), ""))
    width = max(len(name) for name, _, _ in rows)
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value}" + (f"   [goal {goal}]" if goal else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="idle sample: rounds of the two GETs (default 300)")
    parser.add_argument("--postgres", action="store_true", help=f"PostgreSQL ({POSTGRES_BENCH_DB}) and Redis")
    parser.add_argument(
        "--redis-url", default=REDIS_DEFAULT, help=f"with --postgres (flushed; default {REDIS_DEFAULT})"
    )
    parser.add_argument("--runs", type=int, default=3, help="full runs, back to back (default 3)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds before a run is cancelled (default 240)")
    parser.add_argument("--keep", action="store_true", help="keep the temp VX11_VAR_DIR (logs, databases, evidence)")
    options = parser.parse_args()
    if options.requests < 1:
        parser.error("--requests must be at least 1")
    if not 1 <= options.runs <= 20:
        parser.error("--runs must be 1 to 20")
    if options.timeout <= 0:
        parser.error("--timeout must be positive")

    var_dir = Path(tempfile.mkdtemp(prefix="vx11-bench-pipeline-")).resolve()
    env = demo_env(var_dir, options.postgres, options.redis_url)
    write_tests(var_dir)
    demo = None
    try:
        if options.postgres:
            postgres_db()
            flush_redis(options.redis_url)
        setup = {"load": os.getloadavg()[0]}
        started = time.perf_counter()
        manage(env, "migrate", "-v0")
        setup["migrate"] = time.perf_counter() - started
        offset = free_offset()
        port = PORTAL_PORT + offset
        print(f"var dir {var_dir}; fleet at port offset {offset}; portal on {port}", file=sys.stderr)
        started = time.perf_counter()
        demo = start_demo(env, var_dir, offset, port)
        wait_ready(demo, var_dir)
        setup["demo"] = time.perf_counter() - started
        key = api_key(env)
        print(f"measuring: {options.requests} idle rounds, then {options.runs} run(s) ...", file=sys.stderr)
        figures = measure(f"http://127.0.0.1:{port}", key, options.requests, options.runs, options.timeout)
        report(figures, options, setup)
    finally:
        if demo is not None:
            print(f"\ndemo: {stop_demo(demo)}; {end_leftovers(var_dir)}", file=sys.stderr)
        if options.postgres:
            postgres_db(drop_only=True)
            flush_redis(options.redis_url)
        if options.keep:
            print(f"kept {var_dir}", file=sys.stderr)
        else:
            shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
