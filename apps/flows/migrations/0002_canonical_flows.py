"""Loads the three canonical E2E flows (apps/flows/definitions/{A,B,C}.yaml) and their beat entries:
one PeriodicTask per flow (edit or disable its schedule in the admin) and a daily prune of old runs.
"""

import json
from django.conf import settings
from django.db import migrations

from apps.flows.models import CANONICAL, DEFINITIONS, Step, check_spec, parse_file

PRUNE_TASK = "flows: prune old runs"


def run_task_name(name: str) -> str:
    return f"flows: run flow {name}"


def load(apps, schema_editor):
    Flow = apps.get_model("flows", "Flow")
    StepRow = apps.get_model("flows", "Step")
    for name in CANONICAL:
        path = DEFINITIONS / f"{name}.yaml"
        spec = check_spec(parse_file(path.read_text(), path.name))
        flow, created = Flow.objects.get_or_create(
            name=spec["name"], defaults={"title": spec["title"], "description": spec["description"], "enabled": spec["enabled"]})
        if created:
            StepRow.objects.bulk_create([StepRow(flow=flow, **Step.fields_from(step)) for step in spec["steps"]])

    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=settings.VX11_FLOW_INTERVAL_SECONDS, period="seconds")
    daily, _ = IntervalSchedule.objects.get_or_create(every=1, period="days")
    for name in CANONICAL:
        PeriodicTask.objects.get_or_create(
            name=run_task_name(name),
            defaults={"task": "apps.flows.tasks.run_flow", "interval": every, "kwargs": json.dumps({"name": name}),
                      "description": f"Runs E2E flow {name}; its result feeds contract_coherence_pct.",
                      "expire_seconds": max(30, settings.VX11_FLOW_INTERVAL_SECONDS)},
        )
    PeriodicTask.objects.get_or_create(
        name=PRUNE_TASK,
        defaults={"task": "apps.flows.tasks.prune_flow_runs", "interval": daily, "kwargs": json.dumps({}),
                  "description": "Deletes flow runs older than VX11_FLOW_RUN_RETENTION_DAYS, in chunks."},
    )


def unload(apps, schema_editor):
    names = [run_task_name(n) for n in CANONICAL] + [PRUNE_TASK]
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=names).delete()
    apps.get_model("flows", "Flow").objects.filter(name__in=CANONICAL).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("flows", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(load, unload)]
