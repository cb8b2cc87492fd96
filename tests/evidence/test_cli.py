"""`vx11 evidence verify PATH|--all` exits 0 when every bag is valid, 1 with findings (the file named), 2 for
an error; `reseal` and `rotate` act as a user with the permission."""

import json
import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.evidence.models import Evidence
from tests.evidence.helpers import TAMPERING, sample_bag
from tests.helpers import database_url_of_test_db

pytestmark = pytest.mark.django_db


def verify_cli(*args) -> tuple[int, str]:
    """call_command's exit code (SystemExit) and what it printed."""
    out, err = StringIO(), StringIO()
    try:
        call_command("vx11_evidence", "verify", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return exc.code, out.getvalue()
    return 0, out.getvalue()


def test_valid_bags_exit_0(evidence_root):
    rows = [sample_bag() for _ in range(2)]
    code, out = verify_cli("--all")
    assert code == 0
    assert out.splitlines() == [f"valid     {r.path}" for r in rows] + ["2 bag(s), 0 with findings"]
    assert verify_cli(rows[0].path) == (0, f"valid     {rows[0].path}\n")
    assert verify_cli(str(rows[0].folder()))[0] == 0  # absolute path too


@pytest.mark.parametrize("problem", ["modified", "missing", "extra"])
def test_a_tampered_bag_exits_1_with_the_file_named(evidence_root, problem):
    good, bad = sample_bag(), sample_bag()
    file = TAMPERING[problem](bad.folder())
    code, out = verify_cli("--all", "--json")
    assert code == 1
    results = {r["path"]: r for r in json.loads(out)}
    assert results[good.path]["state"] == "valid"
    assert results[bad.path]["state"] == problem
    assert results[bad.path]["files"][0]["file"] == file
    assert Evidence.objects.get(pk=bad.pk).state == problem

    code, out = verify_cli(bad.path)
    assert code == 1
    assert out.splitlines() == [f"{problem:<9} {bad.path}", f"          {file} {problem}"]


def test_a_flagged_bag_still_exits_1_after_it_checks_valid(evidence_root):
    row = sample_bag()
    (row.folder() / "data" / "result.json").write_text("x")
    assert verify_cli(row.path)[0] == 1
    original = row.folder() / "data" / "result.json"
    original.write_text('{"ok": true}\n')
    code, out = verify_cli(row.path)
    assert code == 1
    assert out.strip() == f"valid     {row.path}  (flagged modified until re-sealed)"


def test_errors_exit_2(evidence_root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for args, message in (
        ((), "give bag folders or --all"),
        (("--all", "x"), "give bag folders or --all"),
        ((str(outside),), "outside VX11_EVIDENCE_ROOT"),
        (("docs/audit/nothing_here",), "no evidence bag there"),
    ):
        with pytest.raises(CommandError, match=message) as caught:
            call_command("vx11_evidence", "verify", *args)
        assert caught.value.returncode == 2


def test_the_dispatcher_runs_it_as_a_process(evidence_root, transactional_db, settings):
    """`manage.py vx11 evidence verify` in its own process: exit code and output as an operator sees them."""
    row = sample_bag()
    TAMPERING["missing"](row.folder())
    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_test_db(),
        "VX11_EVIDENCE_ROOT": str(evidence_root),
        "VX11_VAR_DIR": str(evidence_root.parent / "var"),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "vx11", "evidence", "verify", row.path],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1, done.stderr
    assert "data/logs/run.log missing" in done.stdout


def test_reseal_needs_the_permission(evidence_root, django_user_model, grant):
    row = sample_bag()
    TAMPERING["extra"](row.folder())
    row.verify()
    clerk = django_user_model.objects.create_user("clerk")
    with pytest.raises(CommandError, match="evidence.reseal_evidence") as caught:
        call_command("vx11_evidence", "reseal", row.path, "--note", "ok", "--as", "clerk")
    assert caught.value.returncode == 2
    grant(clerk, "evidence.reseal_evidence")
    call_command("vx11_evidence", "reseal", row.path, "--note", "planted by the test", "--as", "clerk")
    row.refresh_from_db()
    assert (row.state, row.resealed_by, row.reseal_note) == ("valid", "clerk", "planted by the test")
    assert verify_cli(row.path)[0] == 0
