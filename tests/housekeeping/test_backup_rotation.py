"""Backup rotation keeps the 2 newest files of data/backups/ by mtime; audit folders go to the attic once their
stamp is more than a week before `now`."""

import os
from datetime import UTC, datetime, timedelta

import pytest

from apps.housekeeping import runner
from apps.housekeeping.models import HousekeepingRun
from tests.housekeeping.helpers import write

pytestmark = pytest.mark.django_db


def set_mtime(path, when: datetime) -> None:
    ns = int(when.timestamp() * 1e9)
    os.utime(path, ns=(ns, ns))


def moved(row: HousekeepingRun, category: str) -> list[str]:
    return sorted(m["path"] for m in row.moves if m["category"] == category)


def test_rotation_keeps_the_two_newest_by_mtime_not_by_name(tree, keeper):
    backups = tree.root / "data/backups"
    for backup in backups.iterdir():
        backup.unlink()
    base = datetime(2026, 2, 1, tzinfo=UTC)
    # ages unrelated to the names' order: only the mtime may decide (newest: b, then d)
    for name, days in [("a.bak", 1), ("b.bak", 5), ("c.bak", 2), ("d.bak", 4), ("e.bak", 3)]:
        set_mtime(write(backups, name, name), base + timedelta(days=days))
    row = runner.run(keeper, apply=True, now=tree.now)
    assert moved(row, "backup") == ["data/backups/a.bak", "data/backups/c.bak", "data/backups/e.bak"]
    assert sorted(p.name for p in backups.iterdir() if p.is_file()) == ["b.bak", "d.bak"]
    assert sorted(p.name for p in (backups / "archived").iterdir()) == ["a.bak", "c.bak", "e.bak"]
    assert {m["stored"] for m in row.moves if m["category"] == "backup"} == {
        f"data/backups/archived/{n}" for n in ("a.bak", "c.bak", "e.bak")
    }


def test_the_keep_count_is_a_setting(tree, keeper, settings):
    settings.VX11_BACKUP_KEEP = 3
    row = runner.run(keeper, now=tree.now)
    assert moved(row, "backup") == ["data/backups/vx11_20260225.db.bak"]


def test_an_archived_backup_of_the_same_name_is_never_replaced(tree, keeper):
    write(tree.root, "data/backups/archived/vx11_20260225.db.bak", "an older archive of that name")
    row = runner.run(keeper, apply=True, now=tree.now)
    [refused] = [r for r in row.refused if r["category"] == "backup"]
    assert refused["path"] == "data/backups/vx11_20260225.db.bak" and "exists already" in refused["reason"]
    assert (tree.root / "data/backups/archived/vx11_20260225.db.bak").read_text() == "an older archive of that name"
    assert (tree.root / "data/backups/vx11_20260225.db.bak").exists()
    assert moved(row, "backup") == ["data/backups/vx11_20260226.db.bak"]


def test_a_backups_archive_that_leads_out_of_the_tree_is_refused(tree, keeper, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tree.root / "data/backups/archived").symlink_to(tmp_path / "elsewhere")
    row = runner.run(keeper, apply=True, now=tree.now)
    assert moved(row, "backup") == []
    assert {r["category"] for r in row.refused} == {"backup"} and len(row.refused) == 2
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_audit_folders_older_than_a_week_by_their_stamp(tree, keeper):
    audit = "docs/audit"
    write(tree.root, f"{audit}/20260221T115959Z_edge/r.md")  # 7 days and 1 s before now: old
    write(tree.root, f"{audit}/20260222T120000Z_edge/r.md")  # exactly 7 days: kept
    write(tree.root, f"{audit}/not_a_stamp_folder/r.md")
    write(tree.root, f"{audit}/20200101T000000Z_bag/bagit.txt", "BagIt-Version: 1.0\n")  # the evidence rotation's
    write(tree.root, f"{audit}/20200101T000000Z_file.md")  # a file, not a folder
    row = runner.run(keeper, now=tree.now)
    assert moved(row, "audit_folder") == [
        f"{audit}/20260130T120000Z_phase1_audit",  # the demo's month-old folder
        f"{audit}/20260221T115959Z_edge",
    ]
    later = runner.run(keeper, now=tree.now + timedelta(days=30))
    assert moved(later, "audit_folder") == [
        f"{audit}/20260130T120000Z_phase1_audit",
        f"{audit}/20260221T115959Z_edge",
        f"{audit}/20260222T120000Z_edge",
        f"{audit}/20260228T120000Z_phase1_audit",
    ]


def test_the_age_is_a_setting(tree, keeper, settings):
    settings.VX11_HOUSEKEEPING_AUDIT_DAYS = 60
    row = runner.run(keeper, now=tree.now)
    assert moved(row, "audit_folder") == []


def test_a_stray_inside_an_old_audit_folder_moves_with_it(tree, keeper):
    write(tree.root, "docs/audit/20260130T120000Z_phase1_audit/__pycache__/x.pyc", b"\x00")
    row = runner.run(keeper, apply=True, now=tree.now)
    paths = [m["path"] for m in row.moves]
    assert "docs/audit/20260130T120000Z_phase1_audit" in paths
    assert not any(p.startswith("docs/audit/20260130T120000Z_phase1_audit/") for p in paths)
    assert (tree.root / f"attic/{row.attic_stamp}/docs/audit/20260130T120000Z_phase1_audit/__pycache__/x.pyc").exists()
