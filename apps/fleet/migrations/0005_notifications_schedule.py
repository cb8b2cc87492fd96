"""The notification sweep's beat entry (every 10 s), and no replay of old history.

State changes recorded before notifications existed are marked as claimed (at their own time),
so the first sweep after this migration does not send the fleet's whole past to every channel.
"""

import json

from django.db import migrations, models

NOTIFY_TASK = "fleet: send notifications"


def load(apps, schema_editor):
    StateChange = apps.get_model("fleet", "StateChange")
    StateChange.objects.filter(claimed_at__isnull=True).update(claimed_at=models.F("at"))

    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_10s, _ = IntervalSchedule.objects.get_or_create(every=10, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=NOTIFY_TASK,
        defaults={
            "task": "apps.fleet.tasks.send_notifications",
            "interval": every_10s,
            "kwargs": json.dumps({}),
            "description": "Claims new state changes, creates one delivery per channel (muted inside a "
            "maintenance window), sends due webhooks and e-mails with backoff.",
            "expire_seconds": 10,
        },
    )


def unload(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NOTIFY_TASK).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0004_notifications"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(load, unload)]
