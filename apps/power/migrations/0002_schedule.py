"""The power checker's beat entries: window expiry every few seconds, action-log pruning hourly.

The schedules live in django-celery-beat's tables, so an operator edits them in the admin.
"""

import json

from django.conf import settings
from django.db import migrations

WINDOW_TASK = "power: expire ttl windows"
PRUNE_TASK = "power: prune the action log"


def load(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=settings.VX11_POWER_WINDOW_CHECK_SECONDS, period="seconds")
    hourly, _ = IntervalSchedule.objects.get_or_create(every=3600, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=WINDOW_TASK,
        defaults={
            "task": "apps.power.tasks.check_power_windows",
            "interval": every,
            "kwargs": json.dumps({}),
            "description": "Stops the modules of a ttl power window when it expires (madre checks every 1 s).",
            "expire_seconds": max(2, settings.VX11_POWER_WINDOW_CHECK_SECONDS),
        },
    )
    PeriodicTask.objects.get_or_create(
        name=PRUNE_TASK,
        defaults={
            "task": "apps.power.tasks.prune_power_actions",
            "interval": hourly,
            "kwargs": json.dumps({}),
            "description": "Deletes power actions older than VX11_POWER_ACTION_RETENTION_DAYS, in chunks.",
        },
    )


def unload(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=[WINDOW_TASK, PRUNE_TASK]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("power", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(load, unload)]
