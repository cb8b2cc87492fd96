"""Phase 7's git mirror against real git remotes on tmp_path (bare repositories, a loopback HTTP remote)."""

import json
import os
import time

import bagit
import pytest

from apps.pipeline.mirror import MirrorError, mirror, shown_remote
from tests.pipeline.helpers import (
    bare_remote,
    files_on,
    git,
    header_recorder,
    is_ancestor,
    latest_files,
    push_from_elsewhere,
    silent_remote,
    text_on,
    tiny_bag,
)

TOKEN = "s3cret-mirror-token-7f1d"


def test_first_use_clones_commits_and_pushes_an_exact_copy(tmp_path):
    remote = bare_remote(tmp_path / "mirror.git")
    bag = tiny_bag(tmp_path / "audit", 1)
    latest = latest_files(tmp_path / "latest", 1)

    result = mirror(bag, latest, "pipeline run 1: evidence", repo=tmp_path / "clone", remote=str(remote))

    assert result.ok, result.log
    assert result.pushed, result.log
    assert len(result.commit) == 40
    assert result.pushed_commits == [result.commit]
    assert result.unpushed == []
    assert result.message == f"pushed 1 commit ({result.commit[:7]}) to {remote}"
    assert git("rev-parse", "main", cwd=remote).strip() == result.commit
    assert git("log", "-1", "--format=%s|%an <%ae>", "main", cwd=remote).strip() == (
        "pipeline run 1: evidence|VX11 Ops Portal <portal@localhost>"
    )
    held = files_on(remote)
    run = f"runs/{bag.name}"
    expected = {str(path.relative_to(bag)) for path in bag.rglob("*") if path.is_file()}
    assert {path.removeprefix(f"{run}/") for path in held if path.startswith(run)} == expected
    assert {"latest/PERCENTAGES.json", "latest/SCORECARD.json"} <= held
    assert json.loads(text_on(remote, "latest/SCORECARD.json")) == {"version": 1}
    # what the remote holds is a valid bag, as a person checking it out would find it
    check = tmp_path / "check"
    git("clone", "-q", str(remote), str(check))
    assert bagit.Bag(str(check / run)).validate()
    assert "$ git clone -q -- " in result.log
    assert "$ git push -q origin HEAD:refs/heads/main\n  exit 0" in result.log


def test_unreachable_remote_keeps_the_commit_and_the_next_call_pushes_both(tmp_path):
    missing = tmp_path / "missing.git"
    clone = tmp_path / "clone"
    bag1 = tiny_bag(tmp_path / "audit", 1)
    first = mirror(bag1, latest_files(tmp_path / "l1", 1), "run 1", repo=clone, remote=str(missing))

    assert not first.ok
    assert not first.pushed
    assert len(first.commit) == 40
    assert first.unpushed == [first.commit]
    assert first.pushed_commits == []
    assert first.message.startswith(f"push to {missing} failed: ")
    assert "1 commit kept locally" in first.message
    assert "starting an empty repository" in first.log

    bare_remote(missing)
    bag2 = tiny_bag(tmp_path / "audit", 2)
    second = mirror(bag2, latest_files(tmp_path / "l2", 2), "run 2", repo=clone, remote=str(missing))

    assert second.ok, second.log
    assert second.pushed, second.log
    assert second.pushed_commits == [first.commit, second.commit]
    assert second.unpushed == []
    assert "pushed 2 commits" in second.message
    held = files_on(missing)
    assert f"runs/{bag1.name}/bagit.txt" in held
    assert f"runs/{bag2.name}/bagit.txt" in held
    assert json.loads(text_on(missing, "latest/PERCENTAGES.json")) == {"version": 2}


def test_a_remote_that_moved_on_is_rebased_onto_without_force(tmp_path):
    remote = bare_remote(tmp_path / "mirror.git")
    clone = tmp_path / "clone"
    first = mirror(
        tiny_bag(tmp_path / "audit", 1), latest_files(tmp_path / "l1", 1), "run 1", repo=clone, remote=str(remote)
    )
    assert first.ok, first.log

    def change(other):
        (other / "latest" / "PERCENTAGES.json").write_text('{"version": "elsewhere"}\n')
        (other / "NOTES.md").write_text("pushed from another clone\n")

    theirs = push_from_elsewhere(remote, tmp_path / "other", change)
    bag2 = tiny_bag(tmp_path / "audit", 2)
    second = mirror(bag2, latest_files(tmp_path / "l2", 2), "run 2", repo=clone, remote=str(remote))

    assert second.ok, second.log
    assert second.pushed, second.log
    assert "(rebased onto origin/main)" in second.message
    assert second.pushed_commits == [second.commit]
    assert git("rev-parse", "main", cwd=remote).strip() == second.commit
    assert is_ancestor(remote, theirs)
    assert is_ancestor(remote, first.commit)
    held = files_on(remote)
    assert {"NOTES.md", f"runs/{bag2.name}/bagit.txt", "runs/20260101T000001Z_autonomy_pipeline_1/bagit.txt"} <= held
    assert json.loads(text_on(remote, "latest/PERCENTAGES.json")) == {"version": 2}  # latest/* takes ours
    assert "--force" not in second.log
    assert " -f " not in second.log


def test_a_rebase_that_cannot_resolve_is_aborted_and_the_commit_kept(tmp_path):
    remote = bare_remote(tmp_path / "mirror.git")
    clone = tmp_path / "clone"
    first = mirror(
        tiny_bag(tmp_path / "audit", 1), latest_files(tmp_path / "l1", 1), "run 1", repo=clone, remote=str(remote)
    )
    assert first.ok, first.log
    # deleted there, changed here: a conflict `-X theirs` does not settle
    theirs = push_from_elsewhere(
        remote, tmp_path / "other", lambda other: (other / "latest" / "PERCENTAGES.json").unlink()
    )

    second = mirror(
        tiny_bag(tmp_path / "audit", 2), latest_files(tmp_path / "l2", 2), "run 2", repo=clone, remote=str(remote)
    )

    assert not second.ok
    assert not second.pushed
    assert "rebase onto origin/main failed" in second.message
    assert second.unpushed == [second.commit]
    assert git("rev-parse", "main", cwd=remote).strip() == theirs
    assert not (clone / ".git" / "rebase-merge").exists()
    assert not (clone / ".git" / "rebase-apply").exists()
    assert git("status", "--porcelain", cwd=clone) == ""
    assert "$ git rebase --abort" in second.log


def test_nothing_changed_makes_no_commit(tmp_path):
    remote = bare_remote(tmp_path / "mirror.git")
    bag = tiny_bag(tmp_path / "audit", 1)
    latest = latest_files(tmp_path / "latest", 1)
    first = mirror(bag, latest, "run 1", repo=tmp_path / "clone", remote=str(remote))

    again = mirror(bag, latest, "run 1 again", repo=tmp_path / "clone", remote=str(remote))

    assert again.ok, again.log
    assert again.pushed, again.log
    assert again.commit == ""
    assert again.pushed_commits == []
    assert again.unpushed == []
    assert again.message == f"nothing new; {remote} is up to date at {first.commit[:7]}"
    assert git("rev-parse", "main", cwd=remote).strip() == first.commit


def test_symlinks_missing_latest_files_and_odd_names_are_skipped_and_said(tmp_path):
    remote = bare_remote(tmp_path / "mirror.git")
    bag = tiny_bag(tmp_path / "audit", 1)
    outside = tmp_path / "outside.txt"
    outside.write_text("not evidence\n")
    os.symlink(outside, bag / "data" / "link.txt")
    os.symlink(tmp_path, bag / "data" / "linked-folder")
    latest = {"PERCENTAGES.json": tmp_path / "gone.json", "../escape.json": outside}

    result = mirror(bag, latest, "run 1", repo=tmp_path / "clone", remote=str(remote))

    assert result.ok, result.log
    held = files_on(remote)
    assert not any("link" in path for path in held)
    assert not any(path.startswith("latest/") or "escape" in path for path in held)
    assert "# skipped data/link.txt: a symlink" in result.log
    assert "# skipped data/linked-folder/: a symlink" in result.log
    assert f"# latest/PERCENTAGES.json: {tmp_path / 'gone.json'} is missing; skipped" in result.log
    assert "# refused latest name '../escape.json'" in result.log


def test_credentials_in_the_url_and_an_unusable_repo_path_are_configuration_errors(tmp_path):
    bag = tiny_bag(tmp_path / "audit", 1)
    with pytest.raises(MirrorError, match="VX11_MIRROR_TOKEN") as caught:
        mirror(bag, {}, "m", repo=tmp_path / "clone", remote="https://ops:hunter2@git.example.invalid/e.git")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(MirrorError, match="no mirror remote"):
        mirror(bag, {}, "m", repo=tmp_path / "clone", remote="")
    with pytest.raises(MirrorError, match="Name <email>"):
        mirror(bag, {}, "m", repo=tmp_path / "clone", remote=str(tmp_path / "r.git"), author="nobody")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("someone's files\n")
    with pytest.raises(MirrorError, match="not empty and not a git repository"):
        mirror(bag, {}, "m", repo=busy, remote=str(bare_remote(tmp_path / "r.git")))
    assert sorted(path.name for path in busy.iterdir()) == ["notes.txt"]


def test_the_token_goes_as_a_header_and_is_never_logged_or_stored(tmp_path):
    clone = tmp_path / "clone"
    with header_recorder() as (url, seen):
        result = mirror(
            tiny_bag(tmp_path / "audit", 1),
            {},
            "run 1",
            repo=clone,
            remote=url,
            env={"VX11_MIRROR_TOKEN": TOKEN, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"},
        )

    assert not result.ok  # the recorder answers 404: nothing to clone or push to
    assert not result.pushed
    assert result.unpushed == [result.commit]
    assert f"Bearer {TOKEN}" in seen
    assert TOKEN not in result.log
    assert TOKEN not in result.message
    assert "$ git clone" in result.log
    assert "$ git push" in result.log
    assert TOKEN not in (clone / ".git" / "config").read_text()
    assert git("remote", "get-url", "origin", cwd=clone).strip() == url


def test_git_missing_or_too_slow_is_a_failed_result(tmp_path):
    bag = tiny_bag(tmp_path / "audit", 1)
    nogit = mirror(bag, {}, "m", repo=tmp_path / "clone", remote=str(tmp_path / "r.git"), env={"PATH": str(tmp_path)})
    assert not nogit.ok
    assert not nogit.pushed
    assert "git is not installed" in nogit.message

    with silent_remote() as url:
        started = time.monotonic()
        slow = mirror(bag, {}, "m", repo=tmp_path / "clone", remote=url, timeout=0.5)
    assert time.monotonic() - started < 5
    assert not slow.ok
    assert not slow.pushed
    assert slow.commit == ""
    assert "git clone timed out after 0.5 s" in slow.message
    assert not (tmp_path / "clone").exists()  # the killed clone's leftovers are gone; the next call starts over


def test_shown_remote_masks_userinfo():
    assert shown_remote("https://ops:pw@git.example.invalid/e.git") == "https://***@git.example.invalid/e.git"
    assert shown_remote("ssh://git@git.example.invalid/e.git") == "ssh://***@git.example.invalid/e.git"
    assert shown_remote("git@git.example.invalid:ops/e.git") == "***@git.example.invalid:ops/e.git"
    assert shown_remote("https://git.example.invalid/e.git") == "https://git.example.invalid/e.git"
    assert shown_remote("/srv/mirror.git") == "/srv/mirror.git"
