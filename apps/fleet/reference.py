"""The ten modules of a VX11 deployment, each an HTTP service answering GET /health on its own port.

tentaculo_link, the gateway and only entry point, listens on 8000; madre (the orchestrator) on 8001, switch
8002, hermes 8003, hormiguero 8004, manifestator 8005, mcp 8006, shub 8007 and spawner 8008; the operator
backend on 8011. Five are core (CORE_SLUGS): while one of them is down the fleet is at most partial.
`owned_tables` names the tables of VX11's database that each module owns (a trailing * matches a prefix).

A constant table, read by the data migration and by the demo and test fixtures.
"""

CORE_SLUGS = ("madre", "tentaculo_link", "switch", "spawner", "hormiguero")

REFERENCE_MODULES = [
    {
        "slug": "tentaculo_link",
        "name": "Tentáculo Link",
        "port": 8000,
        "role": "Gateway: the only entry point; proxies /vx11/*, /operator/api/* and /ws",
        "owned_tables": ["events"],
    },
    {
        "slug": "madre",
        "name": "Madre",
        "port": 8001,
        "role": "Orchestrator, power manager, daughter requests",
        "owned_tables": [
            "tasks",
            "intents_log",
            "module_status",
            "power_events",
            "canonical_docs",
            "canonical_kv",
            "canonical_registry",
        ],
    },
    {
        "slug": "switch",
        "name": "Switch",
        "port": 8002,
        "role": "Model/CLI router with a priority queue",
        "owned_tables": ["routing_events", "engines"],
    },
    {
        "slug": "hermes",
        "name": "Hermes",
        "port": 8003,
        "role": "Registry and discovery of local models and CLI tools",
        "owned_tables": ["cli_*", "model_*"],
    },
    {
        "slug": "hormiguero",
        "name": "Hormiguero",
        "port": 8004,
        "role": "Scanners producing incidents and pheromones",
        "owned_tables": ["incidents", "pheromone_log", "hormiga_state"],
    },
    {
        "slug": "manifestator",
        "name": "Manifestator",
        "port": 8005,
        "role": "Drift detection and patches (off by default in compose)",
        "owned_tables": ["drift_reports", "canonical_runs"],
        "accepted_statuses": ["healthy"],
    },
    {
        "slug": "mcp",
        "name": "MCP",
        "port": 8006,
        "role": "Hardened sandbox / Copilot bridge",
        "owned_tables": ["copilot_*", "sandbox_exec"],
    },
    {
        "slug": "shub",
        "name": "Shub-Niggurath",
        "port": 8007,
        "role": "Audio AI (analysis, DSP, mix/master)",
        "owned_tables": ["shub_*"],
    },
    {
        "slug": "spawner",
        "name": "Spawner",
        "port": 8008,
        "role": "Runs ephemeral daughter processes",
        "owned_tables": ["daughter_tasks", "daughters", "daughter_attempts", "spawns"],
    },
    {
        "slug": "operator",
        "name": "Operator backend",
        "port": 8011,
        "role": "Operator API v7 (deprecated upstream; served by the portal)",
        "owned_tables": ["operator_*"],
    },
]


def reference_rows(host: str = "127.0.0.1", port_offset: int = 0) -> list[dict]:
    """Field values for Module rows, one per reference module."""
    rows = []
    for spec in REFERENCE_MODULES:
        port = spec["port"] + port_offset
        rows.append(
            {
                "slug": spec["slug"],
                "name": spec["name"],
                "port": port,
                "base_url": f"http://{host}:{port}",
                "health_path": "/health",
                "role": spec["role"],
                "core": spec["slug"] in CORE_SLUGS,
                "accepted_statuses": spec.get("accepted_statuses", ["ok"]),
                "owned_tables": spec["owned_tables"],
            }
        )
    return rows
