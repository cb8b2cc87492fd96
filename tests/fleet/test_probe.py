"""Probe rounds against real HTTP servers on 127.0.0.1 (the demo fleet), misbehaving for real."""

import time

import pytest

from apps.fleet.models import HealthCheck, Module
from apps.fleet.probe import run_round

pytestmark = pytest.mark.django_db


def probe(slug):
    results, _ = run_round([Module.objects.get(slug=slug)])
    return results[0]


def test_healthy_fleet_round(fleet):
    seen = []
    results, changes = run_round(on_result=lambda r: seen.append(r.slug))
    assert sorted(seen) == sorted(fleet)
    assert len(results) == 10
    assert all(r.outcome == "ok" and r.status_code == 200 for r in results), [r for r in results if r.outcome != "ok"]
    assert {r.slug: r.status_value for r in results}["manifestator"] == "healthy"
    assert HealthCheck.objects.count() == 10
    assert len(changes) == 10
    assert set(Module.objects.values_list("state", flat=True)) == {"up"}


def test_hanging_modules_time_out_concurrently(fleet, sim):
    hanging = ["hermes", "mcp", "shub", "operator"]
    for slug in hanging:
        sim.set_mode(slug, "hang")
    started = time.perf_counter()
    results, _ = run_round()
    elapsed = time.perf_counter() - started
    by_slug = {r.slug: r for r in results}
    assert all(by_slug[s].outcome == "fail" and by_slug[s].error == "timeout after 0.5 s" for s in hanging)
    assert sum(r.outcome == "ok" for r in results) == 6
    assert elapsed < 4 * 0.5  # the four timeouts ran side by side, not one after another


@pytest.mark.parametrize(
    "mode, code, error",
    [
        ("error", 500, "HTTP 500"),
        ("garbage", 200, "invalid JSON in /health answer"),
        ("wrong_status", 200, "status 'broken' not in accepted ['ok']"),
        ("down", None, "connection refused"),
    ],
)
def test_failures_are_recorded_with_their_reason(fleet, sim, mode, code, error):
    sim.set_mode("switch", mode)
    r = probe("switch")
    assert (r.outcome, r.status_code, r.error) == ("fail", code, error)
    stored = HealthCheck.objects.get(module__slug="switch")
    assert (stored.outcome, stored.status_code, stored.error) == ("fail", code, error)


def test_manifestator_needs_its_own_accepted_status(fleet):
    assert probe("manifestator").outcome == "ok"
    Module.objects.filter(slug="manifestator").update(accepted_statuses=["ok"])
    assert probe("manifestator").error == "status 'healthy' not in accepted ['ok']"


def test_slow_answer_over_the_threshold_is_degraded(fleet, sim):
    Module.objects.filter(slug="spawner").update(degraded_latency_ms=150)
    sim.set_mode("spawner", "slow", delay=0.25)
    r = probe("spawner")
    assert r.outcome == "slow"
    assert r.latency_ms >= 250
    probe("spawner")
    assert Module.objects.get(slug="spawner").state == "degraded"


def test_module_goes_down_after_three_failed_rounds_and_back_after_two(fleet, sim):
    run_round()
    sim.set_mode("madre", "down")
    states = []
    for _ in range(3):
        run_round()
        states.append(Module.objects.get(slug="madre").state)
    assert states == ["up", "up", "down"]
    sim.set_mode("madre", "ok")
    for _ in range(2):
        run_round()
    madre = Module.objects.get(slug="madre")
    assert madre.state == "up"
    assert list(madre.state_changes.order_by("at").values_list("to_state", flat=True)) == ["up", "down", "up"]


def test_disabled_modules_are_not_probed(fleet):
    Module.objects.filter(slug="mcp").update(enabled=False)
    results, _ = run_round()
    assert "mcp" not in {r.slug for r in results}
