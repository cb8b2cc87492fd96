"""The DB map: ownership (rules, prefixes, owned_tables, keywords, unowned), status, the percentage, the diff
between runs, and the real files (DB_SCHEMA_v7_FINAL.json, DB_MAP_v7_FINAL.md, DB_MAP_v7_META.txt)."""

import json

from apps.audits.models import AuditRun, MapTable, OwnershipRule
from apps.audits.ownership import Owners
from apps.audits.runner import run_now
from apps.evidence.bags import verify
from apps.fleet.models import Module
from tests.audits.helpers import add_table, clean_target, corrupted_index, fingerprint, no_tables

REAL_FIELDS = {"table", "columns", "foreign_keys", "rows", "status", "module"}


def mapped(run) -> dict[str, MapTable]:
    return {row.name: row for row in run.map_tables.all()}


def test_ownership_follows_rules_then_owned_tables_then_keywords(audit_env, owners):
    path = clean_target(audit_env / "vx11.db")
    before = fingerprint(path)
    run = run_now("map")
    assert fingerprint(path) == before
    tables = mapped(run)
    owner = {name: (row.module, row.owner_source) for name, row in tables.items()}
    assert owner["canonical_runs"][0] == "manifestator"  # an exact rule beats canonical_*
    assert owner["canonical_docs"][0] == "madre"
    assert owner["canonical_docs_legacy_20251101T000000Z"][0] == "madre"
    assert owner["daughter_attempts"][0] == "spawner"  # daughter_*
    assert owner["copilot_messages"][0] == "mcp"
    assert owner["events"][0] == "tentaculo_link"
    assert owner["shub_projects"][0] == "shub"  # seeded from shub's owned_tables (shub_*)
    assert owner["local_models_cache"] == ("hermes", "keyword")  # no rule: the word "models"
    assert owner["operator_sessions"][0] == "operator"
    unowned = sorted(name for name, (module, _) in owner.items() if not module)
    assert unowned == ["deprecated_metrics", "old_routing_rules", "scratch_notes"]
    assert run.result["map"]["unowned"] == unowned
    assert run.result["map"]["Orden_db_module_assignment_pct"] == round(100 * 29 / 32, 1)
    finding = run.findings.get(check_name="map")
    assert (finding.severity, finding.count, finding.lines) == ("warning", 3, unowned)


def test_status_empty_active_and_legacy_by_whole_words(audit_env, owners):
    clean_target(audit_env / "vx11.db")
    tables = mapped(run_now("map"))
    assert tables["canonical_registry"].status == "EMPTY (READY)"
    assert tables["daughters"].status == "ACTIVE"
    assert tables["old_routing_rules"].status == "LEGACY - preserved"
    assert tables["deprecated_metrics"].status == "LEGACY - preserved"  # empty, but legacy first
    assert tables["canonical_docs_legacy_20251101T000000Z"].status == "LEGACY - preserved"
    from apps.audits.dbmap import status_of

    assert status_of("threshold_rules", 5) == "ACTIVE"  # "old" inside a word is not a legacy mark
    assert status_of("folder_holders", 0) == "EMPTY (READY)"


def test_the_order_of_the_rules(owners):
    owners_now = Owners.load()
    assert owners_now.owner("canonical_runs")[0] == "manifestator"
    assert owners_now.owner("daughter_tasks")[0] == "spawner"
    assert owners_now.owner("client_sessions") == ("", "")  # "cli" only as a whole word
    assert owners_now.owner("cli_history") == ("hermes", owners_now.owner("cli_history")[1])
    shub = Module.objects.get(slug="shub")
    OwnershipRule.objects.filter(pattern="shub_*").delete()
    assert Owners.load().owner("shub_projects") == ("shub", "owned_tables of shub")  # the live module field
    shub.owned_tables = []
    shub.save()
    assert Owners.load().owner("shub_projects") == ("shub", "keyword")
    OwnershipRule.objects.create(module=Module.objects.get(slug="madre"), pattern="shub_projects")
    assert Owners.load().owner("shub_projects")[0] == "madre"  # a rule first


def test_the_real_files_at_the_evidence_root_and_in_the_bag(audit_env, owners, settings):
    clean_target(audit_env / "vx11.db")
    run = run_now("map")
    latest = settings.VX11_EVIDENCE_ROOT / "docs" / "audit"
    schema = json.loads((latest / "DB_SCHEMA_v7_FINAL.json").read_text())
    assert set(schema) == {"generated_at", "database", "tables"}
    assert schema["database"] == str(audit_env / "vx11.db")
    entry = next(t for t in schema["tables"] if t["table"] == "daughters")
    assert REAL_FIELDS <= set(entry)
    assert entry["columns"][1] == {
        "cid": 1,
        "name": "task_id",
        "type": "INTEGER",
        "notnull": 1,
        "dflt_value": None,
        "pk": 0,
    }
    assert entry["foreign_keys"][0]["table"] == "daughter_tasks"
    assert (entry["foreign_keys"][0]["from"], entry["foreign_keys"][0]["to"]) == ("task_id", "id")
    assert entry["module"] == "spawner"
    assert isinstance(entry["rows"], int)
    meta = (latest / "DB_MAP_v7_META.txt").read_text().splitlines()
    size = (audit_env / "vx11.db").stat().st_size
    assert meta == ["integrity:ok", "integrity_skipped:0", "integrity_timeout_secs:60", f"size_bytes:{size}"]
    markdown = (latest / "DB_MAP_v7_FINAL.md").read_text()
    assert "| scratch_notes | **UNOWNED** | ACTIVE |" in markdown
    bag = settings.VX11_EVIDENCE_ROOT / run.evidence_path
    assert verify(bag)["state"] == "valid"
    payload = bag / "data"
    for name in ("DB_SCHEMA_v7_FINAL.json", "DB_MAP_v7_FINAL.md", "DB_MAP_v7_META.txt", "DB_MAP_DIFF.json"):
        assert (payload / name).is_file(), name
    assert (payload / "DB_MAP_v7_META.txt").read_text() == (latest / "DB_MAP_v7_META.txt").read_text()
    assert json.loads((payload / "audit_result.json").read_text())["integrity"] == "ok"


def test_meta_names_the_failing_check_and_counts_skipped_ones(audit_env, owners, settings):
    corrupted_index(audit_env / "vx11.db")
    run_now("map")
    meta = (settings.VX11_EVIDENCE_ROOT / "docs" / "audit" / "DB_MAP_v7_META.txt").read_text()
    assert meta.splitlines()[:2] == ["integrity:integrity_check", "integrity_skipped:0"]
    run_now("map", timeout=0)
    meta = (settings.VX11_EVIDENCE_ROOT / "docs" / "audit" / "DB_MAP_v7_META.txt").read_text()
    assert meta.splitlines()[:3] == ["integrity:NV", "integrity_skipped:3", "integrity_timeout_secs:0"]


def test_approximate_counts_are_labelled_in_the_map(audit_env, owners, settings):
    clean_target(audit_env / "vx11.db")
    run = run_now("map", approx=True)
    assert all(row.rows_approx for row in run.map_tables.all())
    markdown = (settings.VX11_EVIDENCE_ROOT / "docs" / "audit" / "DB_MAP_v7_FINAL.md").read_text()
    assert "(approx.)" in markdown
    assert "Counts marked ~ are approximate" in markdown
    schema = json.loads((settings.VX11_EVIDENCE_ROOT / "docs" / "audit" / "DB_SCHEMA_v7_FINAL.json").read_text())
    assert all(t["rows_approximate"] for t in schema["tables"])


def test_no_tables_gives_nv_with_a_reason(audit_env, owners):
    no_tables(audit_env / "vx11.db")
    run = run_now("map")
    assert run.result["map"]["Orden_db_module_assignment_pct"] == "NV"
    assert run.result["map"]["reason"] == "the target has no tables"


def test_the_diff_against_the_previous_map(audit_env, owners):
    path = clean_target(audit_env / "vx11.db")
    first = run_now("map")
    assert first.diff["previous_run"] is None
    OwnershipRule.objects.create(module=Module.objects.get(slug="operator"), pattern="scratch_*")
    add_table(path, "spawns_archive_2025")
    second = run_now("map")
    assert second.diff == {
        "previous_run": first.id,
        "added": ["spawns_archive_2025"],
        "dropped": [],
        "owner_changed": [{"table": "scratch_notes", "from": None, "to": "operator"}],
    }
    assert run_now("db").diff == {}  # no map, no diff
    third = run_now("map")
    assert third.diff["previous_run"] == second.id
    assert third.diff["added"] == third.diff["dropped"] == third.diff["owner_changed"] == []


def test_fs_and_git_run_through_the_housekeeping_checks(audit_env, settings):
    settings.VX11_ROOT.mkdir()
    (settings.VX11_ROOT / "madre").mkdir()
    (settings.VX11_ROOT / "stray_openapi.json").write_text("{}")
    run = run_now("fs")
    assert run.result["fs"]["Orden_fs_pct"] != "NV"
    assert run.findings.filter(check_name="fs").exists()
    run = run_now("git")
    assert run.result["git"]["finding"] == "not a git repository"
    assert run.findings.get(check_name="git").message.startswith("not a git repository")
    assert run.status == AuditRun.Status.FINDINGS


def test_all_runs_every_part_into_one_bag(audit_env, owners, settings):
    clean_target(audit_env / "vx11.db")
    settings.VX11_ROOT.mkdir()
    run = run_now("all")
    assert {"checks", "counts", "map", "fs", "git"} <= set(run.result)
    payload = settings.VX11_EVIDENCE_ROOT / run.evidence_path / "data"
    assert {"fs_check.json", "git_check.json", "DB_SCHEMA_v7_FINAL.json", "findings.json"} <= {
        p.name for p in payload.iterdir()
    }
