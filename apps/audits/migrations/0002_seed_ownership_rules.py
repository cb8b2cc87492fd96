"""Seeds the ownership rules from the real VX11 DB map (apps.audits.ownership.REAL_MAP) and from each fleet
Module's owned_tables; a pattern already ruled is left as it is."""

from django.db import migrations

from apps.audits.ownership import seed_rules


def seed(apps, schema_editor):
    seed_rules(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("audits", "0001_initial"),
        ("fleet", "0002_reference_fleet_and_schedule"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
