"""Every formula against hand-computed numbers: the pure formulas over hand-built inputs (tests/metrics/helpers.py),
the gate, NV inputs, stale evidence, weights that do not sum to 1; and the gathering of inputs from real rows.

The numbers of `good_inputs()`, worked out by hand:
  health 5/5 = 100; contract 3 passed / 4 run = 75 (D never ran); tests 96 / (96 + 3 + 1) = 96; db 100;
  Estabilidad 0.35*100 + 0.30*96 + 0.25*75 + 0.10*100 = 35 + 28.8 + 18.75 + 10 = 92.55;
  Orden_db 17/20 = 85; Orden_fs 24 / (26 + 2) = 85.71; routing 4750/5000 = 95;
  Automatizacion 25 + 25 + 0 (unit run failed) + 25 = 75; Autonomia NV (no pipeline run);
  coverage overall 9/10 = 90, strict 8/10 = 80 (Estabilidad is derived);
  global (100 + 75 + 96 + 100 + 92.55 + 85 + 85.71 + 95 + 75) / 9 = 804.26 / 9 = 89.36;
  verdict OPERATIONAL (92.55 >= 75, 80 >= 50, 100 >= 90).
"""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps.fleet.models import Module
from apps.fleet.reference import reference_rows
from apps.flows.models import Flow, FlowRun
from apps.metrics import definitions
from apps.metrics.definitions import evaluate, stability_weights, verdict
from apps.metrics.models import TestRun
from apps.simfleet.target_db import create_target_db
from tests.helpers import ROOT
from tests.metrics.helpers import NOW, at, good_inputs, run_summary


def values(results: dict) -> dict:
    return {name: r["value"] for name, r in results.items()}


def test_every_formula_hand_computed():
    results = evaluate(good_inputs())
    assert values(results) == {
        "health_core_pct": 100.0,
        "contract_coherence_pct": 75.0,
        "tests_p0_pct": 96.0,
        "db_integrity_pct": 100.0,
        "Estabilidad_operativa_pct": 92.55,
        "Orden_db_module_assignment_pct": 85.0,
        "Orden_fs_pct": 85.71,
        "Coherencia_routing_pct": 95.0,
        "Automatizacion_pct": 75.0,
        "Autonomia_pct": None,
        "evidence_coverage_pct": 90.0,
        "Global_ponderado_pct": 89.36,
    }
    statuses = {name: r["status"] for name, r in results.items()}
    assert statuses["contract_coherence_pct"] == "fail"  # under its pass mark of 100
    assert statuses["tests_p0_pct"] == "fail"
    assert statuses["Autonomia_pct"] == "NV"
    assert statuses["Estabilidad_operativa_pct"] == "ok"
    assert results["Autonomia_pct"]["reason"] == "no pipeline run recorded"
    assert results["tests_p0_pct"]["calculation"] == "96 passed ÷ (96 passed + 4 failed or errored) × 100 = 96"
    assert results["contract_coherence_pct"]["calculation"] == "3 flows passed ÷ 4 flows run × 100 = 75"
    assert results["contract_coherence_pct"]["details"]["never_run"] == ["D"]
    assert results["Estabilidad_operativa_pct"]["calculation"] == "0.35×100 + 0.3×96 + 0.25×75 + 0.1×100 = 92.55"
    assert results["Orden_fs_pct"]["calculation"] == "24 present ÷ (26 allowed + 2 extra) × 100 = 85.71"
    assert results["Automatizacion_pct"]["calculation"] == (
        "25 (db_map_fresh) + 25 (previous_scorecard_complete) + 0 (unit_tests_passed) + 25 (integration_tests_passed)"
        " = 75"
    )
    coverage = results["evidence_coverage_pct"]["details"]
    assert coverage["coverage_overall"]["value"] == 90.0
    assert coverage["coverage_strict"]["value"] == 80.0
    assert coverage["coverage_strict"]["count"] == 8
    assert coverage["unverified"] == ["Autonomia_pct"]
    assert results["Global_ponderado_pct"]["details"]["count"] == 9
    assert results["Global_ponderado_pct"]["details"]["left_out"] == ["Autonomia_pct"]
    status, logic = verdict(results)
    assert status == "OPERATIONAL"
    assert logic["Estabilidad_value"] == 92.55
    assert logic["all_flows_pass"] is False
    assert logic["db_integrity_status"] == "ok"


def test_gate_integrity_check_failed_makes_stability_0_and_fail():
    gathered = good_inputs()
    gathered["metrics"]["db_integrity_pct"]["checks"]["integrity_check"] = "failed"
    results = evaluate(gathered)
    assert results["db_integrity_pct"]["value"] == 0.0
    assert results["db_integrity_pct"]["status"] == "fail"
    stability = results["Estabilidad_operativa_pct"]
    assert stability["value"] == 0.0
    assert stability["status"] == "fail"
    assert stability["reason"] == "gated: the database's integrity_check failed"
    assert stability["calculation"] == "gate: integrity_check is failed, not ok: 0"
    assert verdict(results)[0] == "CRITICAL"


def test_gate_without_any_audit_is_0_not_the_weighted_sum():
    gathered = good_inputs()
    gathered["metrics"]["db_integrity_pct"] = {"audit": None, "checks": {}, "integrity": None, "observed_at": None}
    results = evaluate(gathered)
    assert results["db_integrity_pct"]["value"] is None
    assert results["db_integrity_pct"]["status"] == "NV"
    assert results["Estabilidad_operativa_pct"]["value"] == 0.0
    assert "was not verified" in results["Estabilidad_operativa_pct"]["reason"]


def test_skipped_integrity_check_is_nv_not_100():
    gathered = good_inputs()
    gathered["metrics"]["db_integrity_pct"]["checks"]["quick_check"] = "NV"
    results = evaluate(gathered)
    assert results["db_integrity_pct"]["value"] is None
    assert results["db_integrity_pct"]["reason"] == "quick_check skipped or absent in audit #12"
    # integrity_check itself is ok, so the gate is open, but an NV input makes the sum NV
    assert results["Estabilidad_operativa_pct"]["value"] is None
    assert results["Estabilidad_operativa_pct"]["reason"] == "NV inputs: db_integrity_pct"


def test_nv_input_makes_stability_nv_never_0():
    gathered = good_inputs()
    gathered["metrics"]["tests_p0_pct"] = {"run": None, "observed_at": None, "evidence": []}
    results = evaluate(gathered)
    assert results["tests_p0_pct"]["status"] == "deferred"
    assert results["tests_p0_pct"]["value"] is None
    assert results["tests_p0_pct"]["reason"] == "no unit test run stored yet (upload a report)"
    stability = results["Estabilidad_operativa_pct"]
    assert stability["value"] is None
    assert stability["status"] == "NV"
    assert stability["calculation"] == (
        "0.35×100 + 0.3×NV + 0.25×75 + 0.1×100: NV (an NV input makes the sum NV; it is never counted as 0)"
    )
    # coverage: 10 metrics, Autonomia, tests and Estabilidad unverified: 7/10; strict the same (Estabilidad NV)
    assert results["evidence_coverage_pct"]["value"] == 70.0
    assert results["evidence_coverage_pct"]["details"]["coverage_strict"]["value"] == 70.0
    # global: (100 + 75 + 100 + 85 + 85.71 + 95 + 75) / 7 = 615.71 / 7 = 87.96
    assert results["Global_ponderado_pct"]["value"] == 87.96
    assert results["Global_ponderado_pct"]["details"]["count"] == 7
    # NV Estabilidad meets no threshold
    assert verdict(results)[0] == "CRITICAL"


def test_stale_evidence_is_nv_stale_not_the_old_number():
    gathered = good_inputs()
    gathered["metrics"]["health_core_pct"]["observed_at"] = at(46)  # bound: 3 probe intervals = 45 s
    results = evaluate(gathered)
    assert results["health_core_pct"]["value"] is None
    assert results["health_core_pct"]["status"] == "NV"
    assert results["health_core_pct"]["reason"].startswith("stale: the evidence is from ")
    assert "46 s old, over its 45 s bound" in results["health_core_pct"]["reason"]
    gathered["metrics"]["health_core_pct"]["observed_at"] = at(45)  # exactly at the bound: still fresh
    assert evaluate(gathered)["health_core_pct"]["value"] == 100.0


def test_freshness_bound_is_configurable_per_metric(metrics_env, settings):
    settings.VX11_METRIC_MAX_AGE_SECONDS = {"tests_p0_pct": 60}
    TestRun.objects.create(kind="unit", passed=5, source="junit", created_at=NOW - timedelta(seconds=61))
    results = definitions.compute(now=NOW)
    assert results["tests_p0_pct"]["inputs"]["max_age_seconds"] == 60
    assert results["tests_p0_pct"]["status"] == "NV"
    assert "61 s old, over its 60 s bound" in results["tests_p0_pct"]["reason"]


def test_weights_must_sum_to_one(settings):
    with pytest.raises(ImproperlyConfigured, match="sum to 1"):
        stability_weights({"health": 0.4, "tests": 0.3, "contract": 0.25, "db": 0.1})
    with pytest.raises(ImproperlyConfigured, match="must name exactly"):
        stability_weights({"health": 0.5, "tests": 0.5})
    settings.VX11_METRIC_WEIGHTS = {"health": 0.5, "tests": 0.3, "contract": 0.25, "db": 0.1}
    with pytest.raises(ImproperlyConfigured):
        definitions.gather(NOW)
    gathered = good_inputs()
    gathered["metrics"]["Estabilidad_operativa_pct"]["weights"]["db"] = 0.2  # a stored input that sums to 1.1
    with pytest.raises(ImproperlyConfigured):
        evaluate(gathered)


def test_settings_refuse_weights_that_do_not_sum_to_one():
    env = {"VX11_METRIC_WEIGHTS": "health=0.5,tests=0.3,contract=0.25,db=0.1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", "import vx11_site.settings"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "VX11_METRIC_WEIGHTS must give health, tests, contract and db weights summing to 1" in done.stderr


def test_other_weights_change_the_sum():
    gathered = good_inputs()
    gathered["metrics"]["Estabilidad_operativa_pct"]["weights"] = {
        "health": 0.25,
        "tests": 0.25,
        "contract": 0.25,
        "db": 0.25,
    }
    # 25 + 24 + 18.75 + 25 = 92.75
    assert evaluate(gathered)["Estabilidad_operativa_pct"]["value"] == 92.75


def test_tests_p0_is_passed_over_passed_plus_failed_never_plus_10():
    gathered = good_inputs()
    gathered["metrics"]["tests_p0_pct"]["run"] = run_summary(9, 3)
    # the real system's passed/(passed+10) would say 23.08
    assert evaluate(gathered)["tests_p0_pct"]["value"] == 100.0
    gathered["metrics"]["tests_p0_pct"]["run"] = run_summary(9, 0, skipped=4)
    outcome = evaluate(gathered)["tests_p0_pct"]
    assert outcome["status"] == "deferred"
    assert outcome["reason"] == "test run #9 has no passed or failed test"


def test_automation_is_the_sum_not_the_sum_over_4():
    gathered = good_inputs()
    gathered["metrics"]["Automatizacion_pct"]["unit"] = run_summary(10, 12)
    assert evaluate(gathered)["Automatizacion_pct"]["value"] == 100.0  # the real bug would say 25
    gathered["metrics"]["Automatizacion_pct"]["map_at"] = at(86400)  # a day old: no longer "younger than a day"
    gathered["metrics"]["Automatizacion_pct"]["previous_complete"] = None  # no previous scorecard
    outcome = evaluate(gathered)["Automatizacion_pct"]
    assert outcome["value"] == 50.0
    assert outcome["reason"] == "not met: db_map_fresh, previous_scorecard_complete"


def test_health_counts_down_and_unregistered_modules_as_not_up():
    gathered = good_inputs()
    health = gathered["metrics"]["health_core_pct"]
    health["modules"]["hormiguero"]["state"] = "down"
    del health["modules"]["spawner"]
    outcome = evaluate(gathered)["health_core_pct"]
    assert outcome["value"] == 60.0  # 3 / 5
    assert outcome["status"] == "fail"
    assert outcome["reason"] == "not up: spawner (not registered), hormiguero (down)"


def test_degraded_verdict():
    gathered = good_inputs()
    gathered["metrics"]["health_core_pct"]["modules"]["switch"]["state"] = "degraded"  # 4/5 = 80
    gathered["metrics"]["tests_p0_pct"]["run"] = run_summary(7, 10, 90)  # 10 %
    results = evaluate(gathered)
    # 0.35*80 + 0.30*10 + 0.25*75 + 0.10*100 = 28 + 3 + 18.75 + 10 = 59.75
    assert results["Estabilidad_operativa_pct"]["value"] == 59.75
    status, logic = verdict(results)
    assert status == "DEGRADED"
    assert logic["health_services_check"] == "80 >= 90: False"


def test_routing_nv_reasons():
    gathered = good_inputs()
    gathered["metrics"]["Coherencia_routing_pct"].update(rows=None, complete=None, problem="no routing_events table")
    outcome = evaluate(gathered)["Coherencia_routing_pct"]
    assert (outcome["value"], outcome["status"], outcome["reason"]) == (None, "NV", "no routing_events table")


def test_autonomy_hook(monkeypatch):
    record = {"run": 4, "finished_at": NOW - timedelta(hours=1), "phases_total": 7, "phases_unattended": 6}
    monkeypatch.setattr(definitions, "_pipeline_source", lambda: record)
    inputs = definitions.gather_autonomy(NOW)
    assert inputs["phases_unattended"] == 6
    gathered = good_inputs()
    gathered["metrics"]["Autonomia_pct"] = {**inputs, "max_age_seconds": 172800}
    outcome = evaluate(gathered)["Autonomia_pct"]
    assert outcome["value"] == 85.71  # 6 / 7
    assert outcome["calculation"].startswith("6 phases completed with no human action ÷ 7 phases")


# --- gathering from real rows -------------------------------------------------------------------------


def test_gather_health_contract_tests_from_rows(metrics_env):
    for row in reference_rows():
        Module.objects.update_or_create(slug=row["slug"], defaults=row)
    Module.objects.filter(slug__in=["madre", "switch", "spawner", "hormiguero"]).update(
        state="up", last_checked_at=NOW - timedelta(seconds=20)
    )
    Module.objects.filter(slug="tentaculo_link").update(state="down", last_checked_at=NOW - timedelta(seconds=20))
    one = Flow.objects.create(name="one")
    two = Flow.objects.create(name="two")
    Flow.objects.create(name="off", enabled=False)
    FlowRun.objects.create(flow=one, status="failed", started_at=NOW - timedelta(hours=2), finished_at=NOW)
    FlowRun.objects.create(flow=one, status="passed", started_at=NOW - timedelta(hours=1), finished_at=NOW)
    FlowRun.objects.create(flow=two, status="failed", started_at=NOW - timedelta(hours=1), finished_at=NOW)
    FlowRun.objects.create(flow=two, status="running", started_at=NOW)  # unfinished: not the latest result
    TestRun.objects.create(kind="unit", passed=30, failed=2, source="junit", created_at=NOW - timedelta(hours=1))
    TestRun.objects.create(kind="unit", passed=1, failed=9, source="junit", created_at=NOW - timedelta(hours=5))
    results = definitions.compute(now=NOW)
    assert results["health_core_pct"]["value"] == 80.0  # 4 / 5
    assert results["health_core_pct"]["reason"] == "not up: tentaculo_link (down)"
    assert results["contract_coherence_pct"]["value"] == 50.0  # one passed, two failed
    assert results["tests_p0_pct"]["value"] == 93.75  # the newest run: 30 / 32
    assert results["Autonomia_pct"]["status"] == "NV"
    assert results["db_integrity_pct"]["reason"] == "no audit has checked the database"


def test_gather_health_nv_without_a_recent_round(metrics_env):
    for row in reference_rows():
        Module.objects.update_or_create(slug=row["slug"], defaults=row)
    Module.objects.update(state="up", last_checked_at=NOW - timedelta(minutes=5))
    outcome = definitions.compute(now=NOW)["health_core_pct"]
    assert outcome["status"] == "NV"
    assert outcome["reason"].startswith("stale")


def test_gather_routing_from_the_target_read_only(metrics_env, settings):
    import sqlite3
    from pathlib import Path

    target = Path(settings.VX11_TARGET_DB)
    assert definitions.compute(now=NOW)["Coherencia_routing_pct"]["reason"].startswith("target not readable")
    create_target_db(target, 300, seed=3)
    conn = sqlite3.connect(target)
    rows = conn.execute("SELECT count(*) FROM routing_events").fetchone()[0]
    conn.execute("UPDATE routing_events SET reason = '' WHERE id IN (1, 2)")
    conn.execute("UPDATE routing_events SET cost = NULL WHERE id = 3")
    conn.commit()
    outcome = definitions.compute(now=NOW)["Coherencia_routing_pct"]
    assert outcome["inputs"]["rows"] == rows
    assert outcome["inputs"]["complete"] == rows - 3
    assert outcome["value"] == round(100.0 * (rows - 3) / rows, 2)
    conn.execute("DROP TABLE routing_events")
    conn.commit()
    conn.close()
    outcome = definitions.compute(now=NOW)["Coherencia_routing_pct"]
    assert (outcome["status"], outcome["reason"]) == ("NV", "the target has no routing_events table")
