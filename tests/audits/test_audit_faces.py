"""The faces of audits: the API (202 + run URL, bounded wait, permissions, read-only keys, the latest map, the
ownership rules), the CLI's exit codes and JSON, the admin's pages, and the nightly beat entry."""

import json
import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from apps.accounts.models import ApiKey
from apps.audits.models import AuditRun, OwnershipRule
from apps.audits.runner import run_now
from apps.fleet.models import Module
from tests.audits.helpers import broken_foreign_key, clean_target, fingerprint
from tests.helpers import ROOT, celery_sends_to, database_url_of_test_db, give


@pytest.fixture
def auditor_api(auditor):
    return Client(headers={"Authorization": f"Bearer {ApiKey.issue(auditor, 'audits rw')[1]}"})


def test_running_an_audit_answers_202_with_the_run_to_poll(audit_env, auditor_api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as sent:  # not executed: no worker here
        response = auditor_api.post("/api/audits", {"kind": "db"}, content_type="application/json")
    assert response.status_code == 202, response.content
    run = AuditRun.objects.get()
    assert response.json() == {"id": run.id, "kind": "db", "status": "queued", "url": f"/api/audits/{run.id}"}
    assert len(sent) == 1
    polled = auditor_api.get(response.json()["url"]).json()
    assert (polled["status"], polled["trigger"], polled["all_findings"]) == ("queued", "api", [])


@pytest.mark.django_db(transaction=True)
def test_waiting_returns_the_finished_run(audit_env, auditor_api, eager_celery):
    broken_foreign_key(audit_env / "vx11.db")
    response = auditor_api.post("/api/audits?wait=10", {"kind": "db"}, content_type="application/json")
    assert response.status_code == 200, response.content
    run = response.json()
    assert run["status"] == "findings"
    assert run["result"]["checks"]["foreign_key_check"]["count"] == 2
    assert run["all_findings"][0]["check"] == "foreign_key_check"
    assert run["evidence_path"].startswith("docs/audit/")


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_broker_is_a_503_and_an_error_run(audit_env, auditor_api):
    with celery_sends_to("redis://127.0.0.1:1/0", "nowhere"):
        response = auditor_api.post("/api/audits", {"kind": "db"}, content_type="application/json")
    assert response.status_code == 503
    assert "could not be queued: the Celery broker is unreachable" in response.json()["detail"]
    assert response["Retry-After"] == "30"
    assert AuditRun.objects.get().status == "error"


def test_writes_need_the_permission_and_a_read_write_key(audit_env, plain_key, readonly_key, auditor_api):
    run_now("db")
    for key, status, words in (
        (readonly_key, 403, "is read-only"),
        (plain_key, 403, "running an audit needs the permission audits.run_audit; user 'plain'"),
    ):
        client = Client(headers={"Authorization": f"Bearer {key}"})
        response = client.post("/api/audits", {"kind": "db"}, content_type="application/json")
        assert response.status_code == status
        assert words in response.json()["detail"]
        assert client.get("/api/audits").status_code == 200  # reading is for any key
        rule = {"module": "madre", "pattern": "x_*"}
        assert client.post("/api/audits/rules", rule, content_type="application/json").status_code == 403
    assert AuditRun.objects.count() == 1
    assert Client().get("/api/audits").status_code == 401


def test_bad_input_is_a_4xx(audit_env, auditor_api):
    post = auditor_api.post
    assert post("/api/audits", {"kind": "everything"}, content_type="application/json").status_code == 422
    assert post("/api/audits?wait=-1", {"kind": "db"}, content_type="application/json").status_code == 422
    assert auditor_api.get("/api/audits/999999").status_code == 404
    assert auditor_api.get("/api/audits/map").json() == {"detail": "no DB map yet: run an audit of kind map or all"}


def test_list_and_read_runs_and_the_latest_map(audit_env, owners, auditor_api):
    clean_target(audit_env / "vx11.db")
    run_now("db")
    mapped = run_now("map", approx=True)
    listing = auditor_api.get("/api/audits?kind=map").json()
    assert listing["count"] == 1
    assert listing["items"][0]["id"] == mapped.id
    assert listing["items"][0]["findings"] == 1  # the unowned tables
    current = auditor_api.get("/api/audits/map").json()
    assert current["run_id"] == mapped.id
    assert current["integrity"] == "ok"
    assert current["Orden_db_module_assignment_pct"] == 90.6
    assert current["unowned"] == ["deprecated_metrics", "old_routing_rules", "scratch_notes"]
    daughters = next(t for t in current["tables"] if t["table"] == "daughters")
    assert (daughters["module"], daughters["status"], daughters["rows_approximate"]) == ("spawner", "ACTIVE", True)
    assert daughters["foreign_keys"][0]["table"] == "daughter_tasks"
    scratch = next(t for t in current["tables"] if t["table"] == "scratch_notes")
    assert scratch["module"] is None


def test_ownership_rules_crud(audit_env, owners, auditor, auditor_api):
    give(auditor, "audits.add_ownershiprule", "audits.change_ownershiprule", "audits.delete_ownershiprule")
    post = auditor_api.post
    created = post("/api/audits/rules", {"module": "operator", "pattern": "scratch_*"}, content_type="application/json")
    assert created.status_code == 201, created.content
    rule = created.json()
    assert (rule["module"], rule["pattern"]) == ("operator", "scratch_*")
    again = post("/api/audits/rules", {"module": "madre", "pattern": "scratch_*"}, content_type="application/json")
    assert again.status_code == 409
    bad = post("/api/audits/rules", {"module": "madre", "pattern": "a * b"}, content_type="application/json")
    assert bad.status_code == 422
    assert "pattern" in bad.json()["detail"]
    nobody = post("/api/audits/rules", {"module": "nobody", "pattern": "q"}, content_type="application/json")
    assert nobody.json()["detail"] == "module: no module with slug 'nobody'"
    url = f"/api/audits/rules/{rule['id']}"
    changed = auditor_api.put(url, {"module": "madre", "pattern": "scratch_notes"}, content_type="application/json")
    assert changed.json()["module"] == "madre"
    assert auditor_api.get("/api/audits/rules?module=madre").json()["count"] >= 1
    assert auditor_api.delete(url).status_code == 204
    assert not OwnershipRule.objects.filter(pattern="scratch_notes").exists()
    assert auditor_api.get(url).status_code == 404


def test_cli_exit_codes_and_json(audit_env, owners, auditor, capsys):
    path = clean_target(audit_env / "vx11.db")
    call_command("vx11_audit", "db", "--json", "--as", "auditor")
    printed = json.loads(capsys.readouterr().out)
    assert printed["checks"] == {"quick_check": "ok", "integrity_check": "ok", "foreign_key_check": "ok"}
    assert printed["exit_code"] == 0
    broken_foreign_key(path)
    with pytest.raises(SystemExit) as ended:
        call_command("vx11_audit", "db", "--json", "--as", "auditor")
    assert ended.value.code == 1
    assert json.loads(capsys.readouterr().out)["checks"]["foreign_key_check"]["count"] == 2
    with pytest.raises(SystemExit) as ended:
        call_command("vx11_audit", "map", "--approx", "--as", "auditor")
    assert ended.value.code == 1
    out = capsys.readouterr().out
    assert "Orden_db_module_assignment_pct 90.6" in out
    assert "rows (approximate)" in out


def test_cli_error_and_refusal_exit_2(audit_env, auditor, settings, tmp_path, django_user_model):
    clean_target(audit_env / "vx11.db")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the evidence root should be")
    settings.VX11_EVIDENCE_ROOT = blocked
    with pytest.raises(SystemExit) as ended:
        call_command("vx11_audit", "db", "--as", "auditor")
    assert ended.value.code == 2
    run = AuditRun.objects.get()
    assert run.status == "error"
    assert "evidence not written" in run.error
    django_user_model.objects.create_user("nobody")
    with pytest.raises(CommandError, match="running an audit needs the permission audits.run_audit") as refused:
        call_command("vx11_audit", "db", "--as", "nobody")
    assert refused.value.returncode == 2


def test_the_vx11_dispatcher_knows_audit_and_demo_db(audit_env, capsys):
    call_command("vx11_demo_db", "--rows", "500", "--tables", "40", "--path", str(audit_env / "demo.db"), "--json")
    made = json.loads(capsys.readouterr().out)
    assert (made["tables"], made["rows"]) == (40, 500)
    from vx11_site.management.commands.vx11 import command_name, verbs

    assert {"audit", "demo-db"} <= set(verbs())
    assert command_name("demo-db") == "vx11_demo_db"


def test_admin_pages(audit_env, owners, superuser_client):
    clean_target(audit_env / "vx11.db")
    run = run_now("map")
    runs = superuser_client.get("/admin/audits/auditrun/")
    assert runs.status_code == 200
    assert b"Run an audit" in runs.content
    page = superuser_client.get(f"/admin/audits/auditrun/{run.id}/change/")
    assert page.status_code == 200
    assert b"table(s) without an owning module" in page.content
    assert b"first map of this target" in page.content
    latest = superuser_client.get("/admin/audits/maptable/")
    assert latest.status_code == 302 and f"run__id__exact={run.id}" in latest["Location"]
    table = superuser_client.get(latest["Location"] + "&o=4")  # sorted by rows
    assert table.status_code == 200
    assert table.content.count(b"vx11-unowned") == 3
    assert superuser_client.get("/admin/audits/ownershiprule/").status_code == 200
    form = superuser_client.get("/admin/audits/auditrun/run/")
    assert form.status_code == 200
    assert b'data-action="run-audit"' in form.content
    queued = superuser_client.post("/admin/audits/auditrun/run/", {"kind": "db"})
    assert queued.status_code == 302
    assert AuditRun.objects.filter(trigger="admin", status="queued").count() == 1


def test_admin_run_needs_the_permission(audit_env, django_user_model):
    user = django_user_model.objects.create_user("viewer2", password="x", is_staff=True)
    give(user, "audits.view_auditrun")
    client = Client()
    client.force_login(user)
    assert b"Run an audit" not in client.get("/admin/audits/auditrun/").content
    assert client.post("/admin/audits/auditrun/run/", {"kind": "db"}).status_code == 403
    assert not AuditRun.objects.exists()


def test_the_nightly_entry_audits_everything(audit_env, owners, settings):
    from apps.audits.tasks import nightly_audit
    from vx11_site.schedules import SCHEDULES

    entry = next(s for s in SCHEDULES if s.task == "apps.audits.tasks.nightly_audit")
    assert entry.crontab is not None
    clean_target(audit_env / "vx11.db")
    settings.VX11_ROOT.mkdir()
    summary = nightly_audit()
    run = AuditRun.objects.get(id=summary["run_id"])
    assert (run.kind, run.trigger) == ("all", "beat")
    assert Module.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_cli_as_its_own_process(audit_env, auditor, settings, tmp_path):
    """`manage.py vx11 audit` through the dispatcher, in a process of its own on the test database: exit 1 and
    the JSON for a broken foreign key, and the target left as it was."""
    path = broken_foreign_key(audit_env / "vx11.db")
    before = fingerprint(path)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "vx11_site.settings",
        "DATABASE_URL": database_url_of_test_db(),
        "VX11_VAR_DIR": str(tmp_path),
        "VX11_AUDIT_ALLOWED_ROOTS": str(audit_env),
        "VX11_TARGET_DB": str(path),
        "VX11_EVIDENCE_ROOT": str(settings.VX11_EVIDENCE_ROOT),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "vx11", "audit", "db", "--json", "--as", "auditor"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    printed = json.loads(done.stdout)
    assert printed["checks"]["foreign_key_check"]["count"] == 2
    assert printed["status"] == "findings"
    assert fingerprint(path) == before
    assert AuditRun.objects.get().trigger == "cli"
