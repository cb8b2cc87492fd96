"""The outbox: an event is unsent (`sent_at` empty) until the channel layer has it; the beat entry
"events: relay unsent events" sends what a publisher could not. Events stored before count as sent."""

from django.db import migrations, models

RELAY_TASK = "events: relay unsent events"


def mark_existing_sent(apps, schema_editor):
    Event = apps.get_model("events", "Event")
    Event.objects.filter(sent_at__isnull=True).update(sent_at=models.F("timestamp"))


def add_relay(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=5, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=RELAY_TASK,
        defaults={
            "task": "apps.events.tasks.relay_events",
            "interval": every,
            "kwargs": "{}",
            "description": "Sends stored events the channel layer did not take when they were published "
            "(the layer was down, or the publisher ended first), oldest first.",
        },
    )


def remove_relay(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=RELAY_TASK).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0002_prune_schedule"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.AddField(
            model_name="event",
            name="sent_at",
            field=models.DateTimeField(blank=True, help_text="handed to the channel layer; empty: not yet", null=True),
        ),
        migrations.RunPython(mark_existing_sent, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(condition=models.Q(("sent_at__isnull", True)), fields=["id"], name="event_unsent"),
        ),
        migrations.RunPython(add_relay, remove_relay),
    ]
