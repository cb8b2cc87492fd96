"""Runs heartbeat while they run (FlowRun.heartbeat_at), so the sweep fails a run whose process is gone after
VX11_FLOW_RUN_SILENT_SECONDS instead of VX11_FLOW_RUN_STALE_SECONDS; the sweep's beat entry runs every 30 s
instead of 5 min to match (unless it was edited in the admin)."""

from django.db import migrations, models

SWEEP_TASK = "flows: sweep interrupted runs"


DESCRIPTIONS = {
    30: "Fails flow runs still queued or running past VX11_FLOW_RUN_STALE_SECONDS (or twice the flow's longest wait), "
    "and running runs without a heartbeat for VX11_FLOW_RUN_SILENT_SECONDS; their unreached steps are stored as "
    "skipped.",
    300: "Fails flow runs still queued or running past VX11_FLOW_RUN_STALE_SECONDS "
    "(or twice the flow's longest wait); their unreached steps are stored as skipped.",
}


def sweep_every(seconds: int, was: int):
    def change(apps, schema_editor):
        IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
        PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
        every, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
        PeriodicTask.objects.filter(name=SWEEP_TASK, interval__every=was, interval__period="seconds").update(
            interval=every, description=DESCRIPTIONS[seconds]
        )

    return change


class Migration(migrations.Migration):
    dependencies = [
        ("flows", "0004_run_flow_permission"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.AddField(
            model_name="flowrun",
            name="heartbeat_at",
            field=models.DateTimeField(
                blank=True,
                null=True,
                help_text="while it runs: its runner's last sign of life (every VX11_FLOW_RUN_HEARTBEAT_SECONDS)",
            ),
        ),
        migrations.RunPython(sweep_every(30, was=300), sweep_every(300, was=30)),
    ]
