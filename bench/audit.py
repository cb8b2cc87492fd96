"""The audit of a real-sized target: figures, not tests.

    .venv/bin/python bench/audit.py [--rows 2300000] [--tables 65] [--small-rows 230000] [--requests 400]

Builds (with apps.simfleet.target_db, in var/bench-audit/, kept with --keep) a VX11-shaped SQLite target of
`rows` rows in `tables` tables (the real database's shape: 2.3 M rows, 65 tables) and a tenth of it, then:

  1. the full audit (`vx11 audit map`: the three PRAGMA checks, exact counts of every table, the map, the
     evidence bag) as its own process, against the sqlite3 CLI running the same three PRAGMAs on the same
     file in the same run (busy_timeout 5000, foreign_keys=ON for foreign_key_check), page cache warm for
     both, both at the audit's CPU priority (nice 10), each twice and the faster kept; goal <= 1.2x;
  2. approximate counts (max(rowid)) against exact COUNT(*) over every table, on one read-only connection;
     goal >= 20x faster;
  3. the API's p99 on GET /api/modules (daphne, SQLite) while a full audit runs in another process,
     against idle; goal <= 2x;
  4. the audit process's peak memory (ru_maxrss) on the small and the big target; goal: it does not grow
     with the database size.

Nothing fails on timing. Needs the sqlite3 CLI (`apt-get install -y sqlite3`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

from apps.simfleet.target_db import create_target_db  # noqa: E402  (plain module: no Django needed)

NICE = 10  # `vx11 audit --nice` default
PRAGMAS = (
    ("quick_check", ["PRAGMA quick_check;"]),
    ("integrity_check", ["PRAGMA integrity_check;"]),
    ("foreign_key_check", ["PRAGMA foreign_keys=ON;", "PRAGMA foreign_key_check;"]),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def warm(path: Path) -> None:
    """Read the file once so the page cache holds it for both sides."""
    with path.open("rb") as handle:
        while handle.read(1 << 24):
            pass


def sqlite_cli(path: Path) -> dict[str, float]:
    cli = shutil.which("sqlite3")
    if cli is None:
        raise SystemExit("the sqlite3 CLI is missing: apt-get install -y sqlite3")
    seconds = {}
    for name, statements in PRAGMAS:
        # at the audit's priority (`vx11 audit` lowers its own by 10): the same share of a busy machine
        argv = ["nice", "-n", str(NICE), cli, str(path), "-cmd", "PRAGMA busy_timeout=5000;"]
        for statement in statements[:-1]:
            argv += ["-cmd", statement]
        argv.append(statements[-1])
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
        seconds[name] = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"sqlite3 {name} failed: {done.stderr}")
    return seconds


def timed_audit(env: dict, target: Path) -> tuple[float, dict, int]:
    """One `vx11 audit map --json` process: (wall seconds, its JSON, peak RSS in MiB)."""
    argv = [sys.executable, "manage.py", "vx11", "audit", "map", "--json", "--target", str(target), "--as", "bench"]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    chunks = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()))
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"the audit failed (exit {proc.returncode}): {chunks[0][:2000]!r}")
    return wall, json.loads(chunks[0]), usage.ru_maxrss // 1024


def counts_ratio(target: Path) -> tuple[float, float, int]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vx11_site.settings")
    from apps.audits import checks
    from apps.audits.target import open_sqlite

    conn = open_sqlite(target)
    tables = checks.sqlite_tables(conn)
    started = time.perf_counter()
    exact = checks.sqlite_counts(conn, tables, False, 600, lambda step: None)
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    approx = checks.sqlite_counts(conn, tables, True, 600, lambda step: None)
    approx_s = time.perf_counter() - started
    conn.close()
    off = sum(abs((approx[t].rows or 0) - (exact[t].rows or 0)) for t in tables)
    return exact_s, approx_s, off


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 2 else latencies[0]


def api_latencies(port: int, key: str, count: int, until=None) -> list[float]:
    import httpx

    latencies = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=30) as client:
        while len(latencies) < count and (until is None or not until()):
            started = time.perf_counter()
            response = client.get("/api/modules")
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"/api/modules answered {response.status_code}: {response.text[:200]}")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_300_000)
    parser.add_argument("--tables", type=int, default=65)
    parser.add_argument("--small-rows", type=int, default=230_000)
    parser.add_argument("--requests", type=int, default=400, help="requests per API latency sample")
    parser.add_argument("--keep", action="store_true", help="keep var/bench-audit/ (the targets) afterwards")
    options = parser.parse_args()

    work = PROJECT_DIR / "var" / "bench-audit"
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "vx11_site.settings",
        "VX11_VAR_DIR": str(work),
        "DATABASE_URL": f"sqlite:///{work / 'portal.sqlite3'}",
        "VX11_AUDIT_ALLOWED_ROOTS": str(work),
        "VX11_EVIDENCE_ROOT": str(work / "evidence"),
        "VX11_ROOT": str(work / "vx11_root"),
        "VX11_AUDIT_INTEGRITY_TIMEOUT": "3600",
    }
    os.environ.update({k: env[k] for k in ("VX11_VAR_DIR", "DATABASE_URL", "VX11_AUDIT_ALLOWED_ROOTS")})
    figures: list[tuple[str, str, str]] = []

    big, small = work / "big.db", work / "small.db"
    for path, rows in ((big, options.rows), (small, options.small_rows)):
        started = time.perf_counter()
        made = create_target_db(path, rows, tables=options.tables)
        print(
            f"built {path.name}: {made['tables']} tables, {made['rows']:,} rows, {made['bytes'] / 1e6:.0f} MB "
            f"in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
    size_mb = big.stat().st_size / 1e6

    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=PROJECT_DIR, env=env, check=True)
    made_key = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model; from apps.accounts.models import ApiKey\n"
            "u = get_user_model().objects.filter(username='bench').first() or "
            "get_user_model().objects.create_superuser('bench', 'b@example.com', None)\n"
            "print(ApiKey.issue(u, 'bench')[1])",
        ],
        cwd=PROJECT_DIR,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    key = made_key.stdout.strip().splitlines()[-1]

    # 1. the full audit against the sqlite3 CLI
    warm(big)
    # each side twice, alternating, the faster of the two kept: the machine is shared, the noise one-sided
    cli_first = sqlite_cli(big)
    first = timed_audit(env, big)
    cli_second = sqlite_cli(big)
    second = timed_audit(env, big)
    cli = {name: min(cli_first[name], cli_second[name]) for name in cli_first}
    cli_total = sum(cli.values())
    wall, result, big_rss = min(first, second, key=lambda audit: audit[1]["seconds"])
    inside = result["seconds"]
    checks_only = sum(result["check_seconds"].values())
    figures += [
        (
            "target",
            f"{size_mb:.0f} MB, {result['counts']['total_rows']:,} rows, {len(result['counts']['tables'])} tables",
            "",
        ),
        (
            "sqlite3 CLI: 3 PRAGMAs",
            f"{cli_total:.2f} s ({', '.join(f'{k} {v:.2f}' for k, v in cli.items())})",
            "baseline",
        ),
        ("audit: the 3 PRAGMAs", f"{checks_only:.2f} s = {checks_only / cli_total:.2f}x the CLI", ""),
        ("audit: PRAGMAs + counts + map + bag", f"{inside:.2f} s = {inside / cli_total:.2f}x the CLI", "<= 1.2x"),
        ("audit process, wall (with Django start)", f"{wall:.2f} s = {wall / cli_total:.2f}x the CLI", ""),
        ("audit result", f"{result['status']}, integrity {result['integrity']}", ""),
    ]

    # 2. approximate against exact counts
    exact_s, approx_s, off = counts_ratio(big)
    figures.append(
        (
            "counts: exact / approx (max(rowid))",
            f"{exact_s * 1000:.0f} ms / {approx_s * 1000:.1f} ms = {exact_s / approx_s:.0f}x (off by {off} rows)",
            ">= 20x",
        )
    )

    # 3. the API's p99 while an audit runs
    port = free_port()
    daphne = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "vx11_site.asgi:application"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                api_latencies(port, key, 1)
                break
            except Exception:
                time.sleep(0.3)
        api_latencies(port, key, 50)  # warm
        idle = api_latencies(port, key, options.requests)
        busy: list[float] = []
        audits = 0
        while len(busy) < options.requests and audits < 20:  # audits one after another until the sample is full
            done = threading.Event()
            running = threading.Thread(target=lambda ended=done: (timed_audit(env, big), ended.set()))
            running.start()
            time.sleep(2.0)  # past the audit process's Django start (a worker has started already), into the checks
            busy += api_latencies(port, key, options.requests - len(busy), until=done.is_set)
            running.join()
            audits += 1
    finally:
        daphne.terminate()
        daphne.wait(timeout=10)
    figures.append(
        (
            "GET /api/modules p99: idle / during an audit",
            f"{p99(idle):.1f} ms / {p99(busy):.1f} ms = {p99(busy) / p99(idle):.2f}x ({len(busy)} requests "
            f"during {audits} audits)",
            "<= 2x",
        )
    )

    # 4. peak memory against the size
    _, small_result, small_rss = timed_audit(env, small)
    figures.append(
        (
            "audit peak RSS: small / big target",
            f"{small_rss} MiB ({small.stat().st_size / 1e6:.0f} MB) / {big_rss} MiB ({size_mb:.0f} MB)",
            "does not grow with size",
        )
    )

    width = max(len(name) for name, _, _ in figures)
    for name, value, goal in figures:
        print(f"{name:<{width}}  {value}" + (f"   [goal {goal}]" if goal else ""))
    if not options.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
