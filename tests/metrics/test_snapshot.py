"""Snapshots end to end on a real audit of a real target: the two files field by field, the rows, the bag and the
latest copies; recomputation that matches exactly; a tampered bag, a changed input file and a hand-edited
PERCENTAGES.json each caught by verify; the CLI's exit codes; trend, prune and the announcement."""

import hashlib
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.audits.runner import run_now
from apps.events.models import Event
from apps.evidence.bags import evidence_root
from apps.fleet.models import Module
from apps.fleet.reference import reference_rows
from apps.flows.models import Flow, FlowRun
from apps.metrics.models import MetricSnapshot, Scorecard, TestRun
from apps.metrics.snapshot import take_snapshot, verify_snapshot
from tests.audits.helpers import clean_target, corrupted_index
from tests.helpers import give

METRIC_KEYS = {"value", "status", "source", "evidence_path", "calculation", "details"}


@pytest.fixture
def world(metrics_env, settings):
    """Every core module up, an `all` audit of a clean target, a managed tree, a passed flow, two test runs."""
    clean_target(Path(settings.VX11_TARGET_DB), rows=600)
    root = Path(settings.VX11_ROOT)
    for name in ("madre", "switch", "docs", "junk"):
        (root / name).mkdir(parents=True)
    (root / "data" / "backups" / "archived").mkdir(parents=True)
    (root / "data" / "backups" / "one.db").write_text("x")
    (root / "data" / "backups" / "archived" / "old.db").write_text("x")
    now = timezone.now()
    for row in reference_rows():
        Module.objects.update_or_create(slug=row["slug"], defaults={**row, "state": "up", "last_checked_at": now})
    run_now("all", trigger="cli")
    for flow in Flow.objects.filter(enabled=True):  # the canonical flows A, B and C the migration loads
        FlowRun.objects.create(flow=flow, status="passed", started_at=now, finished_at=now)
    TestRun.objects.create(kind="unit", passed=50, failed=0, source="junit")
    TestRun.objects.create(kind="integration", passed=10, failed=0, source="pytest-json")
    return root


def bag_of(card: Scorecard) -> Path:
    return evidence_root() / card.evidence_path


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_files_field_by_field(world):
    card = take_snapshot(actor="tester")
    bag = bag_of(card)
    percentages = read(bag / "data" / "PERCENTAGES.json")
    scorecard = read(bag / "data" / "SCORECARD.json")
    inputs = read(bag / "data" / "inputs.json")
    assert set(percentages) == {
        "version",
        "generated_at",
        "outdir",
        "audit_context",
        "metrics",
        "metrics_flat",
        "autonomy_verdict",
        "validation_checksums",
    }
    assert percentages["version"] == "9.0"
    assert percentages["generated_at"] == card.generated_at.isoformat()
    assert percentages["outdir"] == card.evidence_path
    assert re.fullmatch(r"docs/audit/\d{8}T\d{6}Z_metrics_scorecard_\d+", card.evidence_path)
    context = percentages["audit_context"]
    assert set(context) == {"input_sources", "evidence_complete", "reason_incomplete"}
    assert context["evidence_complete"] is False
    assert context["reason_incomplete"] == "NV or deferred: Autonomia_pct"
    audit_file = next(s for s in context["input_sources"] if s["path"].endswith("audit_result.json"))
    assert audit_file["sha256"] == hashlib.sha256((evidence_root() / audit_file["path"]).read_bytes()).hexdigest()
    rows = {row.name: row for row in card.metrics.all()}
    assert len(rows) == 12
    assert set(percentages["metrics"]) == set(rows)
    for name, entry in percentages["metrics"].items():
        assert METRIC_KEYS <= set(entry)
        row = rows[name]
        assert entry["value"] == (row.value if row.value is not None else "NV")
        assert entry["status"] == row.status
        assert entry["calculation"] == row.calculation
        assert percentages["metrics_flat"][name] == entry["value"]
    assert set(percentages["metrics"]["Estabilidad_operativa_pct"]) >= {"weights", "inputs"}
    assert set(percentages["metrics"]["evidence_coverage_pct"]) >= {"coverage_strict", "coverage_overall"}
    assert percentages["metrics"]["Autonomia_pct"] == {
        "value": "NV",
        "status": "NV",
        "source": "pipeline: latest run",
        "evidence_path": "",
        "calculation": "no pipeline run",
        "reason": "no pipeline run recorded",
        "details": {},
    }
    assert percentages["autonomy_verdict"]["status"] == card.verdict
    assert percentages["autonomy_verdict"]["decision_logic"] == card.decision_logic
    assert percentages["validation_checksums"]["weights_sum"] == 1.0
    # the clean target: both checks ok, so db 100; core all up, tests 50/50, so health and tests 100
    assert rows["db_integrity_pct"].value == 100.0
    assert rows["health_core_pct"].value == 100.0
    assert rows["tests_p0_pct"].value == 100.0
    assert rows["Automatizacion_pct"].value == 75.0  # no previous scorecard yet

    assert set(scorecard) == {
        "generated_ts",
        "integrity",
        "total_tables",
        "total_rows",
        "db_size_bytes",
        "backup_db_count",
        "backups_archived_count",
        "percentages",
        "notes",
    }
    assert scorecard["generated_ts"] == card.generated_at.strftime("%Y%m%dT%H%M%SZ")
    assert scorecard["integrity"] == "ok"
    audit = inputs["facts"]
    assert scorecard["total_tables"] == audit["total_tables"] > 0
    assert scorecard["total_rows"] == audit["total_rows"] > 0
    assert scorecard["db_size_bytes"] == Path(settings.VX11_TARGET_DB).stat().st_size
    assert (scorecard["backup_db_count"], scorecard["backups_archived_count"]) == (1, 1)
    assert set(scorecard["percentages"]) == {
        "Orden_fs_pct",
        "Coherencia_routing_pct",
        "Automatizacion_pct",
        "Autonomia_pct",
        "Global_ponderado_pct",
    }
    assert scorecard["percentages"]["Autonomia_pct"] == "NV"
    assert scorecard["notes"] == ["Autonomia_pct: NV (no pipeline run recorded)"]

    latest = evidence_root() / "docs" / "audit"
    assert (latest / "PERCENTAGES.json").read_bytes() == (bag / "data" / "PERCENTAGES.json").read_bytes()
    assert (latest / "SCORECARD.json").read_bytes() == (bag / "data" / "SCORECARD.json").read_bytes()
    assert card.percentages_sha256 == hashlib.sha256((latest / "PERCENTAGES.json").read_bytes()).hexdigest()
    assert card.actor == "tester"
    event = Event.objects.filter(type="status_changed", data__source="metrics").get()
    assert event.data == {"source": "metrics", "scorecard": card.id, "verdict": card.verdict}


def test_recomputation_matches_exactly(world):
    card = take_snapshot()
    report = verify_snapshot(card)
    assert report["ok"] is True, report.get("error")
    assert [m["name"] for m in report["metrics"]] == list(
        MetricSnapshot.objects.filter(scorecard=card).values_list("name", flat=True)
    )
    assert all(m["match"] and m["stored"] == m["recomputed"] for m in report["metrics"])
    assert report["latest_files"] == {"checked": True, "PERCENTAGES.json": "same", "SCORECARD.json": "same", "ok": True}
    assert all(entry["match"] for entry in report["files"].values())


def test_tampered_bag_is_detected(world):
    card = take_snapshot()
    inputs_path = bag_of(card) / "data" / "inputs.json"
    inputs = read(inputs_path)
    inputs["metrics"]["tests_p0_pct"]["run"]["failed"] = 50  # someone "corrects" the evidence
    inputs_path.write_text(json.dumps(inputs, indent=2))
    report = verify_snapshot(card)
    assert report["ok"] is False
    assert report["evidence"][0]["state"] == "modified"
    assert {"file": "data/inputs.json", "problem": "modified", "why": "sha256 differs from the manifest"} in report[
        "evidence"
    ][0]["files"]
    wrong = {m["name"]: m for m in report["metrics"] if not m["match"]}
    assert wrong["tests_p0_pct"]["stored"] == {"value": 100.0, "status": "ok"}
    assert wrong["tests_p0_pct"]["recomputed"] == {"value": 50.0, "status": "fail"}  # 50 / (50 + 50)


def test_changed_input_evidence_is_detected(world):
    card = take_snapshot()
    source = next(s for s in read(bag_of(card) / "data" / "inputs.json")["context"]["input_sources"] if "sha256" in s)
    path = evidence_root() / source["path"]
    path.write_text(path.read_text().replace('"ok"', '"OK"', 1))
    report = verify_snapshot(card)
    assert report["ok"] is False
    changed = [e for e in report["evidence"] if e.get("what") == "an input file"]
    assert changed == [{"what": "an input file", "path": source["path"], "state": "modified", "ok": False}]


def test_hand_edited_percentages_is_detected(world):
    card = take_snapshot()
    latest = evidence_root() / "docs" / "audit" / "PERCENTAGES.json"
    data = read(latest)
    data["metrics_flat"]["Autonomia_pct"] = 100  # "100% autonomy" because a file says so
    latest.write_text(json.dumps(data, indent=2))
    report = verify_snapshot(card)
    assert report["ok"] is False
    assert all(m["match"] for m in report["metrics"])  # the snapshot itself is intact
    assert report["latest_files"] == {
        "checked": True,
        "PERCENTAGES.json": "differs",
        "SCORECARD.json": "same",
        "ok": False,
    }
    with pytest.raises(SystemExit) as done:
        call_command("vx11_metrics", "verify", "--latest")
    assert done.value.code == 1


def test_older_snapshot_does_not_own_the_latest_files(world):
    first = take_snapshot(now=timezone.now() - timedelta(minutes=5))
    take_snapshot()
    report = verify_snapshot(first)
    assert report["latest_files"]["checked"] is False
    assert report["ok"] is True


def test_integrity_gate_end_to_end(metrics_env, settings):
    corrupted_index(Path(settings.VX11_TARGET_DB))
    run_now("db", trigger="cli")
    card = take_snapshot()
    rows = {row.name: row for row in card.metrics.all()}
    assert (rows["db_integrity_pct"].value, rows["db_integrity_pct"].status) == (0.0, "fail")
    assert (rows["Estabilidad_operativa_pct"].value, rows["Estabilidad_operativa_pct"].status) == (0.0, "fail")
    assert rows["Estabilidad_operativa_pct"].reason == "gated: the database's integrity_check failed"
    assert read(bag_of(card) / "data" / "SCORECARD.json")["integrity"] == "integrity_check"
    assert card.verdict == "CRITICAL"
    assert verify_snapshot(card)["ok"] is True


def test_cli_exit_codes(world, capsys, django_user_model):
    with pytest.raises(CommandError) as refused:
        call_command("vx11_metrics", "verify", "--latest")
    assert refused.value.returncode == 2  # nothing to verify yet
    django_user_model.objects.create_user("nobody")
    with pytest.raises(CommandError) as refused:
        call_command("vx11_metrics", "--as", "nobody")
    assert refused.value.returncode == 2
    assert "metrics.add_scorecard" in str(refused.value)
    give(django_user_model.objects.create_user("metrician"), "metrics.add_scorecard")
    call_command("vx11_metrics", "--as", "metrician", "--json")
    computed = json.loads(capsys.readouterr().out)
    card = Scorecard.objects.get()
    assert computed["id"] == card.id
    assert computed["metrics"]["db_integrity_pct"]["value"] == 100.0
    call_command("vx11_metrics", "verify", str(card.id), "--json")  # no SystemExit: exit 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    call_command("vx11_metrics", "verify", "--all")
    assert f"scorecard #{card.id}: match" in capsys.readouterr().out
    with pytest.raises(CommandError) as missing:
        call_command("vx11_metrics", "verify", "999999")
    assert missing.value.returncode == 2
    (bag_of(card) / "data" / "SCORECARD.json").write_text("{}")
    with pytest.raises(SystemExit) as done:
        call_command("vx11_metrics", "verify", "--latest")
    assert done.value.code == 1
    out = capsys.readouterr().out
    assert f"scorecard #{card.id}: MISMATCH" in out
    assert "evidence modified" in out


def test_trend_and_prune(world, settings):
    now = timezone.now()
    old = take_snapshot(now=now - timedelta(days=100))
    middle = take_snapshot(now=now - timedelta(days=10))
    last = take_snapshot(now=now)
    points = Scorecard.trend("tests_p0_pct", days=30, now=now)
    assert [p[0] for p in points] == [middle.generated_at, last.generated_at]
    assert Scorecard.trend("Autonomia_pct", days=365, now=now)[0][1:] == (None, "NV")
    settings.VX11_METRICS_RETENTION_DAYS = 90
    assert Scorecard.prune(now=now) == 13  # rows deleted: the scorecard and its 12 metric rows
    assert not Scorecard.objects.filter(pk=old.pk).exists()
    assert not MetricSnapshot.objects.filter(scorecard_id=old.pk).exists()
    assert set(Scorecard.objects.values_list("pk", flat=True)) == {middle.pk, last.pk}
    assert settings.VX11_EVIDENCE_ROOT  # the bags stay: evidence rotation (apps.evidence) owns them
