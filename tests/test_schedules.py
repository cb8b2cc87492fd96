"""The portal's beat entries: one table (vx11_site.schedules), stored after every migrate; an operator's edit of
when an entry runs survives the next migrate, what it runs follows the table."""

from dataclasses import asdict

import pytest
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks

from apps.flows.spec import CANONICAL
from vx11_site.schedules import SCHEDULES, Crontab, Schedule, ensure_schedules

pytestmark = pytest.mark.django_db


def test_migrate_stored_every_entry_of_the_table():
    rows = {row.name: row for row in PeriodicTask.objects.select_related("interval", "crontab")}
    assert set(rows) == {entry.name for entry in SCHEDULES}
    assert len(SCHEDULES) == len(rows)  # names are unique
    for entry in SCHEDULES:
        row = rows[entry.name]
        assert {name: getattr(row, name) for name in entry.owned()} == entry.owned()
        if entry.crontab is None:
            assert (row.interval.every, row.interval.period) == entry.interval()
        else:
            assert {name: getattr(row.crontab, name) for name in asdict(entry.crontab)} == asdict(entry.crontab)
        assert row.enabled
        assert row.expire_seconds == entry.expire_seconds()


def test_the_entries_as_the_settings_and_intervals_give_them(settings):
    by_name = {entry.name: entry for entry in SCHEDULES}
    probe = by_name["fleet: probe round (whole fleet)"]
    assert probe.interval() == (settings.VX11_PROBE_INTERVAL_SECONDS, "seconds")
    assert probe.expire_seconds() == max(5, settings.VX11_PROBE_INTERVAL_SECONDS)
    assert by_name["flows: prune old runs"].interval() == (1, "days")
    assert by_name["flows: sweep interrupted runs"].interval() == (30, "seconds")
    assert by_name["fleet: send notifications"].expire_seconds() == 10
    assert by_name["events: relay unsent events"].expire_seconds() is None
    flows = [entry for entry in SCHEDULES if entry.task == "apps.flows.tasks.run_flow"]
    assert tuple(entry.kwargs["name"] for entry in flows) == CANONICAL
    assert by_name["flows: run flow B"].owned()["kwargs"] == '{"name": "B"}'


def test_an_admin_edit_survives_a_second_migrate():
    every_hour, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    edited = PeriodicTask.objects.get(name="fleet: probe round (whole fleet)")
    edited.interval = every_hour
    edited.enabled = False
    edited.expire_seconds = 99
    edited.description = "probes, hourly for now"
    edited.task = "apps.fleet.tasks.renamed"
    edited.save()
    PeriodicTask.objects.get(name="power: prune the action log").delete()

    call_command("migrate", verbosity=0)

    edited.refresh_from_db()
    assert (edited.interval_id, edited.enabled, edited.expire_seconds) == (every_hour.id, False, 99)
    assert edited.task == "apps.fleet.tasks.probe_fleet"  # what it runs is the portal's
    assert edited.description == "Probes every enabled module concurrently, one round per tick."
    recreated = PeriodicTask.objects.get(name="power: prune the action log")
    assert (recreated.task, recreated.interval.every, recreated.interval.period) == (
        "apps.power.tasks.prune_power_actions",
        3600,
        "seconds",
    )
    assert PeriodicTask.objects.count() == len(SCHEDULES)


def test_a_migrated_database_needs_no_change_and_a_change_tells_beat():
    assert ensure_schedules() == {"created": [], "updated": []}
    PeriodicTasks.objects.all().delete()
    PeriodicTask.objects.filter(name="events: prune stored events").update(kwargs='{"days": 1}')
    assert ensure_schedules() == {"created": [], "updated": ["events: prune stored events"]}
    assert PeriodicTask.objects.get(name="events: prune stored events").kwargs == "{}"
    assert PeriodicTasks.last_change() is not None  # a running beat reloads its schedule


def test_a_crontab_entry():
    nightly = Schedule(
        name="test: nightly",
        task="apps.events.tasks.prune_events",
        crontab=Crontab(minute="0", hour="3"),
        description="d",
    )
    assert ensure_schedules(table=(nightly,)) == {"created": ["test: nightly"], "updated": []}
    row = PeriodicTask.objects.get(name="test: nightly")
    assert row.interval is None
    assert (row.crontab.minute, row.crontab.hour, row.crontab.day_of_week) == ("0", "3", "*")
    assert ensure_schedules(table=(nightly,)) == {"created": [], "updated": []}
    assert CrontabSchedule.objects.filter(minute="0", hour="3").count() == 1  # found again, not made twice


@pytest.mark.parametrize("when", [{}, {"every": 5, "crontab": Crontab()}, {"setting": "X", "crontab": Crontab()}])
def test_an_entry_has_an_interval_or_a_crontab(when):
    with pytest.raises(ValueError, match="interval or a crontab"):
        Schedule(name="bad", task="t", description="d", **when)
