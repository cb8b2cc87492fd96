"""The demo's audit target: a SQLite database shaped like the fleet's own `vx11.db`.

The real VX11 database holds the tables of every module (spawner's daughters, switch's routing events,
madre's tasks and canonical_* tables, hormiguero's incidents, mcp's copilot tables, ...), 65-88 tables and
1-2.3 M rows. `create_target_db` builds one with those table names and columns, the foreign keys the real
schema has (a daughter belongs to its task, an attempt to its daughter, ...), a few tables the ownership map
does not place and a couple of legacy ones, so every audit (checks, counts, DB map, ownership) has something
real to read. `vx11 demo-db --rows N` makes one of any size; `vx11 demo` makes a small one once.

It is built into a temporary file beside `path` (one transaction, executemany, no journal) and renamed into
place, so a reader never sees half a database. Rows come from a seeded random generator: the same
(rows, seed) give the same content.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

STAMP = "2025-12-01T00:00:00+00:00"
MODULES = ("madre", "switch", "hermes", "hormiguero", "manifestator", "mcp", "shub", "spawner", "tentaculo_link")
STATUSES = ("queued", "running", "done", "failed")
PROVIDERS = ("local", "deepseek_r1", "gpt", "claude", "mixtral")


class Table:
    """One table of the target: its DDL, its share of the rows and how to make row `i` (1-based)."""

    def __init__(
        self,
        name: str,
        columns: str,
        weight: float,
        row: Callable[[int, random.Random, dict[str, int]], tuple],
        indexes: tuple[str, ...] = (),
        fixed: int | None = None,
    ):
        self.name = name
        self.columns = columns  # the column list of CREATE TABLE, foreign keys included
        self.weight = weight  # share of the rows (relative); 0 with `fixed`: a small table of known size
        self.row = row
        self.indexes = indexes  # column lists, one index each
        self.fixed = fixed

    @property
    def insert(self) -> str:
        width = len(self.row(1, random.Random(0), {}))
        return f'INSERT INTO "{self.name}" VALUES ({", ".join("?" * width)})'


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _parent(rng: random.Random, counts: dict[str, int], table: str) -> int | None:
    """A row id of `table` (made earlier), or NULL when it has none."""
    count = counts.get(table, 0)
    return rng.randint(1, count) if count else None


WORDS = (
    "daughter spawn route engine intent task power window incident pheromone drift patch event copilot "
    "sandbox canonical audit health probe module queue priority timeout retry heartbeat provider cost reason"
).split()

BASE_TABLES: list[Table] = [
    # spawner
    Table(
        "daughter_tasks",
        "id INTEGER PRIMARY KEY, intent TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'queued', priority INTEGER "
        "NOT NULL DEFAULT 5, params_json TEXT, created_at TEXT NOT NULL, updated_at TEXT",
        4,
        lambda i, r, c: (i, _text(r, 3), r.choice(STATUSES), r.randint(1, 9), f'{{"n": {i}}}', STAMP, STAMP),
        indexes=("status", "created_at"),
    ),
    Table(
        "daughters",
        "id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL REFERENCES daughter_tasks(id), name TEXT NOT NULL, "
        "status TEXT NOT NULL, pid INTEGER, ttl_seconds INTEGER DEFAULT 300, heartbeat_at TEXT, created_at TEXT",
        6,
        lambda i, r, c: (
            i,
            _parent(r, c, "daughter_tasks"),
            f"daughter-{i}",
            r.choice(STATUSES),
            r.randint(100, 65000),
            300,
            STAMP,
            STAMP,
        ),
        indexes=("task_id", "status"),
    ),
    Table(
        "daughter_attempts",
        "id INTEGER PRIMARY KEY, daughter_id INTEGER NOT NULL REFERENCES daughters(id), attempt INTEGER NOT NULL, "
        "exit_code INTEGER, output TEXT, started_at TEXT, ended_at TEXT",
        8,
        lambda i, r, c: (
            i,
            _parent(r, c, "daughters"),
            r.randint(1, 3),
            r.choice((0, 0, 0, 1)),
            _text(r, 8),
            STAMP,
            STAMP,
        ),
        indexes=("daughter_id",),
    ),
    Table(
        "spawns",
        "id INTEGER PRIMARY KEY, daughter_id INTEGER REFERENCES daughters(id), command TEXT, cwd TEXT, created_at TEXT",
        3,
        lambda i, r, c: (i, _parent(r, c, "daughters"), _text(r, 2), "/tmp", STAMP),
        indexes=("daughter_id",),
    ),
    # switch
    Table(
        "engines",
        "id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, provider TEXT, enabled INTEGER NOT NULL DEFAULT 1",
        0,
        lambda i, r, c: (i, f"engine-{i}", PROVIDERS[i % len(PROVIDERS)], 1),
        fixed=12,
    ),
    Table(
        "routing_events",
        "id INTEGER PRIMARY KEY, engine_id INTEGER REFERENCES engines(id), provider TEXT, cost REAL, reason TEXT, "
        "latency_ms REAL, created_at TEXT NOT NULL",
        14,
        lambda i, r, c: (
            i,
            _parent(r, c, "engines"),
            r.choice(PROVIDERS),
            round(r.random(), 4),
            _text(r, 4),
            round(r.random() * 900, 1),
            STAMP,
        ),
        indexes=("created_at",),
    ),
    # madre
    Table(
        "tasks",
        "id INTEGER PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, payload_json TEXT, created_at TEXT",
        4,
        lambda i, r, c: (i, r.choice(("spawn", "route", "power")), r.choice(STATUSES), f'{{"t": {i}}}', STAMP),
        indexes=("status",),
    ),
    Table(
        "intents_log",
        "id INTEGER PRIMARY KEY, task_id INTEGER REFERENCES tasks(id), intent TEXT, source TEXT, created_at TEXT",
        10,
        lambda i, r, c: (i, _parent(r, c, "tasks"), _text(r, 5), r.choice(MODULES), STAMP),
    ),
    Table(
        "module_status",
        "module TEXT PRIMARY KEY, status TEXT NOT NULL, version TEXT, updated_at TEXT",
        0,
        lambda i, r, c: (MODULES[(i - 1) % len(MODULES)] + ("" if i <= len(MODULES) else f"-{i}"), "ok", "7.0", STAMP),
        fixed=9,
    ),
    Table(
        "power_events",
        "id INTEGER PRIMARY KEY, service TEXT NOT NULL, action TEXT NOT NULL, status TEXT, out_dir TEXT, "
        "created_at TEXT",
        2,
        lambda i, r, c: (i, r.choice(MODULES), r.choice(("start", "stop")), "ok", f"docs/audit/p{i}", STAMP),
    ),
    Table(
        "canonical_docs",
        "id INTEGER PRIMARY KEY, doc_type TEXT, version TEXT, sha256 TEXT, content_json TEXT, source_path TEXT, "
        "created_at_utc TEXT, git_head TEXT",
        0,
        lambda i, r, c: (i, "master", "7.0", f"{r.getrandbits(256):064x}", "{}", "docs/canon", STAMP, f"{i:040x}"),
        fixed=6,
    ),
    Table(
        "canonical_kv",
        "key TEXT PRIMARY KEY, value TEXT, updated_at_utc TEXT",
        0,
        lambda i, r, c: (f"key_{i}", _text(r, 2), STAMP),
        fixed=20,
    ),
    Table(
        "canonical_registry",
        "id INTEGER PRIMARY KEY, canonical_version TEXT, git_commit TEXT, git_branch TEXT, master_path TEXT, "
        "master_sha256 TEXT, created_at_utc TEXT",
        0,
        lambda i, r, c: (i, "7.0", f"{i:040x}", "main", "docs/canon/master.json", f"{i:064x}", STAMP),
        fixed=0,  # empty: the map shows it EMPTY (READY)
    ),
    Table(
        "canonical_runs",
        "run_id TEXT PRIMARY KEY, canonical_version TEXT, outdir TEXT, started_at_utc TEXT, ended_at_utc TEXT, "
        "finished_at_utc TEXT, coverage_pct REAL, global_parcial_pct REAL, global_ponderado_pct REAL, "
        "metrics_json TEXT, percentages_json TEXT, results_json TEXT, git_head TEXT",
        0,
        lambda i, r, c: (
            f"run-{i}",
            "7.0",
            f"docs/audit/r{i}",
            STAMP,
            STAMP,
            STAMP,
            50.0,
            60.0,
            70.0,
            "{}",
            "{}",
            "{}",
            "",
        ),
        fixed=15,
    ),
    Table(
        "canonical_docs_legacy_20251101T000000Z",
        "id INTEGER PRIMARY KEY, doc_type TEXT, version TEXT, content_json TEXT, created_at_utc TEXT",
        0,
        lambda i, r, c: (i, "master", "6.9", "{}", STAMP),
        fixed=4,
    ),
    # hormiguero
    Table(
        "incidents",
        "id INTEGER PRIMARY KEY, kind TEXT NOT NULL, severity TEXT, path TEXT, detail TEXT, created_at TEXT",
        3,
        lambda i, r, c: (
            i,
            r.choice(("fs_drift", "crash", "stray")),
            r.choice(("low", "mid", "high")),
            "/x",
            _text(r, 6),
            STAMP,
        ),
    ),
    Table(
        "pheromone_log",
        "id INTEGER PRIMARY KEY, incident_id INTEGER REFERENCES incidents(id), pheromone TEXT, strength REAL, "
        "created_at TEXT",
        12,
        lambda i, r, c: (i, _parent(r, c, "incidents"), r.choice(("alarm", "trail", "food")), r.random(), STAMP),
        indexes=("incident_id",),
    ),
    Table(
        "hormiga_state",
        "hormiga TEXT PRIMARY KEY, state TEXT, last_scan_at TEXT",
        0,
        lambda i, r, c: (f"hormiga-{i}", r.choice(("idle", "scanning")), STAMP),
        fixed=8,
    ),
    # manifestator
    Table(
        "drift_reports",
        "id INTEGER PRIMARY KEY, plan_id TEXT, risk TEXT, actions_json TEXT, created_at TEXT",
        1,
        lambda i, r, c: (i, f"plan-{i}", r.choice(("low", "mid", "high")), "[]", STAMP),
    ),
    # tentaculo_link
    Table(
        "events",
        "id INTEGER PRIMARY KEY, type TEXT NOT NULL, session_id TEXT, data_json TEXT, created_at TEXT NOT NULL",
        18,
        lambda i, r, c: (i, r.choice(("status_changed", "plan_updated")), f"s{i % 97}", f'{{"i": {i}}}', STAMP),
        indexes=("created_at",),
    ),
    # mcp
    Table(
        "copilot_sessions",
        "id INTEGER PRIMARY KEY, user TEXT, model TEXT, created_at TEXT",
        1,
        lambda i, r, c: (i, f"user{i % 13}", r.choice(PROVIDERS), STAMP),
    ),
    Table(
        "copilot_messages",
        "id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES copilot_sessions(id), role TEXT, "
        "content TEXT, created_at TEXT",
        5,
        lambda i, r, c: (i, _parent(r, c, "copilot_sessions"), r.choice(("user", "assistant")), _text(r, 10), STAMP),
        indexes=("session_id",),
    ),
    Table(
        "copilot_actions",
        "id INTEGER PRIMARY KEY, message_id INTEGER REFERENCES copilot_messages(id), tool TEXT, result TEXT",
        0,
        lambda i, r, c: (i, _parent(r, c, "copilot_messages"), "shell", ""),
        fixed=0,
    ),
    Table(
        "sandbox_exec",
        "id INTEGER PRIMARY KEY, command TEXT, exit_code INTEGER, stdout TEXT, created_at TEXT",
        2,
        lambda i, r, c: (i, _text(r, 2), r.choice((0, 0, 1)), _text(r, 6), STAMP),
    ),
    # hermes (its Module.owned_tables: cli_*, model_*), shub, operator
    Table(
        "cli_tools",
        "id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT, available INTEGER",
        0,
        lambda i, r, c: (i, f"tool-{i}", "1.0", i % 2),
        fixed=7,
    ),
    Table(
        "model_registry",
        "id INTEGER PRIMARY KEY, name TEXT NOT NULL, path TEXT, size_mb INTEGER",
        0,
        lambda i, r, c: (i, f"model-{i}", f"/models/{i}", r.randint(100, 9000)),
        fixed=5,
    ),
    Table(
        "local_models_cache",  # no rule names it: placed by the keyword fallback ("models" -> hermes)
        "id INTEGER PRIMARY KEY, model TEXT, checksum TEXT",
        0,
        lambda i, r, c: (i, f"model-{i}", f"{i:032x}"),
        fixed=3,
    ),
    Table(
        "shub_projects",
        "id INTEGER PRIMARY KEY, name TEXT, sample_rate INTEGER, created_at TEXT",
        0,
        lambda i, r, c: (i, f"project-{i}", 48000, STAMP),
        fixed=4,
    ),
    Table(
        "operator_sessions",
        "id TEXT PRIMARY KEY, user TEXT, created_at TEXT",
        0,
        lambda i, r, c: (f"sess-{i}", "operator", STAMP),
        fixed=6,
    ),
    # what the real map could not place, and the preserved leftovers
    Table(
        "old_routing_rules",
        "id INTEGER PRIMARY KEY, pattern TEXT, engine TEXT",
        0,
        lambda i, r, c: (i, f"^/r{i}", "local"),
        fixed=10,
    ),
    Table(
        "deprecated_metrics",
        "name TEXT PRIMARY KEY, value REAL",
        0,
        lambda i, r, c: (f"metric_{i}", r.random()),
        fixed=0,
    ),
    Table(
        "scratch_notes",
        "id INTEGER PRIMARY KEY, note TEXT",
        0,
        lambda i, r, c: (i, _text(r, 5)),
        fixed=3,
    ),
]


def extra_table(n: int) -> Table:
    """Filler tables for a target with more tables than the base set (the benchmark's 65): unowned, like the
    real database's 22 tables without a module."""
    return Table(
        f"ext_table_{n:02d}",
        "id INTEGER PRIMARY KEY, ref TEXT, value REAL, payload TEXT, created_at TEXT",
        1,
        lambda i, r, c: (i, f"ref-{i}", r.random(), _text(r, 24), STAMP),
        indexes=("ref",),
    )


def table_set(tables: int | None = None) -> list[Table]:
    """The base tables, plus filler tables up to `tables` in all."""
    chosen = list(BASE_TABLES)
    for n in range(1, max(0, (tables or 0) - len(chosen)) + 1):
        chosen.append(extra_table(n))
    return chosen


def share_rows(tables: list[Table], rows: int) -> dict[str, int]:
    """How many rows each table gets: fixed tables their size (cut down if `rows` is smaller), the rest of
    `rows` by weight; the counts add up to exactly `rows`."""
    counts: dict[str, int] = {}
    left = rows
    for table in tables:
        if table.fixed is not None:
            counts[table.name] = min(table.fixed, left)
            left -= counts[table.name]
    weighted = [t for t in tables if t.fixed is None]
    total_weight = sum(t.weight for t in weighted)
    given = 0
    for table in weighted:
        counts[table.name] = int(left * table.weight / total_weight) if total_weight else 0
        given += counts[table.name]
    if weighted:  # rounding: the remainder goes to the largest table
        largest = max(weighted, key=lambda t: t.weight)
        counts[largest.name] += left - given
    return counts


def _rows(table: Table, count: int, rng: random.Random, made: dict[str, int]) -> Iterator[tuple]:
    for i in range(1, count + 1):
        yield table.row(i, rng, made)


def create_target_db(
    path: Path,
    rows: int,
    seed: int = 11,
    *,
    tables: int | None = None,
    on_table: Callable[[str, int], None] | None = None,
) -> dict:
    """Build the target at `path` (replacing a file there) with `rows` rows in all; `tables` adds filler tables
    up to that many; `on_table(name, rows)` is called after each table (a progress bar). Returns
    {"path", "tables", "rows", "bytes"}."""
    if rows < 0:
        raise ValueError("rows must be 0 or more")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    building = path.with_name(f".{path.name}.building-{os.getpid()}")
    building.unlink(missing_ok=True)
    chosen = table_set(tables)
    counts = share_rows(chosen, rows)
    rng = random.Random(seed)
    made: dict[str, int] = {}
    conn = sqlite3.connect(building, isolation_level=None)
    try:
        # a throw-away file until the rename: no journal, no fsync
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("BEGIN")
        for table in chosen:
            conn.execute(f'CREATE TABLE "{table.name}" ({table.columns})')
            conn.executemany(table.insert, _rows(table, counts[table.name], rng, made))
            made[table.name] = counts[table.name]
            for columns in table.indexes:
                conn.execute(f'CREATE INDEX "idx_{table.name}_{columns}" ON "{table.name}" ({columns})')
            if on_table is not None:
                on_table(table.name, counts[table.name])
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=DELETE")  # what a reader opening it read-only expects
    finally:
        conn.close()
    os.replace(building, path)
    return {"path": str(path), "tables": len(chosen), "rows": sum(counts.values()), "bytes": path.stat().st_size}
