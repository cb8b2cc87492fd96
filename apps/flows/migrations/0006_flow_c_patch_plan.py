"""Flow C gains a fifth step: the fs_drift incident carries the patch plan hormiguero's queen asked manifestator
for (POST /manifestator/patchplan). A database migrated before keeps the four steps of migration 0002 otherwise,
because `Flow.load_canonical()` and migration 0002 only create flows that are missing.

Only a flow C whose steps and description are still exactly migration 0002's is changed, so an operator's own
edits to it stay. The new rows are frozen here as literal data, as in 0002; tests/flows/test_definitions.py
checks that 0002 with this change applied still agrees with apps/flows/definitions/C.yaml.
"""

import importlib

from django.db import migrations

CANONICAL_0002 = importlib.import_module("apps.flows.migrations.0002_canonical_flows")
BEFORE = next(spec for spec in CANONICAL_0002.FLOWS if spec["name"] == "C")

DESCRIPTION = (
    "hormiguero's scan reports an fs_drift incident; manifestator answers /drift and /generate-patch for its "
    "correlation id; the incident carries manifestator's patch plan."
)
STEP_5 = {
    "position": 5,
    "name": "the incident carries manifestator's patch plan",
    "kind": "http",
    "module": "hormiguero",
    "path": "/hormiguero/incidents/{{ steps.1.incident_id }}",
    "expect_status": 200,
    "checks": [
        {"path": "$.patchplan.plan_id", "op": "regex", "value": "^[0-9a-f-]{36}$"},
        {"path": "$.patchplan.actions[0].action", "op": "one_of", "value": ["add", "remove", "verify"]},
        {"path": "$.patchplan.actions[0].target", "op": "exists", "value": True},
        {"path": "$.patchplan.actions[0].reason", "op": "exists", "value": True},
        {"path": "$.patchplan.risk", "op": "one_of", "value": ["low", "mid", "high"]},
        {"path": "$.patchplan.estimated_time_sec", "op": "regex", "value": "^[0-9]+$"},
        {"path": "$.patchplan.notes", "op": "exists", "value": True},
    ],
}
FIELDS = ("position", "name", "kind", *CANONICAL_0002.STEP_DEFAULTS)


def rows_of(flow) -> list[dict]:
    return list(flow.steps.order_by("position").values(*FIELDS))


def frozen(steps: list[dict]) -> list[dict]:
    return [{**CANONICAL_0002.STEP_DEFAULTS, **step} for step in steps]


def add_step(apps, schema_editor):
    flow = apps.get_model("flows", "Flow").objects.filter(name="C").first()
    if flow is None or flow.description != BEFORE["description"] or rows_of(flow) != frozen(BEFORE["steps"]):
        return
    apps.get_model("flows", "Step").objects.create(flow=flow, **frozen([STEP_5])[0])
    flow.description = DESCRIPTION
    flow.save(update_fields=["description"])


def remove_step(apps, schema_editor):
    flow = apps.get_model("flows", "Flow").objects.filter(name="C").first()
    if flow is None or flow.description != DESCRIPTION or rows_of(flow) != frozen([*BEFORE["steps"], STEP_5]):
        return
    flow.steps.filter(position=5).delete()
    flow.description = BEFORE["description"]
    flow.save(update_fields=["description"])


class Migration(migrations.Migration):
    dependencies = [("flows", "0005_run_heartbeat")]

    operations = [migrations.RunPython(add_step, remove_step)]
