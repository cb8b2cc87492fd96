"""The audit target, opened read-only: the fleet's SQLite file (or a PostgreSQL database) named by
VX11_TARGET_DB.

A SQLite target is opened with a `mode=ro` URI, `PRAGMA query_only=ON` and a 5 s busy timeout, so no audit
can change a byte of it: not the data, not the header, not its mtime. Before it is opened the path is
checked, and what is wrong with it is a `BadTarget` (a finding, never a crash): missing, a directory, outside
the allowed roots once symlinks are followed, not a SQLite file, shorter than its header says, locked by a
writer. A PostgreSQL target is a read-only session (`default_transaction_read_only`), its password never shown.
"""

from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from django.conf import settings

BUSY_TIMEOUT = 5.0  # seconds a read waits for a writer's lock before the target counts as locked
HEADER = b"SQLite format 3\x00"


class BadTarget(Exception):
    """The target cannot be audited; `reason` is a short word (missing, directory, outside, not_a_database,
    truncated, locked, unreadable, unreachable), the message says what and why."""

    def __init__(self, reason: str, message: str, lines: list[str] | None = None):
        super().__init__(message)
        self.reason = reason
        self.lines = lines or []


@dataclass
class TargetSpec:
    kind: str  # sqlite | postgresql
    location: str  # the path, or the URL as given
    shown: str  # what is stored and shown: the path, or the URL without its password


def describe(target: str) -> TargetSpec:
    if target.startswith(("postgres://", "postgresql://")):
        return TargetSpec("postgresql", target, hide_password(target))
    if "://" in target:
        raise BadTarget("unsupported", f"unsupported target {hide_password(target)}: a SQLite path or postgres:// URL")
    return TargetSpec("sqlite", target, target)


def hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc[1]}"))


def inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def check_sqlite_path(location: str, allowed_roots: list[Path] | None = None) -> Path:
    """The real path of a SQLite target after the checks that need no SQLite, or BadTarget."""
    roots = [Path(root).resolve() for root in (allowed_roots or settings.VX11_AUDIT_ALLOWED_ROOTS)]
    given = Path(location).expanduser()
    if not given.is_absolute():
        given = Path.cwd() / given
    real = given.resolve()  # follows every symlink, including one in a parent folder
    if not inside(real, roots):
        shown = ", ".join(str(root) for root in roots)
        via = f" (a symlink to {real})" if real != given.absolute() else ""
        raise BadTarget(
            "outside", f"{given}{via} is outside the allowed roots ({shown}; VX11_AUDIT_ALLOWED_ROOTS): not opened"
        )
    if not real.exists():
        raise BadTarget("missing", f"{given} does not exist (make a demo target with `vx11 demo-db`)")
    if real.is_dir():
        raise BadTarget("directory", f"{given} is a directory, not a database file")
    if not real.is_file():
        raise BadTarget("not_a_database", f"{given} is not a regular file")
    try:
        with real.open("rb") as handle:
            head = handle.read(100)
    except OSError as exc:
        raise BadTarget("unreadable", f"{given} cannot be read: {exc.strerror or exc}") from None
    size = real.stat().st_size
    if size == 0:
        raise BadTarget("not_a_database", f"{given} is empty (0 bytes): no database in it")
    if not head.startswith(HEADER):
        raise BadTarget(
            "not_a_database",
            f"{given} is not a SQLite database: its first bytes are {head[:16]!r}, not 'SQLite format 3'",
        )
    if len(head) < 100:
        raise BadTarget("truncated", f"{given} is truncated: {size} bytes, shorter than the 100-byte SQLite header")
    expected = header_size(head)
    if expected is not None and size < expected:
        raise BadTarget(
            "truncated",
            f"{given} is truncated: its header says {expected} bytes ({expected // page_size(head)} pages), "
            f"the file has {size}",
        )
    return real


def page_size(head: bytes) -> int:
    value = struct.unpack(">H", head[16:18])[0]
    return 65536 if value == 1 else value


def header_size(head: bytes) -> int | None:
    """The database size the header records (bytes), when the header says it is valid (SQLite 3.7.0+ keeps the
    page count at offset 28 and marks it valid by equal change counters at 24 and 92)."""
    pages = struct.unpack(">I", head[28:32])[0]
    if pages == 0 or head[24:28] != head[92:96]:
        return None
    return pages * page_size(head)


def open_sqlite(path: Path, busy_timeout: float = BUSY_TIMEOUT) -> sqlite3.Connection:
    """A read-only connection whose first read has succeeded (a locked or garbled file is a BadTarget here)."""
    uri = f"file:{quote(str(path))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise BadTarget("unreadable", f"{path} cannot be opened read-only: {exc}") from None
    try:
        conn.execute("PRAGMA query_only=ON")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys=ON")  # what foreign_key_check is documented with; nothing is written
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        conn.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise BadTarget(
                "locked",
                f"{path} is locked by a writer: {exc} (waited {busy_timeout:g} s); audit it again when the write ends",
                [str(exc)],
            ) from None
        raise BadTarget("unreadable", f"{path} cannot be read: {exc}", [str(exc)]) from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise BadTarget("not_a_database", f"{path} is not a usable SQLite database: {exc}", [str(exc)]) from None
    return conn


def open_postgres(url: str, statement_timeout: float):
    """A read-only psycopg connection (autocommit: each statement its own transaction, so one failing check
    does not abort the next)."""
    import psycopg

    try:
        conn = psycopg.connect(
            url,
            connect_timeout=max(1, int(BUSY_TIMEOUT)),
            autocommit=True,
            options="-c default_transaction_read_only=on -c lock_timeout=5000",
        )
    except psycopg.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadTarget("unreachable", f"{hide_password(url)} cannot be reached: {message}") from None
    conn.execute(f"SET statement_timeout = {int(statement_timeout * 1000)}")
    return conn
