"""Soak run of the embedded default: `vx11 demo` (demo fleet, worker, beat, daphne on SQLite and the SQLite
broker) under API, admin and flow traffic from several clients at once.

    .venv/bin/python bench/soak.py                      # 30 minutes, 6 clients
    .venv/bin/python bench/soak.py --minutes 2 --clients 3

The demo runs from a fresh VX11_VAR_DIR (a temp dir) with REDIS_URL and DATABASE_URL unset, on its own
ports (--port-offset, --portal-port). Each client loops over a mix of reads (API, admin pages, operator
overview, /health) and writes (queued flow runs, daughter spawns). At the end the script waits for the
queued work to drain and prints: worker restarts (the demo's own count), tasks lost (spawned daughter
tasks and queued flow runs that never ended), probe rounds due against stored, requests by status,
5xx and connection errors, latency p50/p95 per kind. Figures, not a test: nothing fails on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROBE_INTERVAL = 15  # VX11_PROBE_INTERVAL_SECONDS of the demo
TERMINAL_TASK = {"completed", "failed", "expired", "cancelled"}
TERMINAL_RUN = {"passed", "failed"}
RUN_EVERY = 30  # seconds between one client's queued flow runs (on average)
SPAWN_EVERY = 10  # seconds between one client's daughter spawns


def start_demo(var_dir: Path, offset: int, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(VX11_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="vx11_site.settings")
    log = (var_dir / "demo-terminal.log").open("w")
    argv = [sys.executable, "manage.py", "vx11", "demo", "--port-offset", str(offset), "--portal-port", str(port)]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(demo: subprocess.Popen, var_dir: Path, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if demo.poll() is not None:
            sys.exit(f"the demo exited: {(var_dir / 'demo-terminal.log').read_text()[-2000:]}")
        if "Ctrl-C stops everything" in (var_dir / "demo-terminal.log").read_text():
            return json.loads((var_dir / "demo.json").read_text())
        time.sleep(0.5)
    sys.exit("the demo did not come up")


def api_key(var_dir: Path) -> str:
    code = (
        "from django.contrib.auth import get_user_model; from apps.accounts.models import ApiKey; "
        "print(ApiKey.issue(get_user_model().objects.get(username='admin'), 'soak')[1])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["VX11_VAR_DIR"] = str(var_dir)
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.status = Counter()
        self.latency = defaultdict(list)
        self.errors = Counter()
        self.tasks: list[int] = []
        self.runs: list[int] = []

    def add(self, kind: str, status: int | str, seconds: float) -> None:
        with self.lock:
            self.status[status] += 1
            self.latency[kind].append(seconds)


def admin_session(base: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30, follow_redirects=True)
    client.get("/admin/login/")
    client.post(
        "/admin/login/?next=/admin/",
        data={"username": "admin", "password": password, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
    )
    return client


def client_loop(base: str, key: str, token: str, password: str, until: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    api = httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {key}"})
    admin = admin_session(base, password)
    reads = [
        ("api", api, "/api/modules"),
        ("api", api, "/api/overview"),
        ("api", api, "/api/modules/hermes/history?resolution=raw&limit=50"),
        ("api", api, "/api/flows"),
        ("api", api, "/api/daughters/tasks?limit=20"),
        ("health", api, "/health"),
        ("admin", admin, "/admin/"),
        ("admin", admin, "/admin/fleet/module/"),
        ("admin", admin, "/admin/daughters/daughtertask/"),
        ("admin", admin, "/admin/flows/flowrun/"),
        ("admin", admin, "/admin/power/servicecontrol/console/"),
    ]
    next_run = time.monotonic() + rng.uniform(0, RUN_EVERY)
    next_spawn = time.monotonic() + rng.uniform(0, SPAWN_EVERY)
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            if started >= next_run:
                next_run = started + rng.uniform(0.5, 1.5) * RUN_EVERY
                kind = "flow-run"
                answer = api.post(f"/api/flows/{rng.choice('ABC')}/run?wait=false")
                if answer.status_code == 202:
                    with tally.lock:
                        tally.runs.append(answer.json()["id"])
            elif started >= next_spawn:
                next_spawn = started + rng.uniform(0.5, 1.5) * SPAWN_EVERY
                kind = "spawn"
                params = rng.choice(
                    [
                        {"kind": "sleep", "params": {"seconds": 0.2}},
                        {"kind": "http", "params": {"module": "hermes", "path": "/health"}},
                    ]
                )
                answer = api.post("/api/daughters", json=params)
                if answer.status_code == 201:
                    with tally.lock:
                        tally.tasks.append(answer.json()["id"])
            elif rng.random() < 0.1:
                kind = "operator"
                answer = api.get("/operator/vx11/overview", headers={"X-VX11-Token": token})
            else:
                kind, client, path = rng.choice(reads)
                answer = client.get(path)
            tally.add(kind, answer.status_code, time.monotonic() - started)
        except httpx.HTTPError as exc:
            tally.add("error", type(exc).__name__, time.monotonic() - started)
            with tally.lock:
                tally.errors[type(exc).__name__] += 1
        time.sleep(rng.uniform(0.1, 0.6))


def unfinished(api: httpx.Client, tally: Tally) -> tuple[list[int], list[int]]:
    tasks = [t for t in tally.tasks if api.get(f"/api/daughters/tasks/{t}").json().get("status") not in TERMINAL_TASK]
    runs = [r for r in tally.runs if api.get(f"/api/flow-runs/{r}").json().get("status") not in TERMINAL_RUN]
    return tasks, runs


def probe_rounds_stored(api: httpx.Client, since: datetime) -> int:
    """Raw checks of madre since the soak began: one per probe round (and one per on-demand probe of the
    operator overview, so stored may exceed due)."""
    count, offset = 0, 0
    while True:
        page = api.get(f"/api/modules/madre/history?resolution=raw&limit=1000&offset={offset}").json()
        items = page["items"] if isinstance(page, dict) else page
        count += sum(
            datetime.fromisoformat(item["at"] if "at" in item else item["checked_at"]) >= since for item in items
        )
        if len(items) < 1000:
            return count
        offset += 1000


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else (values[0] if values else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--port-offset", type=int, default=24000)
    parser.add_argument("--portal-port", type=int, default=18480)
    parser.add_argument("--keep", action="store_true", help="keep the temp var dir (logs, databases)")
    args = parser.parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="vx11-soak-"))
    demo = start_demo(var_dir, args.port_offset, args.portal_port)
    try:
        state = wait_ready(demo, var_dir)
        base = state["portal_url"]
        key = api_key(var_dir)
        token = (var_dir / "vx11_token").read_text().strip()
        password = (var_dir / "demo-admin-password").read_text().strip()
        tally = Tally()
        since = datetime.now(UTC)
        began = time.monotonic()
        until = began + args.minutes * 60
        threads = [
            threading.Thread(target=client_loop, args=(base, key, token, password, until, tally, n))
            for n in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            time.sleep(10)
            done = min(1.0, (time.monotonic() - began) / (args.minutes * 60))
            print(
                f"\r{done:6.1%}  requests {sum(tally.status.values()):>7}  5xx "
                f"{sum(n for s, n in tally.status.items() if isinstance(s, int) and s >= 500)}",
                end="",
                file=sys.stderr,
            )
        print(file=sys.stderr)
        elapsed = time.monotonic() - began
        api = httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {key}"})
        drain_deadline = time.monotonic() + 120
        tasks, runs = unfinished(api, tally)
        while (tasks or runs) and time.monotonic() < drain_deadline:
            time.sleep(5)
            tasks, runs = unfinished(api, tally)
        stored = probe_rounds_stored(api, since)
        state = json.loads((var_dir / "demo.json").read_text())
        worker_log = (var_dir / "log" / "worker.log").read_text()
        figures = {
            "minutes": round(elapsed / 60, 1),
            "clients": args.clients,
            "requests": sum(tally.status.values()),
            "by_status": {str(k): v for k, v in sorted(tally.status.items(), key=str)},
            "5xx": sum(n for s, n in tally.status.items() if isinstance(s, int) and s >= 500),
            "connection_errors": dict(tally.errors),
            "worker_restarts (goal 0)": state["restarts"],
            "demo_still_running": demo.poll() is None,
            "daughter_tasks_spawned": len(tally.tasks),
            "flow_runs_queued": len(tally.runs),
            "tasks_lost (goal 0)": {"daughter_tasks": tasks, "flow_runs": runs},
            "probe_rounds_due": int(elapsed // PROBE_INTERVAL),
            "probe_rounds_stored": stored,
            "worker_unrecoverable_errors": len(re.findall(r"Unrecoverable error", worker_log)),
            "daughter_task_statuses": dict(
                Counter(api.get(f"/api/daughters/tasks/{t}").json()["status"] for t in tally.tasks)
            ),
            "flow_run_statuses": dict(Counter(api.get(f"/api/flow-runs/{r}").json()["status"] for r in tally.runs)),
            "latency_ms p50/p95": {
                kind: f"{percentile(v, 50) * 1000:.0f} / {percentile(v, 95) * 1000:.0f}"
                for kind, v in sorted(tally.latency.items())
            },
        }
        print(json.dumps(figures, indent=2))
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGTERM)
            demo.wait(timeout=60)
        print(f"var dir: {var_dir}" + ("" if args.keep else " (removed)"), file=sys.stderr)
        if not args.keep:
            subprocess.run(["rm", "-rf", str(var_dir)], check=False)


if __name__ == "__main__":
    main()
