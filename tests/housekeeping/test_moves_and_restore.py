"""A dry run moves nothing; an applied run moves into attic/<stamp>/ with a manifest, and `restore` puts back
exactly what it moved: the same bytes, sha256 and mtimes, or nothing at all."""

import hashlib
import json

import pytest

from apps.evidence.bags import verify
from apps.evidence.models import Evidence
from apps.housekeeping import attic, runner
from apps.housekeeping.models import HousekeepingRun
from apps.simfleet.target_tree import STRAYS
from tests.housekeeping.helpers import snapshot, write

pytestmark = pytest.mark.django_db

MOVED = {
    *STRAYS,
    "data/backups/vx11_20260225.db.bak",
    "data/backups/vx11_20260226.db.bak",
    "docs/audit/20260130T120000Z_phase1_audit",
}


def test_a_dry_run_moves_nothing_and_says_what_would(tree, keeper, settings):
    before = snapshot(tree.root)
    row = runner.run(keeper, now=tree.now)
    assert snapshot(tree.root) == before
    assert (row.applied, row.status, row.attic_stamp, row.bytes_moved) == (False, HousekeepingRun.Status.OK, "", 0)
    assert {m["path"] for m in row.moves} == MOVED
    assert row.message.startswith("dry run: 7 path(s) would move")
    assert row.excludes_source == str(tree.root / "docs/audit/CLEANUP_EXCLUDES_CORE.txt")
    bag = settings.VX11_EVIDENCE_ROOT / row.evidence_path
    assert verify(bag)["state"] == "valid"
    assert Evidence.objects.get(path=row.evidence_path).kind == "housekeeping"
    payload = {p.name for p in (bag / "data").iterdir()}
    assert {"manifest.json", "refused.json", "housekeeping.log"} <= payload
    assert json.loads((bag / "data/manifest.json").read_text())["mode"] == "dry-run"


def test_apply_moves_into_the_attic_and_restore_puts_back_exactly(tree, keeper, settings):
    before = snapshot(tree.root)
    row = runner.run(keeper, apply=True, now=tree.now)
    assert row.status == HousekeepingRun.Status.OK, row.message
    stamp = row.attic_stamp
    assert {m["path"] for m in row.moves} == MOVED and all(m["moved"] for m in row.moves)
    for path in MOVED:
        assert not (tree.root / path).exists()
    assert (tree.root / f"attic/{stamp}/operator_openapi.json").is_file()
    assert (tree.root / "data/backups/archived/vx11_20260225.db.bak").exists()
    manifest = json.loads((tree.root / f"attic/{stamp}/MANIFEST.json").read_text())
    assert {m["original"] for m in manifest["moves"]} == MOVED
    for record in manifest["files"]:  # what the manifest says is what is stored
        stored = tree.root / record["stored"]
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == record["sha256"] == before[record["original"]][2]
        assert record["size"] == before[record["original"]][1]
        assert stored.stat().st_mtime_ns == record["mtime_ns"] == before[record["original"]][3]
    bag = settings.VX11_EVIDENCE_ROOT / row.evidence_path
    assert json.loads((bag / "data/manifest.json").read_text())["files"] == manifest["files"]

    result = runner.restore(keeper, stamp)
    assert result["status"] == "ok" and result["mismatches"] == []
    assert set(result["restored"]) == MOVED
    after = snapshot(tree.root)
    assert after.pop(f"attic/{stamp}/MANIFEST.json")[0] == "file"  # the manifest stays, marked restored
    assert after.pop(f"attic/{stamp}") == ("dir",)
    assert after.pop("data/backups/archived") == ("dir",)  # the archive folder the rotation made (now empty)
    assert after == before  # every byte, hash and mtime back where it was
    row.refresh_from_db()
    assert row.restored_at is not None and row.restored_by == "keeper"
    assert row.restore_result["status"] == "ok"
    assert Evidence.objects.filter(path=result["evidence_path"], kind="housekeeping").exists()


def test_restore_refuses_to_overwrite_a_path_that_exists_again(tree, keeper):
    row = runner.run(keeper, apply=True, now=tree.now)
    write(tree.root, "operator_openapi.json", "regenerated since")
    before = snapshot(tree.root)
    with pytest.raises(attic.RestoreRefused) as refused:
        runner.restore(keeper, row.attic_stamp)
    assert refused.value.status == 409 and refused.value.conflicts == ["operator_openapi.json"]
    assert snapshot(tree.root) == before  # nothing restored, not even the paths without a conflict
    row.refresh_from_db()
    assert row.restored_at is None and "exist again" in row.restore_result["refused"]


def test_a_second_restore_is_refused(tree, keeper):
    row = runner.run(keeper, apply=True, now=tree.now)
    runner.restore(keeper, row.attic_stamp)
    with pytest.raises(attic.RestoreRefused, match="restored already") as refused:
        runner.restore(keeper, row.attic_stamp)
    assert refused.value.status == 409


def test_restore_reports_a_file_changed_in_the_attic(tree, keeper):
    row = runner.run(keeper, apply=True, now=tree.now)
    (tree.root / f"attic/{row.attic_stamp}/functional_flow_results.json").write_text('{"edited": true}')
    result = runner.restore(keeper, row.attic_stamp)
    assert result["status"] == "modified"
    assert result["mismatches"] == [
        {"path": "functional_flow_results.json", "problem": "sha256 differs from the manifest"}
    ]


def test_an_unknown_stamp_is_a_404(tree, keeper):
    with pytest.raises(attic.RestoreRefused) as refused:
        runner.restore(keeper, "20200101T000000Z")
    assert refused.value.status == 404


def test_two_applied_runs_in_one_second_get_their_own_attic_folders(tree, keeper):
    first = runner.run(keeper, apply=True, now=tree.now)
    write(tree.root, "tools/tools_openapi.json", "{}")
    second = runner.run(keeper, apply=True, now=tree.now)
    assert first.attic_stamp != second.attic_stamp
    assert [m["path"] for m in second.moves] == ["tools/tools_openapi.json"]
    runner.restore(keeper, second.attic_stamp)
    runner.restore(keeper, first.attic_stamp)
    assert (tree.root / "tools/tools_openapi.json").exists() and (tree.root / "operator_openapi.json").exists()


def test_the_run_announces_its_plan_and_its_end(tree, keeper):
    from apps.events.models import Event

    row = runner.run(keeper, apply=True, now=tree.now)
    events = [(e.type, e.data["status"]) for e in Event.objects.filter(data__housekeeping_run=row.pk).order_by("id")]
    assert events == [("status_changed", "running"), ("plan_updated", "running"), ("status_changed", "ok")]


def test_nothing_to_do_is_ok(tree, keeper):
    runner.run(keeper, apply=True, now=tree.now)
    again = runner.run(keeper, apply=True, now=tree.now)
    assert (again.status, again.moves, again.attic_stamp) == (HousekeepingRun.Status.OK, [], "")
    assert again.message.startswith("nothing to move")


def test_a_missing_root_is_an_error_row(settings, keeper, evidence_root, tmp_path):
    settings.VX11_ROOT = tmp_path / "nowhere"
    row = runner.run(keeper)
    assert row.status == HousekeepingRun.Status.ERROR and "missing" in row.message
    assert row.exit_code == 2 and row.evidence_path
