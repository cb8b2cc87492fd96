"""Audit targets made for the tests, each a real SQLite (or PostgreSQL) database with one known problem, and
the fingerprint that proves an audit left a target as it was."""

import hashlib
import os
import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from apps.simfleet.target_db import create_target_db

CLEAN_ROWS = 3000


def fingerprint(path: Path) -> tuple[str, int, int]:
    """sha256, size and mtime (ns) of a file: an audit must leave all three as they were."""
    data = path.read_bytes()
    stat = path.stat()
    return hashlib.sha256(data).hexdigest(), stat.st_size, stat.st_mtime_ns


def clean_target(path: Path, rows: int = CLEAN_ROWS) -> Path:
    create_target_db(path, rows, seed=3)
    return path


def broken_foreign_key(path: Path) -> Path:
    """A clean target where two daughters name a task that does not exist (written with foreign keys off)."""
    clean_target(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("UPDATE daughters SET task_id = 999999 WHERE id IN (1, 2)")
    conn.commit()
    conn.close()
    return path


def corrupted_index(path: Path) -> Path:
    """A clean target whose index idx_daughters_status no longer matches its table: its definition is changed
    in sqlite_master (writable_schema) to another column, so the index entries are those of `status` while
    SQLite reads them as `name`'s. The b-trees stay well formed: quick_check (which does not compare an index
    with its table) says ok, integrity_check does not."""
    clean_target(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute(
        'UPDATE sqlite_master SET sql = \'CREATE INDEX "idx_daughters_status" ON "daughters" (name)\' '
        "WHERE name = 'idx_daughters_status'"
    )
    conn.commit()
    conn.close()
    return path


def truncated(path: Path) -> Path:
    clean_target(path)
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 2)
    return path


def random_bytes(path: Path, size: int = 64 * 1024) -> Path:
    path.write_bytes(random.Random(13).randbytes(size))
    return path


def no_tables(path: Path) -> Path:
    """A valid SQLite database without a table."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    return path


def add_table(path: Path, name: str) -> None:
    """Change a target between two maps (the tests' own write, not an audit's)."""
    conn = sqlite3.connect(path)
    conn.execute(f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, value TEXT)')
    conn.commit()
    conn.close()


def copy_of(source: Path, path: Path) -> Path:
    shutil.copyfile(source, path)
    return path


# --- PostgreSQL ---------------------------------------------------------------------------------------


def postgres_server_url() -> str:
    """A PostgreSQL server the test may create a scratch database on (127.0.0.1:5432 by default); skips
    without one, fails instead with VX11_REQUIRE_SERVICES=1."""
    url = os.environ.get("VX11_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=2).close()
        return url
    except Exception as exc:
        if os.environ.get("VX11_REQUIRE_SERVICES") == "1":
            pytest.fail(f"PostgreSQL at {url} is required (VX11_REQUIRE_SERVICES=1) but does not answer: {exc}")
        pytest.skip(f"no PostgreSQL at {url}: {exc}")


def with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


PG_TARGET_SQL = """
CREATE TABLE daughter_tasks (id bigint PRIMARY KEY, intent text NOT NULL, created_at timestamptz DEFAULT now());
CREATE TABLE daughters (id bigint PRIMARY KEY, task_id bigint NOT NULL, name text);
CREATE INDEX daughters_task ON daughters (task_id);
CREATE TABLE routing_events (id bigint PRIMARY KEY, provider text, cost real);
CREATE TABLE legacy_notes (id bigint PRIMARY KEY, note text);
INSERT INTO daughter_tasks (id, intent) SELECT g, 'intent ' || g FROM generate_series(1, 50) g;
INSERT INTO daughters (id, task_id, name) SELECT g, 1 + g % 50, 'd' || g FROM generate_series(1, 200) g;
INSERT INTO daughters (id, task_id, name) VALUES (1000, 424242, 'orphan');
INSERT INTO routing_events (id, provider, cost) SELECT g, 'local', 0.1 FROM generate_series(1, 120) g;
ALTER TABLE daughters ADD CONSTRAINT daughters_task_fk FOREIGN KEY (task_id) REFERENCES daughter_tasks (id) NOT VALID;
ANALYZE;
"""
