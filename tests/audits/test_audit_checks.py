"""The integrity checks on real SQLite targets, one known problem each: every audit gives the right finding,
never crashes, and leaves the target byte-identical with the same mtime."""

import sqlite3
import threading

import pytest

from apps.audits.models import AuditRun, Finding
from apps.audits.runner import run_now
from tests.audits.helpers import (
    broken_foreign_key,
    clean_target,
    corrupted_index,
    fingerprint,
    random_bytes,
    truncated,
)


def audit(path, kind="db", **options):
    """An audit of `path`, checking that it left the file exactly as it was."""
    before = fingerprint(path) if path.is_file() else None
    run = run_now(kind, target=str(path), **options)
    if before is not None:
        assert fingerprint(path) == before, "the audit changed the target"
    return run


def findings(run, check=None):
    rows = run.findings.all()
    return [f for f in rows if check is None or f.check_name == check]


def test_a_clean_target_is_ok_and_named_by_its_pragmas(audit_env):
    run = audit(clean_target(audit_env / "vx11.db"))
    assert run.status == AuditRun.Status.OK, run.result
    assert run.result["checks"] == {"quick_check": "ok", "integrity_check": "ok", "foreign_key_check": "ok"}
    assert run.result["integrity"] == "ok"
    stats = run.result["stats"]
    assert stats["size_bytes"] == (audit_env / "vx11.db").stat().st_size
    assert stats["page_size"] * stats["page_count"] == stats["size_bytes"]
    assert stats["freelist_count"] == 0
    counts = run.result["counts"]
    assert counts["approximate"] is False
    assert counts["total_rows"] == 3000
    assert counts["tables"]["daughters"]["source"] == "count(*)"
    assert run.findings.count() == 0
    assert run.progress == 100.0
    assert run.exit_code == 0


def test_a_broken_foreign_key_is_a_finding_per_table_with_sqlites_rows(audit_env):
    run = audit(broken_foreign_key(audit_env / "vx11.db"))
    assert run.status == AuditRun.Status.FINDINGS
    assert run.result["checks"]["quick_check"] == "ok"
    fk = run.result["checks"]["foreign_key_check"]
    assert fk["count"] == 2
    assert fk["by_table"] == {"daughters": 2}
    assert fk["findings"][0] == "daughters rowid 1: no row in daughter_tasks (foreign key 0)"
    (finding,) = findings(run, "foreign_key_check")
    assert (finding.severity, finding.table, finding.count) == ("error", "daughters", 2)
    assert run.result["integrity"] == "foreign_key_check"


def test_a_corrupted_index_passes_quick_check_and_fails_integrity_check(audit_env):
    run = audit(corrupted_index(audit_env / "vx11.db"))
    checks = run.result["checks"]
    assert checks["quick_check"] == "ok"
    assert checks["integrity_check"]["findings"][0] == "row 1 missing from index idx_daughters_status"
    assert len(checks["integrity_check"]["findings"]) == 100  # SQLite's own lines, the first 100
    (finding,) = findings(run, "integrity_check")
    assert finding.severity == "error"
    assert finding.count == 100
    assert "100+ line(s)" in finding.message
    assert run.result["integrity"] == "integrity_check"  # the failing check's name, never a number


@pytest.mark.parametrize(
    ("make", "reason", "words"),
    [
        (truncated, "truncated", "is truncated: its header says"),
        (random_bytes, "not_a_database", "is not a SQLite database"),
    ],
)
def test_a_damaged_file_is_a_target_finding(audit_env, make, reason, words):
    path = make(audit_env / "vx11.db")
    run = audit(path)
    assert run.status == AuditRun.Status.FINDINGS
    assert run.result["target"]["problem"] == reason
    (finding,) = findings(run)
    assert (finding.check_name, finding.severity) == ("target", "error")
    assert words in finding.message
    assert run.result["integrity"] == "NV"
    assert run.result["checks"]["integrity_check"] == {"NV": f"target not audited: {reason}"}


def test_a_missing_file_a_directory_and_a_symlink_out_of_the_roots_are_findings(audit_env, tmp_path):
    outside = clean_target(tmp_path / "elsewhere.db")
    link = audit_env / "link.db"
    link.symlink_to(outside)
    (audit_env / "folder.db").mkdir()
    expected = {
        audit_env / "nothing.db": ("missing", "does not exist"),
        audit_env / "folder.db": ("directory", "is a directory"),
        link: ("outside", f"(a symlink to {outside}) is outside the allowed roots"),
        tmp_path / "elsewhere.db": ("outside", "is outside the allowed roots"),
    }
    before = fingerprint(outside)
    for path, (reason, words) in expected.items():
        run = audit(path)
        assert run.result["target"]["problem"] == reason, path
        assert words in run.findings.get().message
    assert fingerprint(outside) == before


def test_a_symlink_inside_the_roots_is_followed(audit_env):
    real = clean_target(audit_env / "real.db")
    (audit_env / "vx11.db").symlink_to(real)
    assert audit(audit_env / "vx11.db").status == AuditRun.Status.OK


def test_a_database_locked_by_a_writer_is_a_finding_and_stays_untouched(audit_env):
    path = clean_target(audit_env / "vx11.db")
    before = fingerprint(path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # rollback journal: no reader gets in until it ends
    writer.execute("INSERT INTO scratch_notes (note) VALUES ('being written')")
    try:
        run = run_now("db", target=str(path), busy_timeout=0.2)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert run.result["target"]["problem"] == "locked"
    assert "is locked by a writer: database is locked" in run.findings.get().message
    assert fingerprint(path) == before


def test_a_check_out_of_time_is_skipped_never_ok(audit_env):
    run = audit(clean_target(audit_env / "vx11.db"), timeout=0)
    assert run.result["checks"] == dict.fromkeys(
        ("quick_check", "integrity_check", "foreign_key_check"), "skipped (timeout)"
    )
    assert run.result["integrity"] == "NV"
    assert run.result["integrity_skipped"] == 3
    assert {f.check_name for f in findings(run)} >= {"quick_check", "integrity_check", "foreign_key_check"}
    assert all(f.severity == "warning" for f in findings(run, "integrity_check"))
    assert run.status == AuditRun.Status.FINDINGS


def test_the_timer_interrupts_a_check_that_runs_long(audit_env):
    """The budget also holds when the work is one long step: a query that never ends is cut at the deadline."""
    from apps.audits import checks

    path = clean_target(audit_env / "vx11.db")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    budget = checks.Budget(conn, 0.3)
    forever = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    with pytest.raises(sqlite3.OperationalError, match="interrupted"), budget:
        conn.execute(forever).fetchone()
    assert budget.expired
    conn.close()


def test_approximate_counts_say_so(audit_env):
    path = clean_target(audit_env / "vx11.db")
    run = audit(path, approx=True)
    tables = run.result["counts"]["tables"]
    assert run.result["counts"]["approximate"] is True
    assert tables["daughters"] == {"rows": tables["daughters"]["rows"], "approximate": True, "source": "max(rowid)"}
    analysed = audit_env / "analysed.db"
    clean_target(analysed)
    conn = sqlite3.connect(analysed)
    conn.execute("ANALYZE")
    conn.close()
    run = audit(analysed, approx=True)
    assert run.result["counts"]["tables"]["daughters"]["source"] == "sqlite_stat1"


def test_an_audit_never_writes_even_with_a_hot_journal_beside_it(audit_env):
    """A -journal file left by a crashed writer: a read-only connection may not roll it back, so the audit
    reports the target instead of repairing it."""
    path = clean_target(audit_env / "vx11.db")
    before = fingerprint(path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA cache_size=1")  # spill to the file at once, journal kept
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE daughters SET name = name || '!'")
    journal = path.with_name(path.name + "-journal")
    copy = journal.read_bytes() if journal.exists() else b""
    after_writer = fingerprint(path)
    writer.execute("ROLLBACK")
    writer.close()
    if not copy:
        pytest.skip("this SQLite did not spill the transaction to the file")
    # put the crashed state back: the half-written file and its hot journal
    journal.write_bytes(copy)
    run = run_now("db", target=str(path))
    assert run.status == AuditRun.Status.FINDINGS
    assert run.findings.filter(check_name="target").exists() or run.result["integrity"] != "ok"
    assert journal.read_bytes() == copy
    assert fingerprint(path)[0] in (before[0], after_writer[0])


def test_the_portal_keeps_serving_while_a_target_is_broken(audit_env, api):
    random_bytes(audit_env / "vx11.db")
    run = run_now("db")
    assert run.status == AuditRun.Status.FINDINGS
    assert api.get("/api/modules").status_code == 200
    assert api.get(f"/api/audits/{run.id}").json()["status"] == "findings"


def test_progress_is_reported_per_table(audit_env):
    seen = []
    path = clean_target(audit_env / "vx11.db")
    run = run_now("db", target=str(path), on_progress=lambda done, total, step: seen.append((done, total, step)))
    steps = [step for _, _, step in seen if step]
    assert steps[:4] == ["target opened", "quick_check", "integrity_check", "foreign_key_check"]
    assert "rows of daughters" in steps
    assert seen[-1][0] == seen[-1][1] == 1 + 3 + 32
    from apps.events.models import Event

    events = Event.objects.filter(data__audit_run=run.id)
    assert events.filter(type="status_changed").count() == 2  # queued -> running -> findings/ok
    assert events.filter(type="plan_updated").last().data["progress"] == 100.0


def test_a_lock_taken_after_the_open_ends_the_run_with_findings_not_an_error(audit_env):
    """A writer that takes the database while the checks run: each refused read is a finding."""
    path = clean_target(audit_env / "vx11.db")
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    taken = threading.Event()

    def lock_after_open(done, total, step):
        if step == "target opened" and not taken.is_set():
            writer.execute("BEGIN EXCLUSIVE")
            taken.set()

    try:
        run = run_now("db", target=str(path), busy_timeout=0.1, on_progress=lock_after_open)
    finally:
        if taken.is_set():
            writer.execute("ROLLBACK")
        writer.close()
    assert run.status == AuditRun.Status.FINDINGS
    assert Finding.objects.filter(run=run, severity="error").exists()
