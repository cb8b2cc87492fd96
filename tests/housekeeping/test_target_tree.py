"""The demo's managed tree: what it holds, its own git repository (never the portal's, around var/), and that it is
made only where nothing is."""

import shutil
import subprocess
import uuid

import pytest

from apps.audits.gitcheck import check_git
from apps.housekeeping.guard import load_excludes
from apps.simfleet.target_tree import STRAYS, create_target_tree
from tests.helpers import ROOT


def portal_head() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    return done.stdout.strip()


def test_the_tree_holds_what_the_checks_and_housekeeping_need(tmp_path, settings):
    settings.VX11_CLEANUP_EXCLUDES = ""
    made = create_target_tree(tmp_path / "vx11", git=False)
    root = tmp_path / "vx11"
    for folder in settings.VX11_FS_ALLOWED_ROOTS:
        assert (root / folder).is_dir(), folder
    assert list((root / "forensic/crashes").iterdir())
    assert all((root / stray).exists() for stray in STRAYS)
    assert len(list((root / "data/backups").iterdir())) == 4
    mtimes = sorted((root / b).stat().st_mtime for b in made["backups"])
    assert len(set(mtimes)) == 4
    assert load_excludes(root.resolve()).source.endswith("docs/audit/CLEANUP_EXCLUDES_CORE.txt")
    assert made["git"] == {"skipped": "not asked"}


def test_it_is_made_only_where_nothing_is(tmp_path):
    (tmp_path / "checkout").mkdir()
    (tmp_path / "checkout/README.md").write_text("a real checkout")
    with pytest.raises(ValueError, match="not an empty folder"):
        create_target_tree(tmp_path / "checkout")
    assert [p.name for p in (tmp_path / "checkout").iterdir()] == ["README.md"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_its_git_repository_is_its_own_even_inside_the_portals_checkout():
    inside = ROOT / "var" / f"tree-{uuid.uuid4().hex}"
    head = portal_head()
    try:
        made = create_target_tree(inside)
        assert len(made["git"]["commit"]) == 40
        state = check_git(inside)
        assert (state["branch"], state["clean"], state["last_commit"]["hash"]) == ("main", True, made["git"]["commit"])
        assert portal_head() == head  # the portal's repository saw nothing
    finally:
        shutil.rmtree(inside, ignore_errors=True)
