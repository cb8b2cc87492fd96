"""The reaper's beat entry (editable in the admin like every schedule)."""

import json

from django.conf import settings
from django.db import migrations

REAPER_TASK = "daughters: reaper (TTL, heartbeats, retries)"


def load(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=settings.VX11_DAUGHTER_REAP_INTERVAL, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=REAPER_TASK,
        defaults={
            "task": "apps.daughters.tasks.reap_daughters",
            "interval": every,
            "kwargs": json.dumps({}),
            "description": "Marks daughters past their TTL expired, retries or fails those without a heartbeat, "
            "requeues lost dispatches and prunes old finished tasks.",
            "expire_seconds": max(5, settings.VX11_DAUGHTER_REAP_INTERVAL),
        },
    )


def unload(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=REAPER_TASK).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("daughters", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(load, unload)]
