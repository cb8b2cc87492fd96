"""The filesystem check: Orden_fs_pct from the allowed roots present and the extra top-level folders, NV with its
reason when there is nothing to count, stray generated files listed with their paths, symlinks never followed."""

from pathlib import Path

import pytest

from apps.audits.fs import check_fs
from apps.simfleet.target_tree import EXTRA_ROOT, STRAYS, create_target_tree


def make(root: Path, *paths: str) -> Path:
    for relative in paths:
        path = root / relative
        if relative.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")
    return root


def test_orden_fs_pct_is_present_over_allowed_plus_extra(tmp_path):
    root = make(tmp_path, "madre/", "switch/hermes/", "docs/", "scratch/", ".git/", "node_modules/", "README.md")
    result = check_fs(root, ["madre", "switch", "switch/hermes", "docs", "tests"])
    # present: madre, switch, switch/hermes, docs (4 of 5 allowed); extra: scratch (.git and node_modules ignored)
    assert result["Orden_fs_pct"] == 66.67  # 4 / (5 + 1) * 100
    assert result["counts"] == {"allowed": 5, "present": 4, "missing": 1, "extra": 1, "stray": 0}
    assert result["missing_roots"] == ["tests"]
    assert result["extra_roots"] == ["scratch"]
    assert result["ignored_roots"] == [".git", "node_modules"]
    assert result["top_level_files"] == ["README.md"]  # files are not counted, as in VX11
    assert result["calculation"] == "4 present ÷ (5 allowed + 1 extra) × 100 = 66.67"
    assert result["reason"] == ""


def test_everything_in_place_is_100(tmp_path):
    root = make(tmp_path, "madre/", "docs/", "AGENTS.md")
    assert check_fs(root, ["madre", "docs/"])["Orden_fs_pct"] == 100.0


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: make(p, "file.txt") / "file.txt", "is not a folder"),
        (lambda p: p, "is empty"),
    ],
)
def test_nothing_to_count_is_nv_with_its_reason(tmp_path, setup, reason):
    result = check_fs(setup(tmp_path), ["madre"])
    assert result["Orden_fs_pct"] == "NV"
    assert reason in result["reason"] and result["findings"] == [result["reason"]]


def test_no_allowed_roots_is_nv(tmp_path):
    result = check_fs(make(tmp_path, "madre/"), [])
    assert result["Orden_fs_pct"] == "NV" and "VX11_FS_ALLOWED_ROOTS" in result["reason"]


def test_stray_generated_files_are_listed_with_their_paths(tmp_path):
    root = make(
        tmp_path,
        "madre/madre_openapi.json",
        "tests/e2e/functional_flow_results.json",
        "hormiguero/core/__pycache__/queen.cpython-311.pyc",
        "hormiguero/core/__pycache__/ant.cpython-311.pyc",
        "docs/openapi.json",  # not *_openapi.json
        "attic/20260101T000000Z/old_openapi.json",  # already put away
        ".git/objects/x_openapi.json",
    )
    result = check_fs(root, ["madre", "tests", "hormiguero", "docs", "attic"])
    assert [(s["path"], s["kind"]) for s in result["stray_files"]] == [
        ("hormiguero/core/__pycache__", "pycache"),
        ("madre/madre_openapi.json", "openapi"),
        ("tests/e2e/functional_flow_results.json", "flow_results"),
    ]
    assert result["stray_files"][0]["bytes"] == 2  # the folder's files, not walked into as more strays
    assert result["counts"]["stray"] == 3 and "3 stray generated file(s)" in result["findings"][-1]


def test_symlinks_are_listed_never_followed(tmp_path):
    outside = make(tmp_path / "outside", "big_openapi.json", "deep/__pycache__/x.pyc", "madre/")
    root = make(tmp_path / "root", "docs/")
    (root / "madre").symlink_to(outside / "madre")  # a symlinked allowed root is not present
    (root / "linked").symlink_to(outside)
    (root / "docs/link_openapi.json").symlink_to(outside / "big_openapi.json")
    result = check_fs(root, ["madre", "docs"])
    assert result["missing_roots"] == ["madre"] and result["present_roots"] == ["docs"]
    assert result["extra_roots"] == ["linked"]
    assert [(s["path"], s["symlink"]) for s in result["stray_files"]] == [("docs/link_openapi.json", True)]


def test_a_symlinked_root_is_nv(tmp_path):
    real = make(tmp_path / "real", "madre/")
    (tmp_path / "link").symlink_to(real)
    assert check_fs(tmp_path / "link", ["madre"])["Orden_fs_pct"] == "NV"


def test_the_demo_tree(settings, tmp_path):
    create_target_tree(tmp_path / "vx11", git=False)
    result = check_fs(tmp_path / "vx11", settings.VX11_FS_ALLOWED_ROOTS)
    allowed = len(settings.VX11_FS_ALLOWED_ROOTS)
    assert result["extra_roots"] == [EXTRA_ROOT]
    assert result["Orden_fs_pct"] == round(100 * allowed / (allowed + 1), 2)
    assert [s["path"] for s in result["stray_files"]] == sorted(STRAYS)
