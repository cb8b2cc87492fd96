"""No replay of old history: state changes recorded before notifications existed are marked as claimed (at
their own time), so the first notification sweep does not send the fleet's whole past to every channel.

The sweep's beat entry (every 10 s) is in vx11_site.schedules, stored after every migrate.
"""

from django.db import migrations, models


def load(apps, schema_editor):
    StateChange = apps.get_model("fleet", "StateChange")
    StateChange.objects.filter(claimed_at__isnull=True).update(claimed_at=models.F("at"))


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0004_notifications"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
