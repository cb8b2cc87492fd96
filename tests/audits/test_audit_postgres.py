"""A PostgreSQL target: a scratch database of the test's own on the local server, with tables, an index and a
foreign key added NOT VALID over an orphan row. amcheck is NV while the extension is not installed (the audit
never creates it), then runs once the test installs it."""

import os
import time

import psycopg
import pytest

from apps.audits.models import AuditRun
from apps.audits.runner import run_now
from tests.audits.helpers import PG_TARGET_SQL, postgres_server_url, with_database


@pytest.fixture
def pg_target():
    server = postgres_server_url()
    name = f"vx11_audit_target_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(PG_TARGET_SQL)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_postgresql_target(audit_env, owners, pg_target, settings):
    run = run_now("map", target=pg_target)
    assert run.target == pg_target  # no password in it to hide
    checks = run.result["checks"]
    assert "amcheck is not installed in the target database" in checks["amcheck"]["NV"]
    assert checks["not_valid_foreign_keys"]["count"] == 1
    assert "daughters_task_fk" in checks["not_valid_foreign_keys"]["findings"][0]
    assert run.result["integrity"] == "NV"
    counts = run.result["counts"]["tables"]
    assert counts["daughters"] == {"rows": 201, "approximate": False, "source": "count(*)"}
    assert run.result["stats"]["relation_bytes"]["daughters"] > 0
    assert run.result["stats"]["size_bytes"] > 0
    tables = {row.name: row for row in run.map_tables.all()}
    assert set(tables) == {"daughter_tasks", "daughters", "routing_events", "legacy_notes"}
    assert (tables["daughters"].module, tables["routing_events"].module) == ("spawner", "switch")
    assert tables["legacy_notes"].status == "LEGACY - preserved"
    fk = tables["daughters"].foreign_keys[0]
    assert (fk["table"], fk["from"], fk["to"], fk["validated"]) == ("daughter_tasks", "task_id", "id", False)
    assert [c["name"] for c in tables["daughters"].columns] == ["id", "task_id", "name"]
    assert tables["daughters"].columns[0]["pk"] == 1
    assert {i["name"] for i in tables["daughters"].indexes} == {"daughters_pkey", "daughters_task"}
    assert {f.check_name for f in run.findings.all()} >= {"amcheck", "not_valid_foreign_keys"}
    meta = (settings.VX11_EVIDENCE_ROOT / "docs" / "audit" / "DB_MAP_v7_META.txt").read_text()
    assert meta.splitlines()[0] == "integrity:NV"
    with psycopg.connect(pg_target) as conn:  # the audit wrote nothing: still no amcheck, the key still NOT VALID
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'").fetchone()[0] == 0
        assert (
            conn.execute("SELECT convalidated FROM pg_constraint WHERE conname = 'daughters_task_fk'").fetchone()[0]
            is False
        )


def test_amcheck_and_estimates_when_the_extension_is_there(audit_env, pg_target):
    with psycopg.connect(pg_target, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION amcheck")  # the test's own setup, as an operator would
    run = run_now("db", target=pg_target, approx=True)
    assert run.result["checks"]["amcheck"] == "ok"
    counts = run.result["counts"]["tables"]
    assert counts["routing_events"] == {"rows": 120, "approximate": True, "source": "reltuples"}
    assert run.status == AuditRun.Status.FINDINGS  # the NOT VALID key is still there


def test_an_unreachable_postgresql_target_is_a_finding(audit_env):
    run = run_now("db", target="postgres://nobody:secret@127.0.0.1:1/none")
    assert run.result["target"]["problem"] == "unreachable"
    assert "secret" not in run.target and "nobody:***@" in run.target
    assert "secret" not in run.findings.get().message
    assert set(run.result["checks"]) == {"amcheck", "not_valid_foreign_keys"}
