"""Prometheus /metrics: the figures of a hand-built portal, read back with Prometheus's own text parser; the key
guard and the loopback rule; a query count that does not grow with the fleet."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from apps.daughters.models import Daughter, DaughterTask
from apps.events.models import Event
from apps.fleet.models import HealthCheck, Module
from apps.flows.models import Flow, FlowRun
from apps.metrics.models import MetricSnapshot, Scorecard
from apps.metrics.prometheus import render
from apps.power.models import PowerAction

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def parse(text: str) -> dict:
    """{family name: {frozenset of label items: value}}."""
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = {frozenset(s.labels.items()): s.value for s in family.samples}
    return families


def sample(families: dict, family: str, **labels) -> float:
    return families[family][frozenset(labels.items())]


def module(slug: str, port: int, **fields) -> Module:
    return Module.objects.create(slug=slug, name=slug, base_url=f"http://127.0.0.1:{port}", **fields)


def check(mod: Module, ago: timedelta, outcome: str) -> None:
    HealthCheck.objects.create(module=mod, checked_at=NOW - ago, outcome=outcome)


def run(flow: Flow, status: str, started_ago: timedelta, duration_ms: float | None = None) -> FlowRun:
    finished = None if duration_ms is None else NOW - started_ago + timedelta(milliseconds=duration_ms)
    return FlowRun.objects.create(
        flow=flow,
        status=status,
        trigger="beat",
        started_at=NOW - started_ago,
        finished_at=finished,
        duration_ms=duration_ms,
    )


def power(result: str) -> None:
    PowerAction.objects.create(actor="ops", service="madre", action="start", result=result, http_status=200)


@pytest.fixture
def portal(db, settings):
    """Three enabled modules (up, down, degraded) and a disabled one; checks; four flows; daughters; power
    requests; events; two scorecards, the latest with an NV and a deferred metric."""
    settings.VX11_PROBE_INTERVAL_SECONDS = 15
    # the migrations seed the reference modules and the canonical flows: start from nothing
    Module.objects.all().delete()
    Flow.objects.all().delete()
    madre = module(
        "madre",
        8001,
        state="up",
        last_outcome="ok",
        last_latency_ms=12.5,
        uptime_24h=99.5,
        last_checked_at=NOW - timedelta(seconds=2),
    )
    switch = module(
        "switch", 8002, state="down", last_outcome="fail", uptime_24h=80.0, last_checked_at=NOW - timedelta(seconds=5)
    )
    # last checked 40 s ago: older than one probe interval before the newest check, so not in the latest round
    hermes = module(
        "hermes",
        8003,
        state="degraded",
        last_outcome="slow",
        last_latency_ms=900.0,
        last_checked_at=NOW - timedelta(seconds=40),
    )
    module("old", 8004, state="up", enabled=False, last_latency_ms=1.0, last_checked_at=NOW)
    for ago in (timedelta(seconds=2), timedelta(minutes=1), timedelta(minutes=2)):
        check(madre, ago, "ok")
    check(madre, timedelta(hours=2), "ok")  # outside the last hour
    check(switch, timedelta(minutes=1), "fail")
    check(switch, timedelta(minutes=2), "fail")
    check(hermes, timedelta(minutes=1), "slow")

    a = Flow.objects.create(name="A")
    run(a, "passed", timedelta(hours=3), 1000)
    run(a, "failed", timedelta(hours=2), 2500)
    run(a, "running", timedelta(minutes=1))  # unfinished: not the latest result
    b = Flow.objects.create(name="B")
    run(b, "passed", timedelta(hours=1), 1200)
    Flow.objects.create(name="C")  # never ran
    d = Flow.objects.create(name="D", enabled=False)
    run(d, "passed", timedelta(hours=1), 10)

    task = DaughterTask.objects.create(priority=2, status="running")
    for status in ("finished", "finished", "failed"):
        Daughter.objects.create(task=task, name=f"d-{status}", kind="sleep", status=status)

    power("ok")
    power("ok")
    power("refused")

    Event.objects.create(type="status_changed", timestamp=NOW - timedelta(minutes=5), sent_at=NOW)
    Event.objects.create(type="status_changed", timestamp=NOW - timedelta(minutes=4), sent_at=NOW)
    Event.objects.create(type="status_changed", timestamp=NOW - timedelta(seconds=60))  # past the relay's grace
    Event.objects.create(type="status_changed", timestamp=NOW - timedelta(seconds=1))  # its publisher may be sending

    Scorecard.objects.create(generated_at=NOW - timedelta(days=1), verdict="CRITICAL")
    latest = Scorecard.objects.create(generated_at=NOW - timedelta(minutes=10), verdict="DEGRADED")
    for name, value, status in [
        ("health_core_pct", 80.0, "ok"),
        ("Estabilidad_operativa_pct", 0.0, "fail"),
        ("tests_p0_pct", None, "deferred"),
        ("Coherencia_routing_pct", None, "NV"),
    ]:
        MetricSnapshot.objects.create(scorecard=latest, name=name, value=value, status=status)
    return latest


def test_module_state_latency_uptime(portal):
    families = parse(render(now=NOW).decode())
    assert sample(families, "vx11_module_state", module="madre", state="up") == 1
    assert sample(families, "vx11_module_state", module="madre", state="down") == 0
    assert sample(families, "vx11_module_state", module="switch", state="down") == 1
    assert sample(families, "vx11_module_state", module="hermes", state="degraded") == 1
    # one sample per state per enabled module: 3 modules x 4 states; the disabled one is left out
    assert len(families["vx11_module_state"]) == 12
    assert sum(families["vx11_module_state"].values()) == 3
    assert families["vx11_module_last_latency_seconds"] == {
        frozenset({("module", "madre")}): 0.0125,
        frozenset({("module", "hermes")}): 0.9,
    }
    assert families["vx11_module_uptime_24h_percent"] == {
        frozenset({("module", "madre")}): 99.5,
        frozenset({("module", "switch")}): 80.0,
    }
    assert sample(families, "vx11_module_last_check_timestamp_seconds", module="switch") == NOW.timestamp() - 5


def test_probe_rounds(portal):
    families = parse(render(now=NOW).decode())
    # the latest round: madre (2 s ago) and switch (5 s ago); hermes (40 s ago) is an older round's
    assert sample(families, "vx11_probe_last_round_timestamp_seconds") == NOW.timestamp() - 2
    assert sample(families, "vx11_probe_last_round_duration_seconds") == 3.0
    assert sample(families, "vx11_probe_last_round_modules") == 2
    assert sample(families, "vx11_probe_last_round_outcomes", outcome="ok") == 1
    assert sample(families, "vx11_probe_last_round_outcomes", outcome="fail") == 1
    assert sample(families, "vx11_probe_last_round_outcomes", outcome="slow") == 0  # hermes: an older round
    # madre, the latest round's last module, was checked 3 times in the last hour (its 4th check is 2 h old)
    assert sample(families, "vx11_probe_rounds_last_hour") == 3


def test_flows(portal):
    families = parse(render(now=NOW).decode())
    # A's latest finished run failed (its running run has no result yet); B passed; C never ran; D is disabled
    assert families["vx11_flow_last_run_passed"] == {
        frozenset({("flow", "A")}): 0.0,
        frozenset({("flow", "B")}): 1.0,
    }
    assert sample(families, "vx11_flow_last_run_duration_seconds", flow="A") == 2.5
    assert sample(families, "vx11_flow_last_run_duration_seconds", flow="B") == 1.2
    ended = NOW - timedelta(hours=2) + timedelta(milliseconds=2500)
    assert sample(families, "vx11_flow_last_run_timestamp_seconds", flow="A") == ended.timestamp()
    assert sample(families, "vx11_flows_by_last_result", result="passed") == 1
    assert sample(families, "vx11_flows_by_last_result", result="failed") == 1
    assert sample(families, "vx11_flows_by_last_result", result="never") == 1
    # every stored run, the disabled flow's too
    assert sample(families, "vx11_flow_runs", status="passed") == 3
    assert sample(families, "vx11_flow_runs", status="failed") == 1
    assert sample(families, "vx11_flow_runs", status="running") == 1
    assert sample(families, "vx11_flow_runs", status="queued") == 0


def test_daughters_power_events(portal):
    families = parse(render(now=NOW).decode())
    assert sample(families, "vx11_daughters", status="finished") == 2
    assert sample(families, "vx11_daughters", status="failed") == 1
    assert sample(families, "vx11_daughters", status="running") == 0
    assert len(families["vx11_daughters"]) == len(Daughter.Status.values)  # bounded: the status choices only
    assert sample(families, "vx11_daughter_tasks", status="running") == 1
    assert sample(families, "vx11_power_actions", result="ok") == 2
    assert sample(families, "vx11_power_actions", result="refused") == 1
    assert sample(families, "vx11_power_actions", result="error") == 0
    assert sample(families, "vx11_events_sent") == 2
    assert sample(families, "vx11_events_unsent") == 2
    assert sample(families, "vx11_events_send_failed") == 1  # the 60 s old one; the 1 s old one is in its grace
    assert sample(families, "vx11_events_oldest_unsent_age_seconds") == 60


def test_scorecard_nv_is_absent_never_zero(portal):
    families = parse(render(now=NOW).decode())
    assert families["vx11_scorecard_metric"] == {
        frozenset({("name", "health_core_pct")}): 80.0,
        frozenset({("name", "Estabilidad_operativa_pct")}): 0.0,  # a real 0: the gate failed
    }
    assert sample(families, "vx11_scorecard_metric_status", name="tests_p0_pct", status="deferred") == 1
    assert sample(families, "vx11_scorecard_metric_status", name="Coherencia_routing_pct", status="NV") == 1
    assert sample(families, "vx11_scorecard_verdict", verdict="DEGRADED") == 1
    assert sample(families, "vx11_scorecard_verdict", verdict="CRITICAL") == 0
    assert sample(families, "vx11_scorecard_verdict", verdict="OPERATIONAL") == 0
    assert sample(families, "vx11_scorecard_timestamp_seconds") == portal.generated_at.timestamp()


def test_empty_database_answers(db):
    Module.objects.all().delete()
    Flow.objects.all().delete()
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    families = parse(response.content.decode())
    assert families["vx11_scorecard_metric"] == {}
    assert families["vx11_module_state"] == {}
    assert "vx11_probe_last_round_duration_seconds" in families
    assert sample(families, "vx11_probe_last_round_modules") == 0
    assert sample(families, "vx11_probe_rounds_last_hour") == 0
    assert sample(families, "vx11_events_sent") == 0


@pytest.mark.parametrize(
    "headers, status",
    [
        ({}, 401),
        ({"Authorization": "Basic czNjcmV0"}, 401),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"X-Metrics-Key": "wrong"}, 403),
        ({"Authorization": "Bearer s3cret-key"}, 200),
        ({"X-Metrics-Key": "s3cret-key"}, 200),
    ],
)
def test_key_guard(db, settings, headers, status):
    settings.VX11_METRICS_KEY = "s3cret-key"
    # not loopback: with a key set, the key alone decides
    response = Client(headers=headers, REMOTE_ADDR="10.0.0.5").get("/metrics")
    assert response.status_code == status
    if status == 401:
        assert "VX11_METRICS_KEY" in response.json()["detail"]
        assert response["WWW-Authenticate"].startswith("Bearer")
    elif status == 403:
        assert response.json() == {"detail": "wrong metrics key"}
    else:
        assert b"vx11_module_state" in response.content
        assert "sessionid" not in response.cookies


@pytest.mark.parametrize(
    "address, headers, status",
    [
        ("127.0.0.1", {}, 200),
        ("::1", {}, 200),
        ("10.0.0.5", {}, 403),
        ("192.168.1.20", {}, 403),
        ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, 403),  # a local proxy would make everyone loopback
    ],
)
def test_loopback_rule_without_key(db, settings, address, headers, status):
    settings.VX11_METRICS_KEY = ""
    response = Client(headers=headers, REMOTE_ADDR=address).get("/metrics")
    assert response.status_code == status
    if status == 403:
        assert "loopback" in response.json()["detail"]


def test_only_get_and_head_no_csrf(db):
    client = Client(enforce_csrf_checks=True)
    assert client.head("/metrics").status_code == 200
    assert client.post("/metrics").status_code == 405  # not 403: CSRF does not apply, the method does


def fleet_of(count: int) -> None:
    """`count` modules with a check each, plus one row of everything else."""
    Module.objects.bulk_create(
        Module(
            slug=f"m{i}",
            name=f"m{i}",
            base_url=f"http://127.0.0.1:{10000 + i}",
            state="up",
            last_latency_ms=5.0,
            uptime_24h=100.0,
            last_checked_at=NOW - timedelta(seconds=1),
        )
        for i in range(count)
    )
    HealthCheck.objects.bulk_create(
        HealthCheck(module=m, checked_at=NOW - timedelta(seconds=1), outcome="ok") for m in Module.objects.all()
    )


def queries_at(count: int) -> int:
    Module.objects.all().delete()
    fleet_of(count)
    with CaptureQueriesContext(connection) as queries:
        families = parse(render(now=NOW).decode())
    assert sum(families["vx11_module_state"].values()) == count
    return len(queries)


def test_query_count_independent_of_fleet_size(portal):
    small = queries_at(10)
    large = queries_at(200)
    assert small == large
    # modules, rounds, flows, runs, daughters, tasks, power, events, the scorecard and its metrics
    assert large == 10
