"""Queued runs (API ?wait=false, the admin's Run now), and an index for unfinished runs by age: the beat
entry "flows: sweep interrupted runs" (vx11_site.schedules) looks them up to fail those past their bound."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("flows", "0002_canonical_flows"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.AlterField(
            model_name="flowrun",
            name="started_at",
            field=models.DateTimeField(
                default=django.utils.timezone.now, help_text="when it started; for a queued run, when it was queued"
            ),
        ),
        migrations.AlterField(
            model_name="flowrun",
            name="status",
            field=models.CharField(
                choices=[("queued", "queued"), ("running", "running"), ("passed", "passed"), ("failed", "failed")],
                default="running",
                max_length=8,
            ),
        ),
        migrations.AddIndex(
            model_name="flowrun",
            index=models.Index(fields=["status", "started_at"], name="flowrun_status_time"),
        ),
    ]
