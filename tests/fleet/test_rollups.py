"""Rollups, uptime from rollups, and chunked pruning, on hand-computed data."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from apps.fleet.models import HealthCheck, Module, Rollup, maintain_history, p95

pytestmark = pytest.mark.django_db
DAY = datetime(2026, 11, 20, tzinfo=UTC)


def check(module, at, outcome="ok", latency=10.0):
    return HealthCheck(
        module=module,
        checked_at=at,
        outcome=outcome,
        status_code=200 if outcome != "fail" else None,
        latency_ms=latency if outcome != "fail" else None,
    )


def test_p95_nearest_rank():
    assert p95([]) is None
    assert p95([7.0]) == 7.0
    assert p95(list(map(float, range(1, 101)))) == 95.0
    assert p95([1.0, 2.0, 3.0, 100.0]) == 100.0


def test_minute_and_hour_rollups_are_exact():
    m = Module.objects.get(slug="madre")
    t = DAY + timedelta(hours=1)
    HealthCheck.objects.bulk_create(
        [
            check(m, t + timedelta(seconds=1), latency=10),
            check(m, t + timedelta(seconds=20), latency=30),
            check(m, t + timedelta(seconds=40), "fail"),
            check(m, t + timedelta(minutes=1, seconds=5), latency=50),
        ]
    )
    written = Rollup.roll_up(now=t + timedelta(hours=2))
    assert written["minute"] == 2
    assert written["hour"] == 1

    first = Rollup.objects.get(module=m, period="minute", bucket_start=t)
    assert (first.count, first.failures, first.latency_samples) == (3, 1, 2)
    assert (first.latency_min, first.latency_avg, first.latency_p95, first.latency_max) == (10, 20, 30, 30)
    assert first.uptime == pytest.approx(200 / 3)

    hour = Rollup.objects.get(module=m, period="hour", bucket_start=t)
    assert (hour.count, hour.failures, hour.latency_min, hour.latency_max, hour.latency_avg, hour.latency_p95) == (
        4,
        1,
        10,
        50,
        30,
        50,
    )


def test_open_buckets_wait_for_the_grace_period_and_rerun_is_idempotent():
    m = Module.objects.get(slug="madre")
    t = DAY + timedelta(hours=3)
    HealthCheck.objects.bulk_create([check(m, t + timedelta(seconds=s)) for s in (0, 15, 30, 45)])
    assert Rollup.roll_up(now=t + timedelta(seconds=70))["minute"] == 0  # inside the grace window
    assert Rollup.roll_up(now=t + timedelta(minutes=3))["minute"] == 1
    assert Rollup.roll_up(now=t + timedelta(minutes=3))["minute"] == 0
    assert Rollup.objects.filter(period="minute").count() == 1


def test_days_are_rolled_from_hours():
    m = Module.objects.get(slug="madre")
    checks = []
    for hour in range(24):  # hour h: 4 checks, one failing in even hours, latency h+1
        for q in range(4):
            failing = hour % 2 == 0 and q == 0
            checks.append(
                check(m, DAY + timedelta(hours=hour, minutes=q * 15), "fail" if failing else "ok", float(hour + 1))
            )
    HealthCheck.objects.bulk_create(checks)
    Rollup.roll_up(now=DAY + timedelta(days=1, hours=2))
    day = Rollup.objects.get(module=m, period="day", bucket_start=DAY)
    assert (day.count, day.failures) == (96, 12)
    assert (day.latency_min, day.latency_max) == (1.0, 24.0)
    # avg is weighted by latency samples: even hours have 3, odd hours 4
    samples = {h: 3 if h % 2 == 0 else 4 for h in range(24)}
    expected_avg = sum((h + 1) * n for h, n in samples.items()) / sum(samples.values())
    assert day.latency_avg == pytest.approx(expected_avg)
    assert day.uptime == pytest.approx(100 * 84 / 96)


def test_uptime_windows_come_from_rollups_without_double_counting():
    m = Module.objects.get(slug="madre")
    now = DAY + timedelta(days=10, hours=5, minutes=30)
    # 2 closed days ago at 50 % uptime, then hours today at 100 %, then minutes in this hour with 1 failure in 10
    Rollup.objects.bulk_create(
        [Rollup(module=m, period="day", bucket_start=DAY + timedelta(days=d), count=100, failures=50) for d in (8, 9)]
        + [
            Rollup(module=m, period="hour", bucket_start=DAY + timedelta(days=d, hours=h), count=10, failures=5)
            for d in (8, 9)
            for h in range(24)
        ]
        + [
            Rollup(module=m, period="hour", bucket_start=DAY + timedelta(days=10, hours=h), count=10, failures=0)
            for h in range(5)
        ]
        + [
            Rollup(
                module=m,
                period="minute",
                bucket_start=DAY + timedelta(days=10, hours=5, minutes=i),
                count=1,
                failures=int(i == 3),
            )
            for i in range(10)
        ]
    )
    since_7d = Rollup.uptimes_since(now - timedelta(days=7))
    # days 8 and 9 (200 checks, 100 failures) + hours of day 10 (50, 0) + minutes after 05:00 (10, 1)
    assert since_7d[m.id] == pytest.approx(100 * (260 - 101) / 260)
    since_24h = Rollup.uptimes_since(now - timedelta(hours=24))
    # from 05:30 on day 9: hours 06..23 of day 9 (180 checks, 90 failures) + 5 hours today + 10 minutes
    assert since_24h[m.id] == pytest.approx(100 * (240 - 91) / 240)

    Rollup.refresh_uptimes(now)
    m.refresh_from_db()
    assert m.uptime_7d == pytest.approx(since_7d[m.id])
    assert m.uptime_24h == pytest.approx(since_24h[m.id])
    assert Module.objects.get(slug="hermes").uptime_24h is None  # no data is no number, not 100


@override_settings(VX11_RAW_RETENTION_HOURS=24, VX11_PRUNE_CHUNK=7, VX11_MINUTE_RETENTION_DAYS=1)
def test_prune_in_chunks_keeps_the_window_and_what_is_not_rolled_up():
    m = Module.objects.get(slug="madre")
    HealthCheck.objects.bulk_create([check(m, DAY + timedelta(minutes=i)) for i in range(60 * 30)])  # 30 hours
    now = DAY + timedelta(hours=30, minutes=5)
    # nothing rolled up yet: nothing may go
    assert HealthCheck.prune(now) == 0
    summary = maintain_history(now)
    cutoff = now - timedelta(hours=24)
    assert summary["pruned_raw"] == sum(1 for i in range(60 * 30) if DAY + timedelta(minutes=i) < cutoff)
    assert not HealthCheck.objects.filter(checked_at__lt=cutoff).exists()
    assert HealthCheck.objects.filter(checked_at__gte=cutoff).count() == 60 * 30 - summary["pruned_raw"]
    # minute rollups older than a day went too; hours stay
    assert not Rollup.objects.filter(period="minute", bucket_start__lt=now - timedelta(days=1)).exists()
    assert Rollup.objects.filter(period="hour").count() == 30


@override_settings(VX11_DAY_RETENTION_DAYS=30, VX11_WINDOW_RETENTION_DAYS=10)
def test_old_state_changes_and_ended_windows_are_pruned():
    from apps.fleet.models import MaintenanceWindow, StateChange

    m = Module.objects.get(slug="madre")
    now = DAY + timedelta(days=60)
    old = StateChange.objects.create(
        module=m, at=now - timedelta(days=31), from_state="up", to_state="down", reason="old"
    )
    kept = StateChange.objects.create(
        module=m, at=now - timedelta(days=29), from_state="down", to_state="up", reason="recent"
    )
    ended = MaintenanceWindow.objects.create(starts_at=now - timedelta(days=12), ends_at=now - timedelta(days=11))
    recent = MaintenanceWindow.objects.create(starts_at=now - timedelta(days=9), ends_at=now - timedelta(days=8))
    summary = maintain_history(now)
    assert (summary["pruned_changes"], summary["pruned_windows"]) == (1, 1)
    assert list(StateChange.objects.values_list("id", flat=True)) == [kept.id]
    assert old.id != kept.id
    assert list(MaintenanceWindow.objects.values_list("id", flat=True)) == [recent.id]
    assert ended.id != recent.id
