"""The DB map: every table of the target with its columns, foreign keys, indexes, rows, status and owner,
written as the real VX11 files so their readers keep working:

- `DB_SCHEMA_v7_FINAL.json`: {generated_at, database, tables: [{table, columns: [{cid, name, type, notnull,
  dflt_value, pk}], foreign_keys, rows, status, module}]} (plus our own keys beside them: indexes,
  rows_approximate, owner_source);
- `DB_MAP_v7_FINAL.md`: the same as a table for people, approximate counts marked `~`;
- `DB_MAP_v7_META.txt`: one `key:value` a line, `integrity:` (ok, the failing check's name, or NV when a check
  was skipped and none failed; never a number), `integrity_skipped:`, `integrity_timeout_secs:`, `size_bytes:`.

status is `LEGACY - preserved` when a word of the name is legacy, old or deprecated (`old_rules`, not
`threshold`), else `EMPTY (READY)` for no rows, else `ACTIVE`. The owner comes from apps.audits.ownership.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable

from .checks import FAILED, NV, OK, SKIPPED, CheckOutcome, Count, pg_name

SCHEMA_FILE = "DB_SCHEMA_v7_FINAL.json"
MAP_FILE = "DB_MAP_v7_FINAL.md"
META_FILE = "DB_MAP_v7_META.txt"
DIFF_FILE = "DB_MAP_DIFF.json"
LEGACY_WORDS = {"legacy", "old", "deprecated"}
EMPTY, ACTIVE, LEGACY = "EMPTY (READY)", "ACTIVE", "LEGACY - preserved"
WORDS = re.compile(r"[^a-z0-9]+")


def status_of(table: str, rows: int | None) -> str:
    if LEGACY_WORDS & set(WORDS.split(table.lower())):
        return LEGACY
    return EMPTY if rows == 0 else ACTIVE


# --- what the target says about its tables ----------------------------------------------------------


def sqlite_schema(conn: sqlite3.Connection, table: str) -> dict:
    """columns (PRAGMA table_info), foreign keys (foreign_key_list) and indexes (index_list + index_info)."""
    columns = [
        {"cid": cid, "name": name, "type": type_, "notnull": notnull, "dflt_value": default, "pk": pk}
        for cid, name, type_, notnull, default, pk in conn.execute("SELECT * FROM pragma_table_info(?)", (table,))
    ]
    foreign_keys = [
        {
            "id": fk_id,
            "seq": seq,
            "table": parent,
            "from": source,
            "to": target,
            "on_update": on_update,
            "on_delete": on_delete,
            "match": match,
        }
        for fk_id, seq, parent, source, target, on_update, on_delete, match in conn.execute(
            "SELECT * FROM pragma_foreign_key_list(?)", (table,)
        )
    ]
    indexes = []
    for _seq, name, unique, origin, partial in conn.execute("SELECT * FROM pragma_index_list(?)", (table,)):
        names = [row[2] for row in conn.execute("SELECT * FROM pragma_index_info(?)", (name,))]
        indexes.append(
            {"name": name, "unique": bool(unique), "origin": origin, "partial": bool(partial), "columns": names}
        )
    return {"columns": columns, "foreign_keys": foreign_keys, "indexes": indexes}


def pg_schemas(conn) -> dict[str, dict]:
    """The same shape for every user table of a PostgreSQL target, read from the catalogues in three queries."""
    found: dict[str, dict] = {}
    for schema, table, cid, name, type_, notnull, default, pk in conn.execute(
        """
        SELECT n.nspname, c.relname, a.attnum - 1, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid),
               coalesce(array_position(pk.conkey, a.attnum), 0)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'
        WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
          AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
        ORDER BY n.nspname, c.relname, a.attnum
        """
    ):
        entry = found.setdefault(pg_name(schema, table), {"columns": [], "foreign_keys": [], "indexes": []})
        entry["columns"].append(
            {"cid": cid, "name": name, "type": type_, "notnull": int(notnull), "dflt_value": default, "pk": pk}
        )
    for fk_id, (schema, table, name, parent, sources, targets, update, delete, valid) in enumerate(
        conn.execute(
            """
            SELECT n.nspname, c.relname, con.conname, con.confrelid::regclass::text,
                   ARRAY(SELECT attname FROM unnest(con.conkey) WITH ORDINALITY k(num, i)
                         JOIN pg_attribute ON attrelid = con.conrelid AND attnum = k.num ORDER BY k.i),
                   ARRAY(SELECT attname FROM unnest(con.confkey) WITH ORDINALITY k(num, i)
                         JOIN pg_attribute ON attrelid = con.confrelid AND attnum = k.num ORDER BY k.i),
                   con.confupdtype, con.confdeltype, con.convalidated
            FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE con.contype = 'f' ORDER BY 1, 2, 3
            """
        )
    ):
        entry = found.get(pg_name(schema, table))
        if entry is None:
            continue
        for seq, (source, target) in enumerate(zip(sources, targets, strict=False)):
            entry["foreign_keys"].append(
                {
                    "id": fk_id,
                    "seq": seq,
                    "table": parent,
                    "from": source,
                    "to": target,
                    "on_update": PG_ACTIONS.get(update, update),
                    "on_delete": PG_ACTIONS.get(delete, delete),
                    "match": "NONE",
                    "name": name,
                    "validated": valid,
                }
            )
    for schema, table, name, unique, partial, columns in conn.execute(
        """
        SELECT n.nspname, t.relname, c.relname, i.indisunique, i.indpred IS NOT NULL,
               ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_subscripts(i.indkey, 1) k ORDER BY k)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
        ORDER BY 1, 2, 3
        """
    ):
        entry = found.get(pg_name(schema, table))
        if entry is not None:
            entry["indexes"].append(
                {"name": name, "unique": unique, "origin": "", "partial": partial, "columns": list(columns)}
            )
    return found


PG_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


# --- the map ------------------------------------------------------------------------------------------


def map_entry(table: str, schema: dict, count: Count, owner: tuple[str, str]) -> dict:
    module, source = owner
    return {
        "table": table,
        "columns": schema["columns"],
        "foreign_keys": schema["foreign_keys"],
        "rows": count.rows,
        "status": status_of(table, count.rows),
        "module": module or None,
        # ours, beside the real fields
        "rows_approximate": count.approximate,
        "rows_source": count.source,
        "owner_source": source,
        "indexes": schema["indexes"],
    }


def assignment_pct(tables: list[dict]) -> dict:
    """Orden_db_module_assignment_pct: tables with an owner / all tables x 100 (NV with a reason for none)."""
    owned = sum(1 for t in tables if t["module"])
    if not tables:
        return {"value": NV, "owned": 0, "tables": 0, "reason": "the target has no tables"}
    return {"value": round(100.0 * owned / len(tables), 1), "owned": owned, "tables": len(tables)}


def integrity_word(checks: dict[str, CheckOutcome]) -> tuple[str, int]:
    """META's integrity (ok, the first failing check's name, or NV) and integrity_skipped (checks cut short or
    not run)."""
    skipped = sum(1 for c in checks.values() if c.state in (SKIPPED, NV))
    failing = next((name for name, c in checks.items() if c.state == FAILED), None)
    if failing:
        return failing, skipped
    if skipped or not checks:
        return NV, skipped
    return OK, 0


def schema_json(generated_at: str, database: str, tables: list[dict]) -> str:
    return json.dumps({"generated_at": generated_at, "database": database, "tables": tables}, indent=2)


def rows_text(table: dict) -> str:
    if table["rows"] is None:
        return "NV"
    return f"~{table['rows']} (approx.)" if table["rows_approximate"] else str(table["rows"])


def map_markdown(generated_at: str, database: str, tables: list[dict], pct: dict, integrity: str) -> str:
    lines = [
        "# DB MAP v7 (FINAL)",
        "",
        f"- generated_at: {generated_at}",
        f"- database: {database}",
        f"- integrity: {integrity}",
        f"- tables: {len(tables)}, owned: {pct['owned']}, Orden_db_module_assignment_pct: {pct['value']}"
        + (f" ({pct['reason']})" if "reason" in pct else ""),
        "",
        "| table | module | status | rows | columns | foreign keys |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in tables:
        fks = ", ".join(f"{fk['from']} -> {fk['table']}.{fk['to']}" for fk in t["foreign_keys"]) or "-"
        lines.append(
            f"| {t['table']} | {t['module'] or '**UNOWNED**'} | {t['status']} | {rows_text(t)} | "
            f"{len(t['columns'])} | {fks} |"
        )
    unowned = [t["table"] for t in tables if not t["module"]]
    lines += ["", f"## Unowned tables ({len(unowned)})", ""] + [f"- {name}" for name in unowned or ["(none)"]]
    if any(t["rows_approximate"] for t in tables):
        lines += ["", "Counts marked ~ are approximate (sqlite_stat1, max(rowid) or reltuples), not COUNT(*)."]
    return "\n".join(lines) + "\n"


def meta_text(integrity: str, skipped: int, timeout: int, size_bytes: int | None) -> str:
    rows = {
        "integrity": integrity,
        "integrity_skipped": skipped,
        "integrity_timeout_secs": timeout,
        "size_bytes": "NV" if size_bytes is None else size_bytes,
    }
    return "".join(f"{key}:{value}\n" for key, value in rows.items())


def diff_maps(
    previous: Iterable[tuple[str, str]] | None, current: Iterable[tuple[str, str]], previous_run=None
) -> dict:
    """Tables added, dropped and whose owner changed, from (table, module) pairs of two maps."""
    now = dict(current)
    if previous is None:
        return {
            "previous_run": None,
            "added": [],
            "dropped": [],
            "owner_changed": [],
            "note": "first map of this target",
        }
    before = dict(previous)
    return {
        "previous_run": previous_run,
        "added": sorted(set(now) - set(before)),
        "dropped": sorted(set(before) - set(now)),
        "owner_changed": [
            {"table": name, "from": before[name] or None, "to": now[name] or None}
            for name in sorted(set(now) & set(before))
            if (before[name] or "") != (now[name] or "")
        ],
    }
