"""Queued runs (API ?wait=false, the admin's Run now), an index for unfinished runs by age, and the
beat entry that fails runs left queued or running past their bound (FlowRun.sweep_stale)."""

import django.utils.timezone
from django.db import migrations, models

SWEEP_TASK = "flows: sweep interrupted runs"


def add(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=300, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=SWEEP_TASK,
        defaults={
            "task": "apps.flows.tasks.sweep_stale_runs",
            "interval": every,
            "kwargs": "{}",
            "description": "Fails flow runs still queued or running past VX11_FLOW_RUN_STALE_SECONDS "
            "(or twice the flow's longest wait); their unreached steps are stored as skipped.",
        },
    )


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SWEEP_TASK).delete()


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
        migrations.RunPython(add, remove),
    ]
