"""Loads the ten VX11 modules (REFERENCE.md section 1) and the fleet's two beat entries.

The schedules live in django-celery-beat's tables, so an operator edits them in the admin.
"""

import json

from django.conf import settings
from django.db import migrations

from apps.fleet.reference import reference_rows

PROBE_TASK = "fleet: probe round (whole fleet)"
HISTORY_TASK = "fleet: rollups, uptime and pruning"


def load(apps, schema_editor):
    Module = apps.get_model("fleet", "Module")
    for row in reference_rows():
        Module.objects.get_or_create(slug=row["slug"], defaults={**row, "timeout": settings.VX11_PROBE_DEFAULT_TIMEOUT})

    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_probe, _ = IntervalSchedule.objects.get_or_create(
        every=settings.VX11_PROBE_INTERVAL_SECONDS, period="seconds"
    )
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=PROBE_TASK,
        defaults={
            "task": "apps.fleet.tasks.probe_fleet",
            "interval": every_probe,
            "kwargs": json.dumps({}),
            "description": "Probes every enabled module concurrently, one round per tick.",
            "expire_seconds": max(5, settings.VX11_PROBE_INTERVAL_SECONDS),
        },
    )
    PeriodicTask.objects.get_or_create(
        name=HISTORY_TASK,
        defaults={
            "task": "apps.fleet.tasks.maintain_fleet_history",
            "interval": every_minute,
            "kwargs": json.dumps({}),
            "description": "Rolls raw checks up per minute/hour/day, refreshes uptime, prunes in chunks.",
        },
    )


def unload(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=[PROBE_TASK, HISTORY_TASK]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(load, unload)]
