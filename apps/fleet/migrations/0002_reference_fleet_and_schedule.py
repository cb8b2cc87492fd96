"""Loads the ten modules of the VX11 fleet (apps.fleet.reference): tentaculo_link, madre, switch, hermes,
hormiguero, manifestator, mcp, shub and spawner on ports 8000 to 8008, and the operator backend on 8011.

Their beat entries are in vx11_site.schedules, stored after every migrate.
"""

from django.conf import settings
from django.db import migrations

from apps.fleet.reference import reference_rows


def load(apps, schema_editor):
    Module = apps.get_model("fleet", "Module")
    for row in reference_rows():
        Module.objects.get_or_create(slug=row["slug"], defaults={**row, "timeout": settings.VX11_PROBE_DEFAULT_TIMEOUT})


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
