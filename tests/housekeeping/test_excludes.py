"""The protected-paths list: loaded before anything moves, matched by whole path components, and a protected
candidate stops the whole run before a single move."""

import pytest

from apps.housekeeping import runner
from apps.housekeeping.guard import BUILTIN_EXCLUDES, Excludes, ExcludesError, load_excludes
from apps.housekeeping.models import HousekeepingRun
from tests.housekeeping.helpers import snapshot, write

pytestmark = pytest.mark.django_db

# VX11's real CLEANUP_EXCLUDES_CORE.txt, as its reference lists it
REAL_LIST = (
    "vx11.code-workspace .github/agents/ .github/instructions/ .github/copilot-instructions.md AGENTS.md .vscode/ "
    "docs/audit/DB_MAP_v7_FINAL.md docs/audit/DB_SCHEMA_v7_FINAL.json docs/audit/DB_MAP_v7_META.txt "
    "docs/audit/DBMAP_MAINTENANCE.md sitecustomize.py docker-compose.yml data/runtime/ switch/ switch/hermes/ "
    "tentaculo_link/ madre/ mcp/"
).split()


def test_entries_match_whole_path_components_never_raw_prefixes():
    excludes = Excludes(entries=BUILTIN_EXCLUDES, source="test")
    assert excludes.protecting("switch") == "switch/"
    assert excludes.protecting("switch/x_openapi.json") == "switch/"
    assert excludes.protecting("switch/hermes/__pycache__") == "switch/"
    assert excludes.protecting("switchboard/x_openapi.json") is None  # the real guard's bug: a raw prefix
    assert excludes.protecting("switchboard") is None
    assert excludes.protecting("madre_old/main.py") is None
    assert excludes.protecting("AGENTS.md") == "AGENTS.md"
    assert excludes.protecting("AGENTS.md.bak") is None
    assert excludes.protecting("docs/audit/DB_MAP_v7_FINAL.md") == "docs/audit/DB_MAP_v7_FINAL.md"
    assert excludes.protecting("docs/audit/DB_MAP_v7_FINAL.md.old") is None


def test_a_candidate_that_holds_a_protected_path_is_protected_too():
    excludes = Excludes(entries=BUILTIN_EXCLUDES, source="test")
    assert excludes.protecting("data") == "data/runtime/"  # moving data/ would move data/runtime/
    assert excludes.protecting("docs/audit") == "docs/audit/DB_MAP_v7_FINAL.md"
    assert excludes.protecting("data/backups/old.bak") is None


def test_without_a_list_the_real_vx11_list_applies(tmp_path, settings):
    settings.VX11_CLEANUP_EXCLUDES = ""
    excludes = load_excludes(tmp_path)
    assert list(excludes.entries) == REAL_LIST
    assert excludes.source.startswith("built-in")


def test_the_trees_own_list_is_read_from_docs_audit(tmp_path, settings):
    settings.VX11_CLEANUP_EXCLUDES = ""
    write(
        tmp_path,
        "docs/audit/CLEANUP_EXCLUDES_CORE.txt",
        f"# protected\n\n./keep/\n  spaced.txt  \n{tmp_path}/absolute/inside\n/etc/outside\n../escape\nkeep/\n",
    )
    excludes = load_excludes(tmp_path)
    assert excludes.entries == ("keep/", "spaced.txt", "absolute/inside")
    assert excludes.ignored == ("/etc/outside", "../escape")
    assert excludes.source == str(tmp_path / "docs/audit/CLEANUP_EXCLUDES_CORE.txt")


def test_the_setting_points_elsewhere_and_an_unreadable_or_empty_list_stops_the_run(tmp_path, settings):
    elsewhere = write(tmp_path / "conf", "excludes.txt", "only/\n")
    settings.VX11_CLEANUP_EXCLUDES = str(elsewhere)
    write(tmp_path / "tree", "docs/audit/CLEANUP_EXCLUDES_CORE.txt", "ignored/\n")
    assert load_excludes(tmp_path / "tree").entries == ("only/",)
    settings.VX11_CLEANUP_EXCLUDES = str(tmp_path / "missing.txt")
    with pytest.raises(ExcludesError, match="cannot be read"):
        load_excludes(tmp_path / "tree")
    settings.VX11_CLEANUP_EXCLUDES = str(write(tmp_path, "empty.txt", "# nothing\n\n"))
    with pytest.raises(ExcludesError, match="lists no path"):
        load_excludes(tmp_path / "tree")


def test_a_list_that_is_a_symlink_out_of_the_root_is_not_read(tmp_path, settings):
    settings.VX11_CLEANUP_EXCLUDES = ""
    outside = write(tmp_path / "outside", "list.txt", "x/\n")
    (tmp_path / "tree/docs/audit").mkdir(parents=True)
    (tmp_path / "tree/docs/audit/CLEANUP_EXCLUDES_CORE.txt").symlink_to(outside)
    with pytest.raises(ExcludesError, match="outside the managed root"):
        load_excludes((tmp_path / "tree").resolve())


def test_a_protected_candidate_aborts_the_run_before_anything_moves(tree, keeper):
    write(tree.root, "switch/switch_openapi.json", "{}")  # a stray inside a protected folder
    write(tree.root, "madre/__pycache__/main.cpython-311.pyc", b"\x00")
    before = snapshot(tree.root)
    row = runner.run(keeper, apply=True, now=tree.now)
    assert row.status == HousekeepingRun.Status.ABORTED
    assert snapshot(tree.root) == before  # not one of the other seven candidates moved
    assert row.attic_stamp == ""
    assert {(p["path"], p["protected_by"]) for p in row.protected} == {
        ("switch/switch_openapi.json", "switch/"),
        ("madre/__pycache__", "madre/"),
    }
    assert row.moves == []
    assert "aborted before moving anything" in row.message and "switch/switch_openapi.json" in row.message
    assert row.exit_code == 1


def test_switchboard_is_not_switch(tree, keeper):
    write(tree.root, "switchboard/switchboard_openapi.json", "{}")
    row = runner.run(keeper, apply=True, now=tree.now)
    assert row.status == HousekeepingRun.Status.OK, row.message
    assert not (tree.root / "switchboard/switchboard_openapi.json").exists()
    assert (tree.root / "attic" / row.attic_stamp / "switchboard/switchboard_openapi.json").exists()


def test_an_unreadable_configured_list_moves_nothing(tree, keeper, settings):
    settings.VX11_CLEANUP_EXCLUDES = str(tree.root / "no-such-list.txt")
    before = snapshot(tree.root)
    row = runner.run(keeper, apply=True, now=tree.now)
    assert row.status == HousekeepingRun.Status.ERROR
    assert "nothing moved" in row.message and "cannot be read" in row.message
    assert snapshot(tree.root) == before
