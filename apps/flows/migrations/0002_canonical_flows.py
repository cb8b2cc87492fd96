"""Loads the three canonical E2E flows A, B, C. Their beat entries (one per flow, and a daily prune of old
runs) are in vx11_site.schedules, stored after every migrate.

The step rows are frozen here as literal data (what apps/flows/definitions/{A,B,C}.yaml gave through
check_spec() and Step.fields_from() when this was written), so replaying migrations never depends on live
code: a later change to the validator or to Step's fields cannot break it. The YAML files stay the source for
`vx11 flow load`; tests/flows/test_definitions.py checks that these rows and the YAML still agree.
"""

from django.db import migrations

CANONICAL = ("A", "B", "C")

# every Step field a row below leaves out takes this value
STEP_DEFAULTS = {
    "capture": {},
    "module": "",
    "method": "GET",
    "path": "",
    "headers": {},
    "body": None,
    "timeout": None,
    "expect_status": None,
    "max_latency_ms": None,
    "checks": [],
    "db": {},
    "spawn": {},
}

FLOWS = [
    {
        "name": "A",
        "title": "Gateway → Switch → Hermes → Madre",
        "description": "tentaculo_link proxies to switch, hermes /tools and madre /vx11/intent; madre's plan has the PlanV2 shape.",
        "enabled": True,
        "steps": [
            {
                "position": 1,
                "name": "gateway health",
                "kind": "http",
                "module": "tentaculo_link",
                "path": "/health",
                "expect_status": 200,
                "checks": [
                    {"path": "$.status", "op": "equals", "value": "ok"},
                    {"path": "$.module", "op": "equals", "value": "tentaculo_link"},
                ],
            },
            {
                "position": 2,
                "name": "switch through the gateway",
                "kind": "http",
                "module": "tentaculo_link",
                "path": "/vx11/switch/health",
                "expect_status": 200,
                "checks": [
                    {"path": "$.status", "op": "equals", "value": "ok"},
                    {"path": "$.module", "op": "equals", "value": "switch"},
                    {"path": "$.active_model", "op": "exists", "value": True},
                    {"path": "$.queue_size", "op": "exists", "value": True},
                ],
            },
            {
                "position": 3,
                "name": "hermes tools through the gateway",
                "kind": "http",
                "module": "tentaculo_link",
                "path": "/vx11/hermes/tools",
                "expect_status": 200,
                "checks": [
                    {"path": "$.cli_tools[0].name", "op": "exists", "value": True},
                    {"path": "$.cli_tools[0].available", "op": "one_of", "value": [True, False]},
                    {"path": "$.local_models[0].loaded", "op": "one_of", "value": [True, False]},
                ],
            },
            {
                "position": 4,
                "name": "intent to madre through the gateway",
                "kind": "http",
                "capture": {"intent_id": "$.intent.intent_id", "plan_id": "$.plan.plan_id"},
                "module": "tentaculo_link",
                "method": "POST",
                "path": "/vx11/intent",
                "body": {"text": "status of switch and hermes", "session_id": "flow-a", "mode": "MADRE"},
                "expect_status": 200,
                "checks": [
                    {"path": "$.status", "op": "one_of", "value": ["DONE", "QUEUED", "WAITING"]},
                    {"path": "$.intent.intent_id", "op": "regex", "value": "^[0-9a-f-]{36}$"},
                    {"path": "$.intent.mode", "op": "one_of", "value": ["MADRE", "AUDIO_ENGINEER"]},
                    {"path": "$.intent.dsl.action", "op": "exists", "value": True},
                    {"path": "$.intent.dsl.confidence", "op": "exists", "value": True},
                    {"path": "$.intent.risk", "op": "one_of", "value": ["LOW", "MED", "HIGH"]},
                    {"path": "$.intent.requires_confirmation", "op": "one_of", "value": [True, False]},
                    {"path": "$.intent.targets", "op": "exists", "value": True},
                    {"path": "$.plan.plan_id", "op": "exists", "value": True},
                ],
            },
            {
                "position": 5,
                "name": "madre's plan",
                "kind": "http",
                "module": "madre",
                "path": "/madre/plans/{{ steps.4.plan_id }}",
                "expect_status": 200,
                "checks": [
                    {"path": "$.plan_id", "op": "equals", "value": "{{ steps.4.plan_id }}"},
                    {"path": "$.intent_id", "op": "equals", "value": "{{ steps.4.intent_id }}"},
                    {"path": "$.status", "op": "one_of", "value": ["PENDING", "RUNNING", "WAITING", "DONE"]},
                    {"path": "$.steps[0].type", "op": "equals", "value": "SYSTEM_HEALTHCHECK"},
                    {"path": "$.steps[0].blocking", "op": "one_of", "value": [True, False]},
                    {"path": "$.steps[-1:].payload.reason", "op": "equals", "value": "plan_complete"},
                ],
            },
        ],
    },
    {
        "name": "B",
        "title": "Madre → Daughter → DB",
        "description": "madre plans an intent needing the spawner; the daughters app spawns the daughter; its rows reach finished "
        "within the TTL.",
        "enabled": True,
        "steps": [
            {
                "position": 1,
                "name": "madre health (spawner up)",
                "kind": "http",
                "module": "madre",
                "path": "/health",
                "expect_status": 200,
                "checks": [
                    {"path": "$.status", "op": "equals", "value": "ok"},
                    {"path": "$.deps.spawner", "op": "equals", "value": "up"},
                ],
            },
            {
                "position": 2,
                "name": "intent needing the spawner",
                "kind": "http",
                "capture": {"plan_id": "$.plan.plan_id", "intent_id": "$.intent.intent_id"},
                "module": "madre",
                "method": "POST",
                "path": "/vx11/intent",
                "body": {"text": "run a status check of switch", "session_id": "flow-b", "require": {"spawner": True}},
                "expect_status": 200,
                "checks": [
                    {"path": "$.status", "op": "equals", "value": "QUEUED"},
                    {"path": "$.plan.steps[?(@.type == 'SPAWNER_REQUEST')].status", "op": "equals", "value": "queued"},
                ],
            },
            {
                "position": 3,
                "name": "spawn the daughter",
                "kind": "spawn",
                "spawn": {
                    "params": {
                        "module": "madre",
                        "method": "GET",
                        "path": "/madre/plans/{{ steps.2.plan_id }}",
                        "expect_status": 200,
                    },
                    "source": "madre",
                    "kind": "http",
                    "intent_id": "{{ steps.2.intent_id }}",
                    "ttl_seconds": 30,
                    "max_retries": 0,
                },
            },
            {
                "position": 4,
                "name": "daughter rows reach finished",
                "kind": "db",
                "db": {
                    "model": "daughters.Daughter",
                    "filter": {"task_id": "{{ steps.3.task_id }}"},
                    "expect": {"status": "finished"},
                    "fail_on": {"status__in": ["failed", "killed", "expired"]},
                    "within": 30,
                    "min_count": 1,
                },
            },
        ],
    },
    {
        "name": "C",
        "title": "Hormiguero → Manifestator",
        "description": "hormiguero's scan reports an fs_drift incident; manifestator answers /drift and /generate-patch for its "
        "correlation id.",
        "enabled": True,
        "steps": [
            {
                "position": 1,
                "name": "hormiguero scan",
                "kind": "http",
                "capture": {
                    "incident_id": "$.incidents[?(@.kind == 'fs_drift')].id",
                    "correlation_id": "$.incidents[?(@.kind == 'fs_drift')].correlation_id",
                },
                "module": "hormiguero",
                "method": "POST",
                "path": "/hormiguero/scan",
                "body": {"ants": ["fs_drift", "health", "db_sanity", "cpu_pressure"]},
                "expect_status": 200,
                "checks": [
                    {"path": "$.status", "op": "equals", "value": "done"},
                    {
                        "path": "$.incidents[?(@.kind == 'fs_drift')].severity",
                        "op": "one_of",
                        "value": ["low", "medium", "high", "critical"],
                    },
                ],
            },
            {
                "position": 2,
                "name": "the incident is stored",
                "kind": "http",
                "module": "hormiguero",
                "path": "/hormiguero/incidents/{{ steps.1.incident_id }}",
                "expect_status": 200,
                "checks": [
                    {"path": "$.kind", "op": "equals", "value": "fs_drift"},
                    {"path": "$.status", "op": "equals", "value": "open"},
                    {"path": "$.correlation_id", "op": "equals", "value": "{{ steps.1.correlation_id }}"},
                    {"path": "$.suggested_actions", "op": "exists", "value": True},
                ],
            },
            {
                "position": 3,
                "name": "manifestator drift",
                "kind": "http",
                "capture": {"drift_id": "$.drift_id"},
                "module": "manifestator",
                "path": "/drift?correlation_id={{ steps.1.correlation_id }}",
                "expect_status": 200,
                "checks": [
                    {"path": "$.status", "op": "equals", "value": "drift_detected"},
                    {"path": "$.correlation_id", "op": "equals", "value": "{{ steps.1.correlation_id }}"},
                    {"path": "$.modules[0].module", "op": "exists", "value": True},
                ],
            },
            {
                "position": 4,
                "name": "manifestator patch",
                "kind": "http",
                "capture": {"patch_id": "$.patch_id"},
                "module": "manifestator",
                "method": "POST",
                "path": "/generate-patch",
                "body": {"drift_id": "{{ steps.3.drift_id }}", "correlation_id": "{{ steps.1.correlation_id }}"},
                "expect_status": 200,
                "checks": [
                    {"path": "$.status", "op": "equals", "value": "proposed"},
                    {"path": "$.drift_id", "op": "equals", "value": "{{ steps.3.drift_id }}"},
                    {"path": "$.operations[0].op", "op": "one_of", "value": ["add", "remove", "replace"]},
                ],
            },
        ],
    },
]


def load(apps, schema_editor):
    Flow = apps.get_model("flows", "Flow")
    StepRow = apps.get_model("flows", "Step")
    for spec in FLOWS:
        flow, created = Flow.objects.get_or_create(
            name=spec["name"],
            defaults={"title": spec["title"], "description": spec["description"], "enabled": spec["enabled"]},
        )
        if created:
            StepRow.objects.bulk_create([StepRow(flow=flow, **{**STEP_DEFAULTS, **step}) for step in spec["steps"]])


def unload(apps, schema_editor):
    apps.get_model("flows", "Flow").objects.filter(name__in=CANONICAL).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("flows", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(load, unload)]
