"""No operation: the beat entry that prunes stored events is in vx11_site.schedules, stored after every
migrate. The migration stays so that the graph of every database that applied it is unchanged."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = []
