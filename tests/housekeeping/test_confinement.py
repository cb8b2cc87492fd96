"""Every path is confined to the managed root before it moves: `..`, absolute paths and symlinks leading out are
refused; anything under forensic/ is refused whatever the configuration says, and may only be copied."""

import os

import pytest

from apps.housekeeping import attic, runner
from apps.housekeeping.guard import Refused, confine
from apps.housekeeping.models import HousekeepingRun
from tests.housekeeping.helpers import snapshot, write

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../outside.txt", "'..' in the path"),
        ("docs/../../outside.txt", "'..' in the path"),
        ("/etc/passwd", "an absolute path"),
        ("", "an empty path"),
        (".", "the managed root itself"),
        ("a\x00b", "NUL"),
        ("forensic/crashes", "under a forensic/ folder"),
        ("docs/Forensic/x.log", "under a forensic/ folder"),
    ],
)
def test_confine_refuses_paths_that_leave_the_root_or_touch_forensic(tmp_path, path, why):
    with pytest.raises(Refused, match=why):
        confine(tmp_path, path)


def test_symlinks_leading_out_are_refused_inside_ones_are_not(tmp_path):
    root = (tmp_path / "root").resolve()
    outside = tmp_path / "outside"
    write(outside, "secret.txt", "secret")
    write(root, "inner/real.txt")
    (root / "out_dir").symlink_to(outside)
    (root / "out_file_openapi.json").symlink_to(outside / "secret.txt")
    (root / "in_link").symlink_to(root / "inner")
    with pytest.raises(Refused, match="outside the managed root"):
        confine(root, "out_dir/secret.txt")  # a parent that is a symlink out
    with pytest.raises(Refused, match="a symlink pointing outside"):
        confine(root, "out_file_openapi.json")
    assert confine(root, "in_link/real.txt").relative == "inner/real.txt"  # resolved to what really moves
    assert confine(root, "in_link").relative == "in_link"  # the link itself, pointing inside


def test_a_symlink_to_forensic_is_refused_as_forensic(tmp_path):
    root = tmp_path.resolve()
    write(root, "forensic/crashes/c.log")
    (root / "crash_link").symlink_to(root / "forensic/crashes")
    with pytest.raises(Refused, match="forensic"):
        confine(root, "crash_link/c.log")


def test_requested_escapes_are_refused_and_nothing_outside_changes(tree, keeper, tmp_path):
    outside = tmp_path / "outside"
    write(outside, "victim.txt", "keep me")
    (tree.root / "tools/escape").symlink_to(outside)
    (tree.root / "tools/escape_openapi.json").symlink_to(outside / "victim.txt")  # a stray name, pointing out
    before_outside = snapshot(outside)
    row = runner.run(
        keeper,
        apply=True,
        now=tree.now,
        paths=["../outside/victim.txt", str(outside / "victim.txt"), "tools/escape/victim.txt", "forensic/crashes"],
    )
    reasons = {r["path"]: r["reason"] for r in row.refused}
    assert "'..' in the path" in reasons["../outside/victim.txt"]
    assert "an absolute path" in reasons[str(outside / "victim.txt")]
    assert "outside the managed root" in reasons["tools/escape/victim.txt"]
    assert "a symlink pointing outside" in reasons["tools/escape_openapi.json"]
    assert "forensic" in reasons["forensic/crashes"]
    assert row.status == HousekeepingRun.Status.REFUSED and row.exit_code == 1
    assert snapshot(outside) == before_outside
    assert (tree.root / "tools/escape_openapi.json").is_symlink()  # refused: left where it was
    assert (tree.root / "forensic/crashes").is_dir()
    assert not (tree.root / "operator_openapi.json").exists()  # the rest of the run went ahead


def test_a_folder_holding_a_symlink_out_is_not_moved(tree, keeper, tmp_path):
    write(tmp_path / "outside", "x.pyc")
    (tree.root / "tools/__pycache__").mkdir()
    (tree.root / "tools/__pycache__/link.pyc").symlink_to(tmp_path / "outside/x.pyc")
    row = runner.run(keeper, apply=True, now=tree.now)
    [refused] = row.refused
    assert refused["path"] == "tools/__pycache__" and "holds a symlink pointing outside" in refused["reason"]
    assert (tree.root / "tools/__pycache__/link.pyc").is_symlink()


def test_forensic_is_refused_whatever_the_configuration_says(tree, keeper, settings):
    settings.VX11_CLEANUP_EXCLUDES = str(write(tree.root.parent, "lax.txt", "nothing-protected/\n"))
    write(tree.root, "forensic/crashes/__pycache__/dump.cpython-311.pyc", b"\x00\x01")
    write(tree.root, "forensic/crashes/trace_openapi.json", "{}")
    before = snapshot(tree.root / "forensic")
    row = runner.run(keeper, apply=True, now=tree.now, paths=["FORENSIC/crashes"])
    refused = {r["path"] for r in row.refused}
    assert refused == {"FORENSIC/crashes", "forensic/crashes/__pycache__", "forensic/crashes/trace_openapi.json"}
    assert all("forensic" in r["reason"] for r in row.refused)
    asked = runner.run(keeper, apply=True, now=tree.now, paths=["forensic"])
    assert [(r["path"], "forensic" in r["reason"]) for r in asked.refused] == [("forensic", True)]
    assert snapshot(tree.root / "forensic") == before


def test_a_folder_holding_forensic_is_not_moved(tree, keeper):
    write(tree.root, "tools/old/forensic/crash.log")
    row = runner.run(keeper, apply=True, now=tree.now, paths=["tools/old"])
    [refused] = [r for r in row.refused if r["path"] == "tools/old"]
    assert "holds a forensic/ folder" in refused["reason"]
    assert (tree.root / "tools/old/forensic/crash.log").exists()


def test_forensic_may_only_be_copied_and_the_copy_stays_protected(tree, keeper):
    before = snapshot(tree.root / "forensic")
    row = runner.archive_forensic(keeper)
    assert row.status == HousekeepingRun.Status.OK, row.message
    assert snapshot(tree.root / "forensic") == before  # the original is untouched
    [copy] = row.moves
    assert copy["stored"].startswith("docs/audit/archived_forensic/") and copy["stored"].endswith("/forensic")
    assert snapshot(tree.root / copy["stored"]) == before  # same bytes, sha256 and mtimes
    moved = runner.run(keeper, apply=True, now=tree.now, paths=[copy["stored"]])
    assert any("forensic" in r["reason"] for r in moved.refused if r["path"] == copy["stored"])
    assert (tree.root / copy["stored"]).is_dir()


def test_a_move_refuses_a_folder_swapped_for_a_symlink_after_the_guards(tmp_path):
    root = (tmp_path / "root").resolve()
    write(root, "a/b/file.txt")
    write(tmp_path, "outside/b/file.txt", "outside")
    os.rename(root / "a", root / "a_real")
    (root / "a").symlink_to(tmp_path / "outside")  # what a race would do between the check and the move
    with pytest.raises(Refused, match="symlink"):
        attic.move(root, "a/b/file.txt", "attic/s/a/b/file.txt")
    assert (tmp_path / "outside/b/file.txt").read_text() == "outside"


def test_a_tampered_manifest_cannot_restore_out_of_the_root(tree, keeper):
    row = runner.run(keeper, apply=True, now=tree.now)
    manifest = attic.read_manifest(tree.root, row.attic_stamp)
    manifest["moves"][0]["original"] = "../escaped.txt"
    attic.write_manifest(tree.root, row.attic_stamp, manifest)
    before = snapshot(tree.root)
    with pytest.raises(attic.RestoreRefused, match="cannot be restored") as refused:
        runner.restore(keeper, row.attic_stamp)
    assert refused.value.status == 422
    assert snapshot(tree.root) == before
    assert not (tree.root.parent / "escaped.txt").exists()


def test_a_tampered_manifest_cannot_pull_other_files_out_of_the_tree(tree, keeper):
    row = runner.run(keeper, apply=True, now=tree.now)
    manifest = attic.read_manifest(tree.root, row.attic_stamp)
    manifest["moves"][0]["stored"] = "madre/main.py"  # "restore" a file that was never in the attic
    attic.write_manifest(tree.root, row.attic_stamp, manifest)
    with pytest.raises(attic.RestoreRefused, match="not a place this manifest may restore from"):
        runner.restore(keeper, row.attic_stamp)
    assert (tree.root / "madre/main.py").exists()


@pytest.mark.parametrize("stamp", ["../../etc", "20260301T120000Z/../x", "latest", ""])
def test_a_bad_stamp_is_refused(tree, keeper, stamp):
    with pytest.raises(attic.RestoreRefused) as refused:
        runner.restore(keeper, stamp)
    assert refused.value.status == 422
