from django.db import migrations, models

import apps.power.models


class Migration(migrations.Migration):
    dependencies = [
        ("power", "0003_window_stops_pending_result"),
    ]

    operations = [
        migrations.AlterField(
            model_name="servicecontrol",
            name="module",
            field=models.OneToOneField(
                on_delete=apps.power.models.protect_running, related_name="control", to="fleet.module"
            ),
        ),
    ]
