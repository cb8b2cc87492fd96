"""The faces of housekeeping: the API (permissions on every write, read-only keys read), the CLI's exit codes
and the admin's read-only rows with their restore button (POST, permission, CSRF)."""

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from apps.accounts.models import ApiKey
from apps.housekeeping.models import HousekeepingRun
from tests.housekeeping.helpers import snapshot, write

pytestmark = pytest.mark.django_db

RUNS = "/api/housekeeping/runs"
# the API and the CLI read the real clock: both of the demo tree's audit folders (a month and a day before its
# fixed date, 2026-03-01) are then over a week old, so 8 candidates, not the 7 of a run at the tree's own date
CANDIDATES = 8


def client_of(user, read_only: bool = False) -> Client:
    return Client(headers={"Authorization": f"Bearer {ApiKey.issue(user, 'hk', read_only=read_only)[1]}"})


def refusal(what: str, perm: str, user: str) -> str:
    return f"{what} needs the permission {perm}; user '{user}' does not have it"


def test_api_dry_run_apply_read_and_restore(tree, keeper):
    api = client_of(keeper)
    dry = api.post(RUNS, {}, content_type="application/json")
    assert dry.status_code == 201, dry.content
    assert dry.json()["applied"] is False and dry.json()["status"] == "ok" and len(dry.json()["moves"]) == CANDIDATES
    applied = api.post(RUNS, {"apply": True}, content_type="application/json").json()
    assert applied["applied"] and applied["attic_stamp"] and applied["evidence_path"]
    listed = api.get(RUNS).json()
    assert listed["count"] == 2 and [r["id"] for r in listed["items"]] == [applied["id"], dry.json()["id"]]
    assert api.get(f"{RUNS}?applied=false").json()["count"] == 1
    assert api.get(f"{RUNS}/{applied['id']}").json()["moves"] == applied["moves"]
    restored = api.post(f"{RUNS}/{applied['id']}/restore")
    assert restored.status_code == 200, restored.content
    assert restored.json()["status"] == "ok" and len(restored.json()["restored"]) == CANDIDATES
    again = api.post(f"/api/housekeeping/restore/{applied['attic_stamp']}")
    assert again.status_code == 409 and "restored already" in again.json()["detail"]
    assert api.post(f"{RUNS}/{dry.json()['id']}/restore").status_code == 409  # a dry run moved nothing
    assert api.post("/api/housekeeping/restore/20200101T000000Z").status_code == 404
    assert api.post("/api/housekeeping/restore/not-a-stamp").status_code == 422
    assert api.get(f"{RUNS}/999999").status_code == 404


def test_api_restore_conflict_names_the_paths(tree, keeper):
    api = client_of(keeper)
    applied = api.post(RUNS, {"apply": True}, content_type="application/json").json()
    write(tree.root, "functional_flow_results.json", "{}")
    answer = api.post(f"{RUNS}/{applied['id']}/restore")
    assert answer.status_code == 409
    assert answer.json()["conflicts"] == ["functional_flow_results.json"]


def test_api_writes_need_their_permissions(tree, runner_only, plain_key, django_user_model):
    before = snapshot(tree.root)
    api = client_of(runner_only)
    refused = api.post(RUNS, {"apply": True}, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["detail"] == refusal("applying housekeeping", "housekeeping.apply_housekeeping", "dryrunner")
    assert snapshot(tree.root) == before
    assert api.post(RUNS, {}, content_type="application/json").status_code == 201  # a dry run it may do
    plain = Client(headers={"Authorization": f"Bearer {plain_key}"})
    nothing = plain.post(RUNS, {}, content_type="application/json")
    assert nothing.status_code == 403
    assert nothing.json()["detail"] == refusal("a housekeeping run", "housekeeping.add_housekeepingrun", "plain")
    forensic = api.post("/api/housekeeping/archive-forensic")
    assert forensic.status_code == 403 and "housekeeping.apply_housekeeping" in forensic.json()["detail"]
    restore = api.post("/api/housekeeping/restore/20260301T120000Z")
    assert restore.status_code == 403 and "housekeeping.restore_housekeeping" in restore.json()["detail"]
    assert snapshot(tree.root) == before


def test_read_only_keys_read_and_never_write(tree, keeper):
    row = client_of(keeper).post(RUNS, {"apply": True}, content_type="application/json").json()
    viewer = client_of(keeper, read_only=True)
    assert viewer.get(RUNS).status_code == 200
    assert viewer.get(f"{RUNS}/{row['id']}").status_code == 200
    before = snapshot(tree.root)
    for path in (RUNS, f"{RUNS}/{row['id']}/restore", "/api/housekeeping/archive-forensic"):
        answer = viewer.post(path, {}, content_type="application/json")
        assert answer.status_code == 403 and "read-only" in answer.json()["detail"]
    assert snapshot(tree.root) == before


def test_api_refuses_bad_input_with_a_4xx(tree, keeper):
    api = client_of(keeper)
    assert api.post(RUNS, {"apply": True, "surprise": 1}, content_type="application/json").status_code == 422
    assert api.post(RUNS, {"paths": [""]}, content_type="application/json").status_code == 422
    assert api.post(RUNS, {"paths": ["x"] * 101}, content_type="application/json").status_code == 422
    assert api.get(f"{RUNS}?status=bogus").status_code == 422


def run_cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("vx11_housekeeping", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_cli_exit_codes(tree, keeper, runner_only):
    code, out, _ = run_cli("--as", "keeper")
    assert code == 0 and "would move" in out and f"dry run: {CANDIDATES} path(s)" in out
    code, out, _ = run_cli("--as", "keeper", "--path", "../x", "--json")
    assert code == 1 and json.loads(out)["refused"][0]["path"] == "../x"
    write(tree.root, "mcp/mcp_openapi.json", "{}")
    code, out, _ = run_cli("--as", "keeper", "--apply")
    assert code == 1 and "PROTECTED  mcp/mcp_openapi.json (excludes entry mcp/)" in out
    (tree.root / "mcp/mcp_openapi.json").unlink()
    with pytest.raises(CommandError, match="housekeeping.apply_housekeeping") as refused:
        run_cli("--as", "dryrunner", "--apply")
    assert refused.value.returncode == 2
    code, out, _ = run_cli("--as", "keeper", "--apply")
    assert code == 0 and "undo with `vx11 restore" in out
    stamp = HousekeepingRun.objects.filter(applied=True, status="ok").get().attic_stamp
    restore_out = io.StringIO()
    call_command("vx11_restore", stamp, "--as", "keeper", stdout=restore_out, stderr=io.StringIO())
    assert f"restored {CANDIDATES} path(s) from attic/{stamp}/" in restore_out.getvalue()
    with pytest.raises(SystemExit) as again:
        call_command("vx11_restore", stamp, "--as", "keeper", stdout=io.StringIO(), stderr=io.StringIO())
    assert again.value.code == 1


def test_cli_error_exit_code(settings, keeper, evidence_root, tmp_path):
    settings.VX11_ROOT = tmp_path / "missing"
    code, out, _ = run_cli("--as", "keeper")
    assert code == 2 and "missing" in out


def test_admin_lists_runs_read_only_and_restores_by_post(tree, keeper, admin_user):
    from apps.housekeeping import runner

    row = runner.run(keeper, apply=True, now=tree.now, via="api")
    admin = Client()
    admin.force_login(admin_user)
    listing = admin.get(reverse("admin:housekeeping_housekeepingrun_changelist"))
    assert listing.status_code == 200 and b'data-action="housekeeping-dry-run"' in listing.content
    page = admin.get(reverse("admin:housekeeping_housekeepingrun_change", args=[row.pk]))
    assert page.status_code == 200
    assert b'data-action="housekeeping-restore"' in page.content and b"operator_openapi.json" in page.content
    assert b'name="status"' not in page.content  # every field read-only
    assert admin.get(reverse("admin:housekeeping_housekeepingrun_add")).status_code == 403
    url = reverse("admin:housekeeping_housekeepingrun_restore", args=[row.pk])
    assert admin.get(url).status_code == 405
    assert admin.post(url).status_code == 302
    row.refresh_from_db()
    assert row.restored_at is not None and (tree.root / "operator_openapi.json").exists()
    page = admin.get(reverse("admin:housekeeping_housekeepingrun_change", args=[row.pk]))
    assert b'data-action="housekeeping-restore"' not in page.content  # restored: no second button


def test_admin_run_page_shows_the_root_and_the_protected_paths(tree, admin_user, settings):
    admin = Client()
    admin.force_login(admin_user)
    page = admin.get(reverse("admin:housekeeping_housekeepingrun_run"))
    assert page.status_code == 200
    assert str(tree.root).encode() in page.content and b"<code>switch/</code>" in page.content
    assert b'data-action="housekeeping-apply"' in page.content
    settings.VX11_CLEANUP_EXCLUDES = str(tree.root / "missing.txt")
    page = admin.get(reverse("admin:housekeeping_housekeepingrun_run"))
    assert b"cannot be read" in page.content
    assert admin.delete(reverse("admin:housekeeping_housekeepingrun_run")).status_code == 405


def test_admin_buttons_check_permission_and_csrf(tree, keeper, runner_only):
    from apps.housekeeping import runner

    row = runner.run(keeper, apply=True, now=tree.now)
    url = reverse("admin:housekeeping_housekeepingrun_restore", args=[row.pk])
    staff = Client()
    staff.force_login(runner_only)
    assert staff.post(url).status_code == 403  # no housekeeping.restore_housekeeping
    assert staff.post(reverse("admin:housekeeping_housekeepingrun_run"), {"apply": "1"}).status_code == 403
    checked = Client(enforce_csrf_checks=True)
    checked.force_login(keeper)
    assert checked.post(url).status_code == 403  # no CSRF token
    row.refresh_from_db()
    assert row.restored_at is None
    made = staff.post(reverse("admin:housekeeping_housekeepingrun_run"))  # a dry run it may do
    assert made.status_code == 302
    assert HousekeepingRun.objects.filter(via="admin", applied=False).count() == 1
