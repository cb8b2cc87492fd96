"""The admin's scorecard page: every metric of the latest scorecard with its status colour, NV shown as NV with its
reason, the verdict and its decision logic, links to each calculation and evidence bag (with the evidence index's
state), a 30-day trend per metric, the empty state, "Compute now" behind its permission, and the index's link.

Scorecards here are stored rows with hand-chosen numbers, so what the page must print is known in advance; the
compute test goes through apps.metrics.snapshot.take_snapshot like the button does."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.evidence.models import Evidence
from apps.metrics.models import MetricSnapshot, Scorecard, TestRun
from tests.helpers import give

PAGE = "/admin/metrics/scorecard/page/"
COMPUTE = "/admin/metrics/scorecard/compute/"
GREEN, RED, AMBER, GREY = "#1a7f37", "#cf222e", "#b58105", "#6e7781"
NOW = timezone.now().replace(microsecond=0)


def card(html: str, name: str) -> str:
    """The HTML of one metric's card on the page."""
    start = html.index(f'<div class="vx11-metric" data-metric="{name}"')
    ends = [html.find(marker, start + 1) for marker in ('<div class="vx11-metric" ', "</section>")]
    return html[start : min(end for end in ends if end > 0)]


def store(at, verdict="DEGRADED", metrics=(), **fields) -> Scorecard:
    scorecard = Scorecard.objects.create(generated_at=at, verdict=verdict, actor="test", **fields)
    for name, value, status, extra in metrics:
        MetricSnapshot.objects.create(scorecard=scorecard, name=name, value=value, status=status, **extra)
    return scorecard


@pytest.fixture
def latest(db):
    """The scorecard the page shows: one metric of each status, two evidence bags (one intact, one tampered) and
    one path no bag covers."""
    Evidence.objects.create(path="docs/audit/20261129T120000Z_metrics", kind="metrics", state=Evidence.VALID)
    Evidence.objects.create(path="docs/audit/20261129T110000Z_audit", kind="audit", state=Evidence.MODIFIED)
    return store(
        NOW,
        metrics=[
            (
                "health_core_pct",
                80.0,
                "ok",
                {
                    "source": "fleet",
                    "evidence_path": "docs/audit/20261129T120000Z_metrics/data/health.json",
                    "calculation": "4 of 5 core modules up / 5 * 100 = 80",
                },
            ),
            (
                "db_integrity_pct",
                0.0,
                "fail",
                {
                    "evidence_path": "docs/audit/20261129T110000Z_audit",
                    "calculation": "integrity_check failed -> 0",
                    "reason": "integrity_check: 3 errors",
                },
            ),
            (
                "tests_p0_pct",
                None,
                "deferred",
                {"evidence_path": "db:metrics.TestRun (latest unit run)", "reason": "no test run stored yet"},
            ),
            (
                "Coherencia_routing_pct",
                None,
                "NV",
                {"evidence_path": "elsewhere/routing.json", "reason": "routing_events table absent"},
            ),
            ("Global_ponderado_pct", 26.666666, "ok", {"calculation": "(80 + 0) / 3 ... "}),
        ],
        decision_logic={
            "Estabilidad_value": 62.5,
            "Estabilidad_threshold": 75,
            "coverage_strict_check": False,
            "health_services_check": True,
            "db_integrity_status": "fail",
            "rules": "OPERATIONAL if Estabilidad_operativa_pct >= 75 and ...; otherwise CRITICAL.",
            "because": "Estabilidad 62.5 (>= 75: False, >= 50: True) ...: DEGRADED",
        },
        evidence_path="docs/audit/20261129T120000Z_metrics",
        coverage={"overall": 60.0, "strict": 40.0},
    )


def test_empty_state_says_so_and_offers_the_button(superuser_client):
    response = superuser_client.get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert "No scorecard has been computed yet." in html
    assert f'action="{COMPUTE}"' in html and "Compute now" in html
    assert 'class="vx11-metric"' not in html
    assert superuser_client.get(reverse("admin:metrics_scorecard_changelist")).status_code == 200


def test_every_metric_big_and_coloured_by_status(superuser_client, latest):
    response = superuser_client.get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('class="vx11-metric"') == 5

    health = card(html, "health_core_pct")
    assert 'data-status="ok"' in health and f"border:2px solid {GREEN}" in health
    assert re.search(r'class="vx11-metric-value"[^>]*>80%</a>', health)

    integrity = card(html, "db_integrity_pct")
    assert f"border:2px solid {RED}" in integrity and ">0%</a>" in integrity
    assert "integrity_check: 3 errors" in integrity

    deferred = card(html, "tests_p0_pct")
    assert f"border:2px solid {AMBER}" in deferred and ">NV</a>" in deferred
    assert "no test run stored yet" in deferred

    nv = card(html, "Coherencia_routing_pct")
    assert f"border:2px solid {GREY}" in nv
    assert ">NV</a>" in nv and "%</a>" not in nv  # never a number, not even 0
    assert "routing_events table absent" in nv

    assert re.search(r'data-metric="Global_ponderado_pct".*?>26\.67%</a>', html, re.S)  # two decimals at most


def test_verdict_and_its_decision_logic(superuser_client, latest):
    html = superuser_client.get(PAGE).content.decode()
    assert re.search(r'id="vx11-verdict" data-verdict="DEGRADED" style="background:#b58105', html)
    assert (
        "<strong>Rule:</strong> OPERATIONAL if Estabilidad_operativa_pct &gt;= 75 and ...; otherwise CRITICAL." in html
    )
    assert "<strong>Here:</strong> Estabilidad 62.5 (&gt;= 75: False, &gt;= 50: True) ...: DEGRADED" in html
    assert "<th>db_integrity_status</th><td>fail</td>" in html
    assert "<th>rules</th>" not in html  # a sentence, not a row
    assert "<th>Estabilidad_value</th><td>62.5</td>" in html
    assert f'<th>coverage_strict_check</th><td><span style="color:{RED};font-weight:600">no</span>' in html
    assert f'<th>health_services_check</th><td><span style="color:{GREEN};font-weight:600">yes</span>' in html


def test_each_value_links_to_its_calculation_and_evidence(superuser_client, latest):
    html = superuser_client.get(PAGE).content.decode()
    for name in ("health_core_pct", "db_integrity_pct", "tests_p0_pct", "Coherencia_routing_pct"):
        assert f'href="#calc-{name}"' in html
        assert f'id="calc-{name}"' in html
    calculation = html[html.index('id="calc-health_core_pct"') :]
    assert "4 of 5 core modules up / 5 * 100 = 80" in calculation[:2000]

    intact = Evidence.objects.get(kind="metrics")
    tampered = Evidence.objects.get(kind="audit")
    health = card(html, "health_core_pct")  # a file inside the intact bag: that bag's state
    assert reverse("admin:evidence_evidence_change", args=[intact.pk]) in health
    assert 'data-state="valid"' in health and ">verified</span>" in health
    integrity = card(html, "db_integrity_pct")
    assert reverse("admin:evidence_evidence_change", args=[tampered.pk]) in integrity
    assert 'data-state="modified"' in integrity and ">modified</span>" in integrity
    assert 'data-state="not indexed"' in card(html, "Coherencia_routing_pct")
    assert 'data-state="database rows"' in card(html, "tests_p0_pct")  # read from the database, not a bag
    assert 'data-state="none">no evidence path' in card(html, "Global_ponderado_pct")
    verdict_box = html[: html.index('class="vx11-cards"')]  # the scorecard's own bag, by the verdict
    assert "docs/audit/20261129T120000Z_metrics</code></a>" in verdict_box


def test_trend_has_one_point_per_scorecard_of_the_last_30_days(superuser_client, latest):
    store(NOW - timedelta(days=40), metrics=[("health_core_pct", 20.0, "ok", {})])  # outside the window
    store(NOW - timedelta(days=15), metrics=[("health_core_pct", 50.0, "ok", {})])
    store(NOW - timedelta(days=2), metrics=[("health_core_pct", None, "NV", {"reason": "stale"})])
    html = superuser_client.get(PAGE).content.decode()

    health = card(html, "health_core_pct")
    assert 'data-points="3"' in health
    points = re.findall(r'<circle class="vx11-point" data-status="(\w+)" cx="([\d.]+)" cy="([\d.]+)"', health)
    # 240x64 with 4 px padding: x = 4 + age share of 30 days * 232, y = 60 - value / 100 * 56
    assert points == [("ok", "120.0", "32.0"), ("NV", "220.5", "60.0"), ("ok", "236.0", "15.2")]
    assert 'fill="#fff"' in health  # the NV point is hollow: no value, not a 0
    assert "<polyline" not in health  # the NV breaks the line; no segment has two values
    assert 'data-points="1"' in card(html, "db_integrity_pct")  # only the latest scorecard has it


def test_a_dense_trend_keeps_every_value_on_the_line_and_dots_only_what_differs(superuser_client, latest):
    for hours in range(1, 100):  # 99 hourly scorecards before the latest: 100 in the window
        status = "fail" if hours == 50 else "ok"
        store(NOW - timedelta(hours=hours), metrics=[("health_core_pct", 90.0, status, {})])
    health = card(superuser_client.get(PAGE).content.decode(), "health_core_pct")
    assert 'data-points="100"' in health
    (line,) = re.findall(r'<polyline[^>]* points="([^"]+)"', health)
    assert len(line.split()) == 100
    assert re.findall(r'<circle class="vx11-point" data-status="(\w+)"', health) == ["fail", "ok"]  # and the latest


def test_an_older_scorecard_by_id_and_bad_ids(superuser_client, latest):
    older = store(NOW - timedelta(days=1), verdict="CRITICAL", metrics=[("health_core_pct", 40.0, "fail", {})])
    html = superuser_client.get(f"{PAGE}?id={older.pk}").content.decode()
    assert 'data-verdict="CRITICAL"' in html and "not the latest" in html
    assert 'data-follow="no"' in html  # the page script leaves an older scorecard alone
    assert re.search(r'class="vx11-metric-value"[^>]*>40%</a>', html)
    assert superuser_client.get(f"{PAGE}?id=abc").status_code == 400
    assert superuser_client.get(f"{PAGE}?id={latest.pk + 100}").status_code == 404


def test_scorecard_and_test_run_records_in_the_admin(superuser_client, latest):
    TestRun.objects.create(kind="unit", passed=10, failed=1, source="junit")
    change = superuser_client.get(reverse("admin:metrics_scorecard_change", args=[latest.pk]))
    assert change.status_code == 200
    html = change.content.decode()
    assert "health_core_pct" in html and "routing_events table absent" in html
    assert f'href="{PAGE}?id={latest.pk}"' in html
    assert superuser_client.get(reverse("admin:metrics_scorecard_add")).status_code == 403  # written by the portal
    runs = superuser_client.get(reverse("admin:metrics_testrun_changelist"))
    assert runs.status_code == 200 and 'data-status="fail"' in runs.content.decode()


def test_the_admin_index_links_to_the_page_at_the_top(superuser_client, latest):
    html = superuser_client.get(reverse("admin:index")).content.decode()
    link = html.index(f'<a href="{PAGE}"><strong>Scorecard →</strong></a>')
    assert link < html.index("Fleet at a glance")
    assert 'data-verdict="DEGRADED"' in html[link : link + 500]


def test_page_and_compute_need_their_permissions(db, django_user_model, settings, tmp_path):
    settings.VX11_EVIDENCE_ROOT = tmp_path / "evidence"
    user = django_user_model.objects.create_user("viewer", password="pw-123456789", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get(PAGE).status_code == 403  # no view permission

    user = give(user, "metrics.view_scorecard")
    client.force_login(user)
    page = client.get(PAGE)
    assert page.status_code == 200 and "Compute now" not in page.content.decode()
    assert client.post(COMPUTE).status_code == 403
    assert client.get(COMPUTE).status_code == 403
    assert Scorecard.objects.count() == 0

    user = give(user, "metrics.add_scorecard")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(COMPUTE).status_code == 403  # no CSRF token
    assert Scorecard.objects.count() == 0
    form = strict.get(COMPUTE)
    assert form.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.content.decode()).group(1)
    done = strict.post(COMPUTE, {"csrfmiddlewaretoken": token})
    assert done.status_code == 302 and done["Location"] == PAGE
    scorecard = Scorecard.objects.get()
    assert scorecard.actor == "viewer"
    html = strict.get(PAGE).content.decode()
    assert f'data-scorecard="{scorecard.pk}"' in html
    assert f"Scorecard #{scorecard.pk} computed: {scorecard.verdict}" in html
    assert html.count('class="vx11-metric"') == scorecard.metrics.count() > 0
