"""The metrics API: reading with any key (a read-only one too), computing behind metrics.add_scorecard (eagerly
here, and queued with a 202 when no worker answers), verifying behind metrics.view_scorecard, the trend of a
metric, and test-run reports (JUnit XML, pytest-json) behind metrics.add_testrun, bad ones a 422."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from apps.evidence.bags import evidence_root
from apps.metrics.models import Scorecard, TestRun
from apps.metrics.snapshot import take_snapshot

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites>
  <testsuite name="pytest" tests="12" failures="2" errors="1" skipped="3"></testsuite>
  <testsuite name="more" tests="5" failures="0" errors="0" skipped="0"></testsuite>
</testsuites>"""
PYTEST_JSON = json.dumps({"summary": {"passed": 40, "failed": 1, "error": 0, "skipped": 2, "total": 43}})


@pytest.fixture
def operator(api, grant):
    grant(get_user_model().objects.get(username="operator"), "metrics.add_scorecard", "metrics.view_scorecard")
    grant(get_user_model().objects.get(username="operator"), "metrics.add_testrun")
    return api


@pytest.fixture
def viewer(readonly_key):
    return Client(headers={"Authorization": f"Bearer {readonly_key}"})


@pytest.fixture
def plain(plain_key):
    return Client(headers={"Authorization": f"Bearer {plain_key}"})


def test_latest_is_404_before_any_scorecard(metrics_env, viewer):
    answer = viewer.get("/api/metrics")
    assert answer.status_code == 404
    assert answer.json()["detail"].startswith("no scorecard yet")


def test_read_latest_one_list_and_trend(metrics_env, viewer):
    now = timezone.now()
    first = take_snapshot(now=now - timedelta(days=2))
    last = take_snapshot(now=now)
    latest = viewer.get("/api/metrics").json()
    assert latest["id"] == last.id
    assert latest["verdict"] == last.verdict
    assert {m["name"] for m in latest["metrics"]} >= {"health_core_pct", "Global_ponderado_pct"}
    autonomy = next(m for m in latest["metrics"] if m["name"] == "Autonomia_pct")
    assert (autonomy["value"], autonomy["status"], autonomy["reason"]) == (None, "NV", "no pipeline run recorded")
    assert viewer.get(f"/api/metrics/scorecards/{first.id}").json()["id"] == first.id
    assert viewer.get("/api/metrics/scorecards/999999").status_code == 404
    listed = viewer.get("/api/metrics/scorecards").json()
    assert [c["id"] for c in listed["items"]] == [last.id, first.id]
    trend = viewer.get("/api/metrics/trend/tests_p0_pct?days=30").json()
    assert [p["status"] for p in trend["points"]] == ["deferred", "deferred"]
    assert viewer.get("/api/metrics/trend/tests_p0_pct?days=1").json()["points"][0]["status"] == "deferred"
    missing = viewer.get("/api/metrics/trend/nonsense_pct")
    assert missing.status_code == 404
    assert "the metrics are health_core_pct" in missing.json()["detail"]


def test_compute_needs_permission(metrics_env, plain, viewer):
    refused = plain.post("/api/metrics/compute")
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "computing the scorecard needs the permission metrics.add_scorecard; user 'plain' does not have it"
    )
    assert viewer.post("/api/metrics/compute").status_code == 403  # a read-only key never writes
    assert plain.post("/api/metrics/scorecards/1/verify").status_code == 403
    assert Scorecard.objects.count() == 0


def test_compute_eager_and_verify(metrics_env, operator, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    answer = operator.post("/api/metrics/compute?wait=5")
    assert answer.status_code == 200
    card = Scorecard.objects.get()
    assert answer.json()["id"] == card.id
    assert answer.json()["actor"] == "operator"
    verified = operator.post(f"/api/metrics/scorecards/{card.id}/verify")
    assert verified.status_code == 200
    assert verified.json()["ok"] is True
    (evidence_root() / "docs" / "audit" / "SCORECARD.json").write_text('{"integrity": "5000"}')
    report = operator.post(f"/api/metrics/scorecards/{card.id}/verify").json()
    assert report["ok"] is False
    assert report["latest_files"]["SCORECARD.json"] == "differs"


def test_compute_queued_answers_202(metrics_env, operator):
    answer = operator.post("/api/metrics/compute")  # no worker on the test's private queue: it waits there
    assert answer.status_code == 202
    body = answer.json()
    assert body["url"] == f"/api/metrics/compute/{body['task']}"
    state = operator.get(body["url"]).json()
    assert (state["state"], state["scorecard"]) == ("PENDING", None)
    assert operator.get("/api/metrics/compute/not-a-task!").status_code == 422


def test_compute_refuses_weights_that_do_not_sum_to_one(metrics_env, operator, settings):
    settings.VX11_METRIC_WEIGHTS = {"health": 0.9, "tests": 0.3, "contract": 0.25, "db": 0.1}
    answer = operator.post("/api/metrics/compute")
    assert answer.status_code == 422
    assert "sum to 1" in answer.json()["detail"]


def test_upload_test_runs(metrics_env, operator, plain):
    body = {"kind": "unit", "format": "junit", "report": JUNIT}
    refused = plain.post("/api/metrics/test-runs", body, content_type="application/json")
    assert refused.status_code == 403
    answer = operator.post("/api/metrics/test-runs", body, content_type="application/json")
    assert answer.status_code == 201
    # 12 - 2 - 1 - 3 = 6 passed in the first suite, 5 in the second
    assert {k: answer.json()[k] for k in ("passed", "failed", "errors", "skipped", "source")} == {
        "passed": 11,
        "failed": 2,
        "errors": 1,
        "skipped": 3,
        "source": "junit",
    }
    body = {"kind": "integration", "format": "pytest-json", "report": PYTEST_JSON}
    answer = operator.post("/api/metrics/test-runs", body, content_type="application/json")
    assert answer.status_code == 201
    assert (answer.json()["passed"], answer.json()["failed"], answer.json()["kind"]) == (40, 1, "integration")
    unit = TestRun.objects.get(kind="unit")
    assert (unit.passed, unit.failed, unit.errors) == (11, 2, 1)
    card = take_snapshot()
    tests = card.metrics.get(name="tests_p0_pct")
    assert tests.value == 78.57  # 11 / (11 + 2 + 1)
    listed = operator.get("/api/metrics/test-runs?kind=integration").json()
    assert [r["passed"] for r in listed["items"]] == [40]


@pytest.mark.parametrize(
    ("fmt", "report", "detail"),
    [
        ("junit", "<html></html>", "report: not JUnit XML: the root element is <html>"),
        ("junit", "not xml", "report: not JUnit XML"),
        ("junit", '<!DOCTYPE x [<!ENTITY a "b">]><testsuite tests="1"/>', "report: a JUnit report with a DOCTYPE"),
        ("junit", '<testsuite tests="1" failures="3"/>', "report: inconsistent JUnit counts"),
        ("pytest-json", "[]", 'report: not a pytest JSON report: no "summary" object'),
        ("pytest-json", '{"summary": {"passed": -1}}', "report: a pytest JSON summary count is not a whole number"),
    ],
)
def test_bad_reports_are_422(metrics_env, operator, fmt, report, detail):
    answer = operator.post("/api/metrics/test-runs", {"format": fmt, "report": report}, content_type="application/json")
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(detail)
    assert TestRun.objects.count() == 0
