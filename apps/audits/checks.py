"""The integrity checks and row counts of the audit target, each within a time budget.

SQLite: `PRAGMA quick_check`, `integrity_check` and `foreign_key_check` (run with foreign_keys=ON), as the
real phase 1 ran them with the sqlite3 CLI. Each has VX11_AUDIT_INTEGRITY_TIMEOUT seconds: the connection's
progress handler refuses to go on past the deadline, and a timer interrupts the connection then (a single
long step of the VM is cut too). A check cut short is `skipped (timeout)`, never ok. A failing check keeps
SQLite's own lines (the first 100) and their count.

PostgreSQL: amcheck's `bt_index_check` on every B-tree index when the extension is installed in the target
(the audit never creates it: that needs rights and is a write), foreign keys left NOT VALID, and the
planner's reltuples beside relation sizes.

Row counts are exact (COUNT(*)) or, with approx, estimates (sqlite_stat1, max(rowid), reltuples), and every
count says which.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MAX_LINES = 100  # the checker's own messages kept per finding
PROGRESS_OPS = 1000  # VM instructions between two looks at the deadline
OK = "ok"
SKIPPED = "skipped (timeout)"
FAILED = "failed"
NV = "NV"
SQLITE_CHECKS = ("quick_check", "integrity_check", "foreign_key_check")
PG_CHECKS = ("amcheck", "not_valid_foreign_keys")
# findings that say a check is unverified, not that data is damaged: they never decide `integrity`
ADVISORY = frozenset({"not_valid_foreign_keys"})

Tick = Callable[[str], None]


@dataclass
class CheckOutcome:
    """What one check found: ok, failed (with lines and count), skipped (timeout) or NV (could not run)."""

    name: str
    state: str
    lines: list[str] = field(default_factory=list)
    count: int = 0
    seconds: float = 0.0
    reason: str = ""
    by_table: dict[str, int] = field(default_factory=dict)

    def as_json(self):
        """How the result JSON names it: "ok", "skipped (timeout)", or the findings."""
        if self.state in (OK, SKIPPED):
            return self.state
        if self.state == NV:
            return {"NV": self.reason}
        return {"findings": self.lines, "count": self.count, **({"by_table": self.by_table} if self.by_table else {})}


class Budget:
    """At most `seconds` for what runs inside it on `conn`: past the deadline the progress handler stops the
    statement and a timer interrupts the connection; `expired` tells a timeout from another error."""

    def __init__(self, conn: sqlite3.Connection, seconds: float):
        self.conn = conn
        self.seconds = max(0.0, float(seconds))
        self.expired = False
        self._lock = threading.Lock()
        self._running = False

    def _past_deadline(self) -> int:
        if time.monotonic() >= self.deadline:
            self.expired = True
            return 1
        return 0

    def _interrupt(self) -> None:
        with self._lock:
            if self._running:
                self.expired = True
                self.conn.interrupt()

    def __enter__(self) -> Budget:
        self.deadline = time.monotonic() + self.seconds
        self._running = True
        self.conn.set_progress_handler(self._past_deadline, PROGRESS_OPS)
        self._timer = threading.Timer(self.seconds, self._interrupt)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._running = False
        self._timer.cancel()
        self.conn.set_progress_handler(None, PROGRESS_OPS)


def is_timeout(exc: Exception, budget: Budget) -> bool:
    return budget.expired and "interrupt" in str(exc).lower()


def run_pragma(conn: sqlite3.Connection, name: str, seconds: float) -> CheckOutcome:
    """One of SQLITE_CHECKS within `seconds`. integrity_check and quick_check answer "ok" or up to 100 lines
    of problems (SQLite's own limit); foreign_key_check answers one row per bad row, all of them counted."""
    started = time.monotonic()
    outcome = CheckOutcome(name, OK)
    budget = Budget(conn, seconds)
    try:
        with budget:
            cursor = conn.execute(f"PRAGMA {name}")
            if name == "foreign_key_check":
                by_table: Counter[str] = Counter()
                for table, rowid, parent, fkid in cursor:
                    by_table[table] += 1
                    if len(outcome.lines) < MAX_LINES:
                        outcome.lines.append(f"{table} rowid {rowid}: no row in {parent} (foreign key {fkid})")
                outcome.count = sum(by_table.values())
                outcome.by_table = dict(by_table)
            else:
                lines = [str(row[0]) for row in cursor]
                if lines != ["ok"]:
                    outcome.lines = lines[:MAX_LINES]
                    outcome.count = len(lines)
    except sqlite3.DatabaseError as exc:
        if is_timeout(exc, budget):
            outcome.state, outcome.reason = SKIPPED, f"over its {seconds:g} s budget (VX11_AUDIT_INTEGRITY_TIMEOUT)"
        else:  # SQLite refused to go on ("database disk image is malformed", "database is locked"): a failure
            outcome.lines, outcome.count = [str(exc)], 1
    if outcome.state == OK and outcome.lines:
        outcome.state = FAILED
    outcome.seconds = round(time.monotonic() - started, 3)
    return outcome


def sqlite_checks(conn: sqlite3.Connection, seconds: float, tick: Tick) -> dict[str, CheckOutcome]:
    outcomes = {}
    for name in SQLITE_CHECKS:
        outcomes[name] = run_pragma(conn, name, seconds)
        tick(name)
    return outcomes


def sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    )
    return [row[0] for row in rows]


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Count:
    rows: int | None  # None: not counted (see reason)
    approximate: bool
    source: str  # count(*), sqlite_stat1, max(rowid), reltuples
    reason: str = ""

    def as_json(self) -> dict:
        return {"rows": self.rows, "approximate": self.approximate, "source": self.source} | (
            {"reason": self.reason} if self.reason else {}
        )


def _stat1(conn: sqlite3.Connection) -> dict[str, int]:
    """sqlite_stat1's row estimate per table (its first number), when ANALYZE has been run."""
    try:
        rows = conn.execute("SELECT tbl, stat FROM sqlite_stat1").fetchall()
    except sqlite3.OperationalError:  # no such table: never analysed
        return {}
    estimates: dict[str, int] = {}
    for table, stat in rows:
        first = str(stat or "").split(" ", 1)[0]
        if first.isdigit():
            estimates[table] = max(estimates.get(table, 0), int(first))
    return estimates


def sqlite_count(conn: sqlite3.Connection, table: str, approx: bool, seconds: float, stat1: dict[str, int]) -> Count:
    if approx and table in stat1:
        return Count(stat1[table], True, "sqlite_stat1")
    if approx:
        # one step down the table's b-tree, no budget needed (its timer would cost more than the lookup)
        try:
            top = conn.execute(f"SELECT max(rowid) FROM {quoted(table)}").fetchone()[0]
            return Count(int(top or 0), True, "max(rowid)")
        except sqlite3.OperationalError as exc:
            if "rowid" not in str(exc):
                return Count(None, approx, "max(rowid)", f"not counted: {exc}")
            # a WITHOUT ROWID table has none: count it exactly
    budget = Budget(conn, seconds)
    try:
        with budget:
            rows = conn.execute(f"SELECT count(*) FROM {quoted(table)}").fetchone()[0]
            return Count(int(rows), False, "count(*)")
    except sqlite3.DatabaseError as exc:
        if is_timeout(exc, budget):
            return Count(None, approx, "count(*)", f"{SKIPPED}: over {seconds:g} s")
        return Count(None, approx, "count(*)", f"not counted: {exc}")


def _max_rowids(conn: sqlite3.Connection, tables: list[str]) -> dict[str, int]:
    """max(rowid) of every table in one statement (one round through SQLite instead of one per table); empty
    when a table has no rowid (WITHOUT ROWID) or cannot be read: then each is asked alone."""
    if not tables:
        return {}
    query = "SELECT " + ", ".join(f"(SELECT max(rowid) FROM {quoted(table)})" for table in tables)
    try:
        row = conn.execute(query).fetchone()
    except sqlite3.DatabaseError:
        return {}
    return {table: int(top or 0) for table, top in zip(tables, row, strict=True)}


def sqlite_counts(
    conn: sqlite3.Connection, tables: list[str], approx: bool, seconds: float, tick: Tick
) -> dict[str, Count]:
    stat1 = _stat1(conn) if approx else {}
    tops = _max_rowids(conn, [t for t in tables if t not in stat1]) if approx else {}
    counts = {}
    for table in tables:
        if table in tops:
            counts[table] = Count(tops[table], True, "max(rowid)")
        else:
            counts[table] = sqlite_count(conn, table, approx, seconds, stat1)
        tick(f"rows of {table}")
    return counts


def sqlite_stats(conn: sqlite3.Connection, path: Path) -> dict:
    """File size, page size and count, freelist count."""
    return {
        "size_bytes": path.stat().st_size,
        "page_size": conn.execute("PRAGMA page_size").fetchone()[0],
        "page_count": conn.execute("PRAGMA page_count").fetchone()[0],
        "freelist_count": conn.execute("PRAGMA freelist_count").fetchone()[0],
    }


# --- PostgreSQL -----------------------------------------------------------------------------------

PG_TABLES = """
SELECT n.nspname, c.relname, c.oid, c.reltuples::bigint, pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
ORDER BY n.nspname, c.relname
"""


def pg_name(schema: str, table: str) -> str:
    """How a PostgreSQL table is named in the map: bare in public, schema.table elsewhere."""
    return table if schema == "public" else f"{schema}.{table}"


def pg_quoted(schema: str, table: str) -> str:
    return f"{quoted(schema)}.{quoted(table)}"


def pg_tables(conn) -> list[tuple[str, str, int, int, int]]:
    """(schema, table, oid, reltuples, total bytes) of every user table."""
    return list(conn.execute(PG_TABLES).fetchall())


def _pg_error(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def is_pg_timeout(exc: Exception) -> bool:
    import psycopg

    return isinstance(exc, psycopg.errors.QueryCanceled)


def pg_amcheck(conn, seconds: float) -> CheckOutcome:
    """bt_index_check on every B-tree index of the user schemas, all within `seconds`; NV without amcheck."""
    import psycopg

    started = time.monotonic()
    installed = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'amcheck'").fetchone()
    if installed is None:
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'").fetchone()
        reason = (
            "amcheck is not installed in the target database (CREATE EXTENSION amcheck needs rights the audit does "
            "not use: it never writes to the target)"
            if available
            else "the amcheck extension is not available on this PostgreSQL server"
        )
        return CheckOutcome("amcheck", NV, reason=reason)
    indexes = conn.execute(
        """
        SELECT n.nspname, c.relname, c.oid FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_am a ON a.oid = c.relam
        WHERE a.amname = 'btree' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%%' AND i.indisready AND i.indisvalid
        ORDER BY n.nspname, c.relname
        """
    ).fetchall()
    outcome = CheckOutcome("amcheck", OK)
    deadline = started + seconds
    for schema, index, oid in indexes:
        left = deadline - time.monotonic()
        if left <= 0:
            outcome.state, outcome.reason = SKIPPED, f"over its {seconds:g} s budget before {pg_name(schema, index)}"
            break
        try:
            conn.execute(f"SET statement_timeout = {max(1, int(left * 1000))}")
            conn.execute("SELECT bt_index_check(%s)", (oid,))
        except psycopg.Error as exc:
            if is_pg_timeout(exc):
                outcome.state, outcome.reason = SKIPPED, f"over its {seconds:g} s budget in {pg_name(schema, index)}"
                break
            outcome.count += 1
            if len(outcome.lines) < MAX_LINES:
                outcome.lines.append(f"{pg_name(schema, index)}: {_pg_error(exc)}")
    conn.execute(f"SET statement_timeout = {max(1, int(seconds * 1000))}")
    if outcome.state == OK and outcome.count:
        outcome.state = FAILED
    outcome.seconds = round(time.monotonic() - started, 3)
    return outcome


def pg_not_valid_foreign_keys(conn) -> CheckOutcome:
    """Foreign keys added NOT VALID and never validated: rows that break them may exist."""
    started = time.monotonic()
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, con.conname, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE con.contype = 'f' AND NOT con.convalidated ORDER BY 1, 2, 3
        """
    ).fetchall()
    outcome = CheckOutcome("not_valid_foreign_keys", OK)
    for schema, table, name, definition in rows:
        outcome.count += 1
        outcome.by_table[pg_name(schema, table)] = outcome.by_table.get(pg_name(schema, table), 0) + 1
        if len(outcome.lines) < MAX_LINES:
            outcome.lines.append(f"{pg_name(schema, table)}: {name} {definition} is NOT VALID (never validated)")
    if outcome.count:
        outcome.state = FAILED
    outcome.seconds = round(time.monotonic() - started, 3)
    return outcome


def pg_count(conn, schema: str, table: str, reltuples: int, approx: bool) -> Count:
    import psycopg

    if approx and reltuples >= 0:  # -1: never analysed or vacuumed, no estimate: count it
        return Count(int(reltuples), True, "reltuples")
    try:
        rows = conn.execute(f"SELECT count(*) FROM {pg_quoted(schema, table)}").fetchone()[0]
        return Count(int(rows), False, "count(*)")
    except psycopg.Error as exc:
        if is_pg_timeout(exc):
            return Count(None, approx, "count(*)", f"{SKIPPED}: over the statement budget")
        return Count(None, approx, "count(*)", f"not counted: {_pg_error(exc)}")
