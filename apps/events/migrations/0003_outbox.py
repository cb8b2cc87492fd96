"""The outbox: an event is unsent (`sent_at` empty) until the channel layer has it; the beat entry
"events: relay unsent events" (vx11_site.schedules) sends what a publisher could not. Events stored before
count as sent."""

from django.db import migrations, models


def mark_existing_sent(apps, schema_editor):
    Event = apps.get_model("events", "Event")
    Event.objects.filter(sent_at__isnull=True).update(sent_at=models.F("timestamp"))


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
    ]
