"""Hand-built metric inputs whose every number is worked out by hand in test_metric_definitions.py.

`good_inputs()` is a whole `gathered` dict (what a snapshot stores as inputs.json) for a healthy fleet with a
few known imperfections; each test changes one part of it and checks the formulas' answer."""

import copy
from datetime import UTC, datetime, timedelta

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def at(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat()


def run_summary(
    run_id: int, passed: int, failed: int = 0, errors: int = 0, skipped: int = 0, kind: str = "unit"
) -> dict:
    return {
        "id": run_id,
        "kind": kind,
        "passed": passed,
        "failed": failed,
        "errors": errors,
        "skipped": skipped,
        "created_at": at(3600),
        "source": "junit",
        "evidence": "",
    }


CORE = ["madre", "tentaculo_link", "switch", "spawner", "hormiguero"]

GOOD = {
    "now": NOW.isoformat(),
    "metrics": {
        # 5 of 5 core modules up, the round 10 s old (bound 3 x 15 s)
        "health_core_pct": {
            "core": CORE,
            "modules": {slug: {"state": "up", "checked_at": at(10)} for slug in CORE},
            "observed_at": at(10),
            "probe_interval_seconds": 15,
            "max_age_seconds": 45,
            "evidence": [{"path": "db:fleet.Module (state, last_checked_at)"}],
        },
        # 3 of 4 flows passed; "D" never ran and is not counted
        "contract_coherence_pct": {
            "flows": {
                "A": {"status": "passed", "finished_at": at(600)},
                "B": {"status": "passed", "finished_at": at(500)},
                "C": {"status": "failed", "finished_at": at(400)},
                "E": {"status": "passed", "finished_at": at(300)},
                "D": {"status": None, "finished_at": None},
            },
            "observed_at": at(600),
            "max_age_seconds": 172800,
            "evidence": [{"path": "db:flows.FlowRun"}],
        },
        # 96 passed, 3 failed + 1 error: 96 / 100
        "tests_p0_pct": {
            "run": run_summary(7, 96, 3, 1, 5),
            "observed_at": at(3600),
            "max_age_seconds": 604800,
            "evidence": [{"path": "db:metrics.TestRun #7"}],
        },
        "db_integrity_pct": {
            "audit": 12,
            "checks": {"quick_check": "ok", "integrity_check": "ok"},
            "integrity": "ok",
            "observed_at": at(7200),
            "max_age_seconds": 172800,
            "evidence": [{"path": "docs/audit/x_audit_all/data/audit_result.json", "sha256": "0" * 64}],
        },
        "Estabilidad_operativa_pct": {"weights": {"health": 0.35, "tests": 0.30, "contract": 0.25, "db": 0.10}},
        "Orden_db_module_assignment_pct": {
            "audit": 12,
            "tables": 20,
            "owned": 17,
            "unowned": ["a", "b", "c"],
            "observed_at": at(7200),
            "max_age_seconds": 172800,
            "evidence": [],
        },
        "Orden_fs_pct": {
            "audit": 12,
            "counts": {"allowed": 26, "present": 24, "extra": 2},
            "extra_roots": ["junk", "tmp2"],
            "missing_roots": ["mcp", "shubniggurath"],
            "fs_reason": "",
            "observed_at": at(7200),
            "max_age_seconds": 172800,
            "evidence": [],
        },
        "Coherencia_routing_pct": {
            "observed_at": at(0),
            "rows": 5000,
            "complete": 4750,
            "problem": "",
            "target": "/x/vx11.db",
            "max_age_seconds": 86400,
            "evidence": [],
        },
        # map fresh, previous scorecard complete, unit run failed, integration run passed: 75
        "Automatizacion_pct": {
            "map_audit": 12,
            "map_at": at(7200),
            "now": NOW.isoformat(),
            "previous_scorecard": 3,
            "previous_complete": True,
            "unit": run_summary(7, 96, 3, 1, 5),
            "integration": run_summary(8, 40, kind="integration"),
            "observed_at": at(0),
            "max_age_seconds": None,
            "evidence": [],
        },
        "Autonomia_pct": {"run": None, "observed_at": None, "evidence": [], "max_age_seconds": 172800},
        "evidence_coverage_pct": {},
        "Global_ponderado_pct": {},
    },
}


def good_inputs() -> dict:
    return copy.deepcopy(GOOD)
