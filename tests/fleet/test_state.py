"""Gatus-like thresholds: down after N failures in a row, up after M successes; one change row each."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.fleet.models import HealthCheck, Module, ProbeResult, StateChange

pytestmark = pytest.mark.django_db
T0 = timezone.now().replace(microsecond=0)


def result(module, outcome, n, latency=5.0, error="connection refused"):
    return ProbeResult(
        module.id,
        module.slug,
        T0 + timedelta(seconds=15 * n),
        outcome,
        200 if outcome != "fail" else None,
        latency if outcome != "fail" else None,
        "ok" if outcome != "fail" else "",
        error if outcome == "fail" else "",
    )


def feed(module, outcomes):
    states = []
    for i, outcome in enumerate(outcomes):
        HealthCheck.record_round([result(module, outcome, i)])
        module.refresh_from_db()
        states.append(module.state)
    return states


def test_first_result_sets_state_from_unknown():
    m = Module.objects.get(slug="madre")
    assert feed(m, ["ok"]) == ["up"]
    change = StateChange.objects.get(module=m)
    assert (change.from_state, change.to_state) == ("unknown", "up")
    assert change.reason.startswith("first result")


def test_down_only_after_three_failures_in_a_row():
    m = Module.objects.get(slug="madre")
    states = feed(m, ["ok", "fail", "fail", "ok", "fail", "fail", "fail", "fail"])
    assert states == ["up", "up", "up", "up", "up", "up", "down", "down"]
    change = StateChange.objects.filter(module=m).first()
    assert (change.from_state, change.to_state) == ("up", "down")
    assert change.reason == "3 failures in a row: connection refused"


def test_up_only_after_two_successes_in_a_row():
    m = Module.objects.get(slug="madre")
    states = feed(m, ["fail", "ok", "fail", "ok", "ok", "ok"])
    assert states == ["down", "down", "down", "down", "up", "up"]
    assert list(StateChange.objects.filter(module=m).order_by("at").values_list("to_state", flat=True)) == [
        "down",
        "up",
    ]


def test_thresholds_are_per_module():
    m = Module.objects.get(slug="hermes")
    m.down_after, m.up_after = 1, 4
    m.save()
    assert feed(m, ["ok", "fail", "ok", "ok", "ok", "ok"]) == ["up", "down", "down", "down", "down", "up"]


def test_slow_answers_mean_degraded_after_the_threshold():
    m = Module.objects.get(slug="switch")
    m.degraded_latency_ms = 100
    m.save()
    assert feed(m, ["ok", "slow", "ok", "slow", "slow", "ok", "ok"]) == [
        "up",
        "up",
        "up",
        "up",
        "degraded",
        "degraded",
        "up",
    ]


def test_single_blip_does_not_flap():
    m = Module.objects.get(slug="spawner")
    feed(m, ["ok"] + ["ok", "fail"] * 10)
    assert StateChange.objects.filter(module=m).count() == 1


def test_round_is_one_bulk_insert_and_updates_every_module():
    modules = list(Module.objects.all())
    results = [result(m, "ok" if i % 2 else "fail", 0) for i, m in enumerate(modules)]
    changes = HealthCheck.record_round(results)
    assert HealthCheck.objects.count() == len(modules) == 10
    assert len(changes) == 10
    assert Module.objects.filter(state="up").count() == 5
    assert Module.objects.filter(state="down").count() == 5
    assert Module.fleet_summary()["core_down"]
