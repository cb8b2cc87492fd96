"""The metrics of the scorecard: one small definition per metric, in one constant table (METRICS).

Each definition has two halves, so that anyone can recompute a stored number:
- `gather(now)` reads the evidence (database rows, an audit's result, the target database) and returns its
  `inputs`: plain JSON numbers and words, with `observed_at` (when the evidence was made) and the evidence
  files it came from. The snapshot stores every metric's inputs in its bag (inputs.json).
- `formula(inputs, earlier)` is pure: from the inputs (and, for derived metrics, the results computed before
  it in the table) it returns `{value, status, calculation, reason, details}` with the numbers filled in.
`evaluate(gathered)` runs the formulas over stored inputs; `verify_snapshot` calls it on a bag's inputs.json and
must get the very numbers that were stored.

A value is a 0-100 number or None: None is NV (no evidence, or evidence older than its freshness bound:
"stale") or deferred (nothing to measure yet), always with the reason. Nothing counts an NV as 0.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

OK = "ok"
FAIL = "fail"
NV = "NV"
DEFERRED = "deferred"
DERIVED = "derived"
ROUTING_ROWS = 5000  # the routing_events rows Coherencia_routing_pct looks at, newest first
DAY = 86400
WEIGHT_NAMES = ("health", "tests", "contract", "db")
# the metrics Estabilidad_operativa_pct weighs, by weight name
WEIGHED = {
    "health": "health_core_pct",
    "tests": "tests_p0_pct",
    "contract": "contract_coherence_pct",
    "db": "db_integrity_pct",
}
VERDICT_RULES = (
    "OPERATIONAL if Estabilidad_operativa_pct >= 75 and strict evidence coverage >= 50 and health_core_pct >= 90; "
    "DEGRADED if Estabilidad_operativa_pct >= 50 and health_core_pct >= 80; otherwise CRITICAL. "
    "An NV value meets no threshold."
)


# --- small helpers -----------------------------------------------------------------------------------


def pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 2)


def shown(value) -> str:
    return NV if value is None else f"{value:g}"


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def parse(moment: str | None) -> datetime | None:
    return None if not moment else datetime.fromisoformat(moment)


def sha256_of(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def evidence_file(relative_bag: str, name: str) -> dict:
    """An evidence file inside a bag: its path relative to the evidence root and its sha256 now."""
    if not relative_bag:
        return {}
    path = f"{relative_bag}/data/{name}"
    return {"path": path, "sha256": sha256_of(Path(settings.VX11_EVIDENCE_ROOT) / path)}


def result(value, status: str, calculation: str, reason: str = "", details: dict | None = None) -> dict:
    return {"value": value, "status": status, "calculation": calculation, "reason": reason, "details": details or {}}


def judged(value: float, pass_at: float | None) -> str:
    """ok, or fail when the value is under the definition's pass mark."""
    return FAIL if pass_at is not None and value < pass_at else OK


def stability_weights(weights: dict | None = None) -> dict[str, float]:
    """Estabilidad's weights (VX11_METRIC_WEIGHTS unless given): health, tests, contract and db, summing to 1."""
    weights = dict(settings.VX11_METRIC_WEIGHTS if weights is None else weights)
    if set(weights) != set(WEIGHT_NAMES):
        raise ImproperlyConfigured(f"metric weights must name exactly {', '.join(WEIGHT_NAMES)}; got {sorted(weights)}")
    total = sum(float(w) for w in weights.values())
    if any(float(w) < 0 for w in weights.values()) or not math.isclose(total, 1.0, abs_tol=1e-9):
        raise ImproperlyConfigured(f"metric weights must be 0 or more and sum to 1; {weights} sum to {total:g}")
    return {name: float(weights[name]) for name in WEIGHT_NAMES}


# --- the definitions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Definition:
    name: str
    source: str  # where the evidence lives; "derived" when computed from other metrics only
    gather: Callable[[datetime], dict] | None  # None for a derived metric
    formula: Callable[[dict, dict], dict]
    max_age: int | None = None  # seconds; older evidence is NV "stale" (VX11_METRIC_MAX_AGE_SECONDS overrides)
    pass_at: float | None = None  # under it the status is fail; None: a measure, ok whenever computed
    counted: bool = True  # one of the metrics evidence coverage and the global mean are taken over

    def freshness(self) -> int | None:
        bound = (settings.VX11_METRIC_MAX_AGE_SECONDS or {}).get(self.name, self.max_age)
        return None if bound is None else int(bound)


# health_core_pct ------------------------------------------------------------------------------------


def gather_health(now: datetime) -> dict:
    from apps.fleet.models import Module
    from apps.fleet.reference import CORE_SLUGS

    rows = Module.objects.filter(slug__in=CORE_SLUGS).values_list("slug", "state", "last_checked_at")
    found = {slug: {"state": state, "checked_at": iso(checked)} for slug, state, checked in rows}
    checked = [parse(m["checked_at"]) for m in found.values() if m["checked_at"]]
    return {
        "core": list(CORE_SLUGS),
        "modules": found,
        "observed_at": iso(max(checked)) if checked else None,
        "probe_interval_seconds": settings.VX11_PROBE_INTERVAL_SECONDS,
        "evidence": [{"path": "db:fleet.Module (state, last_checked_at)"}],
    }


def health_formula(inputs: dict, earlier: dict) -> dict:
    if inputs["observed_at"] is None:
        return result(None, NV, "no probe round recorded", "no probe round has checked a core module")
    up = [slug for slug in inputs["core"] if inputs["modules"].get(slug, {}).get("state") == "up"]
    not_up = {slug: inputs["modules"].get(slug, {}).get("state", "not registered") for slug in inputs["core"]}
    not_up = {slug: state for slug, state in not_up.items() if state != "up"}
    total = len(inputs["core"])
    value = pct(len(up), total)
    return result(
        value,
        judged(value, 90),
        f"{len(up)} core modules up ÷ {total} × 100 = {value:g}",
        "" if not not_up else "not up: " + ", ".join(f"{slug} ({state})" for slug, state in not_up.items()),
        {"up": up, "not_up": not_up},
    )


# contract_coherence_pct -----------------------------------------------------------------------------


def gather_contract(now: datetime) -> dict:
    from django.db.models import OuterRef, Subquery

    from apps.flows.models import Flow, FlowRun

    finished = FlowRun.objects.filter(flow=OuterRef("pk"), status__in=(FlowRun.Status.PASSED, FlowRun.Status.FAILED))
    latest = finished.order_by("-started_at", "-id")
    flows = (
        Flow.objects.filter(enabled=True)
        .annotate(last_status=Subquery(latest.values("status")[:1]), last_at=Subquery(latest.values("finished_at")[:1]))
        .order_by("name")
        .values_list("name", "last_status", "last_at")
    )
    runs = {name: {"status": status, "finished_at": iso(at)} for name, status, at in flows}
    times = [parse(r["finished_at"]) for r in runs.values() if r["finished_at"]]
    return {
        "flows": runs,
        # the oldest latest run counted: the whole number is as old as its oldest part
        "observed_at": iso(min(times)) if times else None,
        "evidence": [{"path": "db:flows.FlowRun (latest finished run of each enabled flow)"}],
    }


def contract_formula(inputs: dict, earlier: dict) -> dict:
    ran = {name: run["status"] for name, run in inputs["flows"].items() if run["status"]}
    never = sorted(name for name, run in inputs["flows"].items() if not run["status"])
    if not ran:
        reason = "no enabled flow" if not inputs["flows"] else "no enabled flow has a finished run"
        return result(None, NV, "no finished run", reason, {"never_run": never})
    passed = sum(status == "passed" for status in ran.values())
    value = pct(passed, len(ran))
    failed = sorted(name for name, status in ran.items() if status != "passed")
    return result(
        value,
        judged(value, 100),
        f"{passed} flows passed ÷ {len(ran)} flows run × 100 = {value:g}",
        "" if not failed else "failed: " + ", ".join(failed),
        {"latest": ran, "never_run": never},
    )


# tests_p0_pct ---------------------------------------------------------------------------------------


def latest_test_run(kind: str) -> dict | None:
    from .models import TestRun

    run = TestRun.objects.filter(kind=kind).order_by("-created_at", "-id").first()
    return None if run is None else run.as_dict()


def gather_tests(now: datetime) -> dict:
    run = latest_test_run("unit")
    return {
        "run": run,
        "observed_at": run["created_at"] if run else None,
        "evidence": [
            {"path": f"db:metrics.TestRun #{run['id']}" + (f" ({run['evidence']})" if run["evidence"] else "")}
        ]
        if run
        else [],
    }


def tests_formula(inputs: dict, earlier: dict) -> dict:
    run = inputs["run"]
    if run is None:
        return result(None, DEFERRED, "no test run stored", "no unit test run stored yet (upload a report)")
    failed = run["failed"] + run["errors"]
    counted = run["passed"] + failed
    if counted == 0:
        return result(None, DEFERRED, "0 tests counted", f"test run #{run['id']} has no passed or failed test")
    value = pct(run["passed"], counted)
    return result(
        value,
        judged(value, 100),
        f"{run['passed']} passed ÷ ({run['passed']} passed + {failed} failed or errored) × 100 = {value:g}",
        "" if not failed else f"{failed} test(s) failed or errored",
        {"test_run": run["id"], "skipped": run["skipped"], "source": run["source"]},
    )


# db_integrity_pct and the audits' metrics ------------------------------------------------------------


def latest_audit(kinds: tuple[str, ...], key: str) -> dict | None:
    """The newest finished audit of `kinds` whose result has `key`: id, end, bag and that part of the result."""
    from apps.audits.models import AuditRun

    runs = AuditRun.objects.filter(kind__in=kinds).exclude(status__in=AuditRun.UNFINISHED).order_by("-id")
    for run in runs.only("id", "ended_at", "evidence_path", "result", "status")[:20]:
        if key in run.result:
            return {
                "id": run.id,
                "ended_at": iso(run.ended_at),
                "bag": run.evidence_path,
                "result": run.result,
            }
    return None


def audit_evidence(audit: dict | None) -> list[dict]:
    if audit is None:
        return []
    found = evidence_file(audit["bag"], "audit_result.json")
    return [found] if found else [{"path": f"db:audits.AuditRun #{audit['id']}"}]


def check_state(outcome) -> str:
    """ok, failed, or NV (skipped, could not run, absent) from an audit's stored check outcome."""
    if outcome == "ok":
        return "ok"
    if isinstance(outcome, dict) and "findings" in outcome:
        return "failed"
    return NV


def gather_integrity(now: datetime) -> dict:
    audit = latest_audit(("db", "map", "all"), "checks")
    checks = {} if audit is None else audit["result"]["checks"]
    states = {name: check_state(checks.get(name)) for name in ("quick_check", "integrity_check")}
    if audit is not None and "amcheck" in checks:  # a PostgreSQL target: amcheck is its integrity check
        states = {"amcheck": check_state(checks["amcheck"])}
    return {
        "audit": None if audit is None else audit["id"],
        "checks": states,
        "integrity": None if audit is None else audit["result"].get("integrity"),
        "observed_at": None if audit is None else audit["ended_at"],
        "evidence": audit_evidence(audit),
    }


def integrity_formula(inputs: dict, earlier: dict) -> dict:
    if inputs["audit"] is None:
        return result(None, NV, "no database audit", "no audit has checked the database")
    checks = inputs["checks"]
    listed = ", ".join(f"{name} {state}" for name, state in checks.items())
    failed = [name for name, state in checks.items() if state == "failed"]
    if failed:
        return result(0.0, FAIL, f"{listed}: 0", f"{', '.join(failed)} failed (audit #{inputs['audit']})", checks)
    unverified = [name for name, state in checks.items() if state != "ok"]
    if unverified:
        reason = f"{', '.join(unverified)} skipped or absent in audit #{inputs['audit']}"
        return result(None, NV, f"{listed}: NV", reason, checks)
    return result(100.0, OK, f"{listed}: 100", "", checks)


def gather_assignment(now: datetime) -> dict:
    audit = latest_audit(("map", "all"), "map")
    found = None if audit is None else audit["result"]["map"]
    return {
        "audit": None if audit is None else audit["id"],
        "tables": None if found is None else found["tables"],
        "owned": None if found is None else found["owned"],
        "unowned": [] if found is None else found.get("unowned", [])[:50],
        "observed_at": None if audit is None else audit["ended_at"],
        "evidence": audit_evidence(audit),
    }


def assignment_formula(inputs: dict, earlier: dict) -> dict:
    if inputs["audit"] is None:
        return result(None, NV, "no DB map", "no audit has mapped the database")
    if not inputs["tables"]:
        return result(None, NV, "0 tables", f"the database of audit #{inputs['audit']} has no tables")
    value = round(100.0 * inputs["owned"] / inputs["tables"], 1)  # as the DB map rounds it
    return result(
        value,
        OK,
        f"{inputs['owned']} tables with an owning module ÷ {inputs['tables']} tables × 100 = {value:g}",
        "" if not inputs["unowned"] else f"{inputs['tables'] - inputs['owned']} table(s) without an owner",
        {"unowned": inputs["unowned"]},
    )


def gather_fs(now: datetime) -> dict:
    audit = latest_audit(("fs", "all"), "fs")
    found = {} if audit is None else audit["result"]["fs"]
    counts = found.get("counts") or {}
    return {
        "audit": None if audit is None else audit["id"],
        "counts": {key: counts.get(key) for key in ("allowed", "present", "extra")},
        "extra_roots": found.get("extra_roots", [])[:50],
        "missing_roots": found.get("missing_roots", [])[:50],
        "fs_reason": found.get("reason", ""),
        "observed_at": None if audit is None else audit["ended_at"],
        "evidence": audit_evidence(audit),
    }


def fs_formula(inputs: dict, earlier: dict) -> dict:
    if inputs["audit"] is None:
        return result(None, NV, "no filesystem check", "no audit has checked the managed tree")
    counts = inputs["counts"]
    if counts["present"] is None or not (counts["allowed"] or 0) + (counts["extra"] or 0):
        reason = inputs["fs_reason"] or f"audit #{inputs['audit']} could not check the tree"
        return result(None, NV, "no counts", reason)
    considered = counts["allowed"] + counts["extra"]
    value = pct(counts["present"], considered)
    return result(
        value,
        OK,
        f"{counts['present']} present ÷ ({counts['allowed']} allowed + {counts['extra']} extra) × 100 = {value:g}",
        "",
        {"extra_roots": inputs["extra_roots"], "missing_roots": inputs["missing_roots"]},
    )


# Coherencia_routing_pct -----------------------------------------------------------------------------

ROUTING_SQL = (
    "SELECT count(*), "
    "sum(CASE WHEN provider IS NOT NULL AND provider <> '' AND cost IS NOT NULL "
    "AND reason IS NOT NULL AND reason <> '' THEN 1 ELSE 0 END) "
    f"FROM (SELECT provider, cost, reason FROM routing_events ORDER BY id DESC LIMIT {ROUTING_ROWS}) AS recent"
)


def gather_routing(now: datetime) -> dict:
    """Read the target database (read-only, as every audit opens it) for the newest routing_events rows."""
    from apps.audits.target import BadTarget, check_sqlite_path, describe, open_postgres, open_sqlite

    base = {"observed_at": iso(now), "rows": None, "complete": None, "problem": ""}
    try:
        spec = describe(settings.VX11_TARGET_DB)
        base["target"] = spec.shown
        base["evidence"] = [{"path": f"target:{spec.shown} (routing_events, read-only)"}]
        if spec.kind == "sqlite":
            conn = open_sqlite(check_sqlite_path(spec.location))
            present = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='routing_events'")
        else:
            conn = open_postgres(spec.location, settings.VX11_AUDIT_INTEGRITY_TIMEOUT)
            present = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'routing_events'")
    except BadTarget as bad:
        return {**base, "target": base.get("target", ""), "problem": f"target not readable: {bad}", "evidence": []}
    try:
        if present.fetchone() is None:
            return {**base, "problem": "the target has no routing_events table"}
        rows, complete = conn.execute(ROUTING_SQL).fetchone()
    except Exception as exc:  # a table of another shape (no provider column, ...): NV with the database's word
        return {**base, "problem": f"routing_events cannot be read: {exc}"}
    finally:
        conn.close()
    return {**base, "rows": int(rows), "complete": int(complete or 0)}


def routing_formula(inputs: dict, earlier: dict) -> dict:
    if inputs["rows"] is None:
        return result(None, NV, "routing_events not read", inputs["problem"])
    if inputs["rows"] == 0:
        return result(None, NV, "0 rows", "routing_events has no rows")
    value = pct(inputs["complete"], inputs["rows"])
    return result(
        value,
        OK,
        f"{inputs['complete']} rows with provider, cost and reason ÷ {inputs['rows']} newest rows × 100 = {value:g}",
        "",
        {"window": ROUTING_ROWS},
    )


# Automatizacion_pct ---------------------------------------------------------------------------------


def gather_automation(now: datetime) -> dict:
    from .models import Scorecard

    audit = latest_audit(("map", "all"), "map")
    previous = Scorecard.objects.filter(generated_at__lte=now).order_by("-generated_at", "-id").first()
    return {
        "map_audit": None if audit is None else audit["id"],
        "map_at": None if audit is None else audit["ended_at"],
        "now": iso(now),
        "previous_scorecard": None if previous is None else previous.id,
        "previous_complete": None if previous is None else previous.complete,
        "unit": latest_test_run("unit"),
        "integration": latest_test_run("integration"),
        "observed_at": iso(now),
        "evidence": audit_evidence(audit),
    }


def run_passed(run: dict | None) -> bool:
    return run is not None and run["passed"] > 0 and run["failed"] == 0 and run["errors"] == 0


def automation_formula(inputs: dict, earlier: dict) -> dict:
    map_at = parse(inputs["map_at"])
    fresh_map = map_at is not None and parse(inputs["now"]) - map_at < timedelta(seconds=DAY)
    criteria = {
        "db_map_fresh": fresh_map,
        "previous_scorecard_complete": bool(inputs["previous_complete"]),
        "unit_tests_passed": run_passed(inputs["unit"]),
        "integration_tests_passed": run_passed(inputs["integration"]),
    }
    points = {name: 25 if met else 0 for name, met in criteria.items()}
    value = float(sum(points.values()))
    missing = [name for name, met in criteria.items() if not met]
    return result(
        value,
        OK,
        " + ".join(f"{p} ({name})" for name, p in points.items()) + f" = {value:g}",
        "" if not missing else "not met: " + ", ".join(missing),
        {"criteria": criteria},
    )


# Autonomia_pct: the pipeline (issue 15) registers where its latest run's record is -------------------

_pipeline_source: Callable[[], dict | None] | None = None


def register_pipeline_source(source: Callable[[], dict | None]) -> None:
    """The pipeline app calls this in its ready(): `source()` returns its latest run's record, {run, finished_at,
    phases_total, phases_unattended, evidence_path}, or None before the first run. Metrics never imports it."""
    global _pipeline_source
    _pipeline_source = source


def gather_autonomy(now: datetime) -> dict:
    record = None if _pipeline_source is None else _pipeline_source()
    if record is None:
        return {"run": None, "observed_at": None, "evidence": []}
    finished = record.get("finished_at")
    return {
        "run": record["run"],
        "phases_total": int(record["phases_total"]),
        "phases_unattended": int(record["phases_unattended"]),
        "observed_at": iso(finished) if isinstance(finished, datetime) else finished,
        "evidence": [{"path": record.get("evidence_path") or f"db:pipeline run {record['run']}"}],
    }


def autonomy_formula(inputs: dict, earlier: dict) -> dict:
    if inputs["run"] is None:
        return result(None, NV, "no pipeline run", "no pipeline run recorded")
    if not inputs["phases_total"]:
        return result(None, NV, "0 phases", f"pipeline run {inputs['run']} recorded no phase")
    value = pct(inputs["phases_unattended"], inputs["phases_total"])
    return result(
        value,
        OK,
        f"{inputs['phases_unattended']} phases completed with no human action ÷ {inputs['phases_total']} phases "
        f"× 100 = {value:g}",
    )


# derived metrics ------------------------------------------------------------------------------------


def stability_formula(inputs: dict, earlier: dict) -> dict:
    weights = stability_weights(inputs["weights"])
    gate = earlier["db_integrity_pct"]["details"].get("integrity_check") or earlier["db_integrity_pct"]["details"].get(
        "amcheck"
    )
    values = {key: earlier[name]["value"] for key, name in WEIGHED.items()}
    details = {"weights": weights, "inputs": values, "integrity_check": gate or NV}
    if gate != "ok":
        why = "failed" if gate == "failed" else "was not verified (skipped, absent or stale)"
        return result(
            0.0,
            FAIL,
            f"gate: integrity_check is {gate or NV}, not ok: 0",
            f"gated: the database's integrity_check {why}",
            details,
        )
    missing = [WEIGHED[key] for key, value in values.items() if value is None]
    terms = " + ".join(f"{weights[key]:g}×{shown(values[key])}" for key in WEIGHT_NAMES)
    if missing:
        return result(
            None,
            NV,
            f"{terms}: NV (an NV input makes the sum NV; it is never counted as 0)",
            "NV inputs: " + ", ".join(missing),
            details,
        )
    value = round(sum(weights[key] * values[key] for key in WEIGHT_NAMES), 2)
    return result(value, judged(value, 75), f"{terms} = {value:g}", "", details)


def coverage_formula(inputs: dict, earlier: dict) -> dict:
    counted = [d for d in METRICS if d.counted]
    verified = [d.name for d in counted if earlier[d.name]["status"] not in (NV, DEFERRED)]
    strict = [name for name in verified if BY_NAME[name].source != DERIVED]
    overall = pct(len(verified), len(counted))
    strict_value = pct(len(strict), len(counted))
    details = {
        "coverage_overall": {
            "value": overall,
            "calculation": f"{len(verified)} metrics with evidence ÷ {len(counted)} metrics × 100 = {overall:g}",
            "count": len(verified),
        },
        "coverage_strict": {
            "value": strict_value,
            "calculation": f"{len(strict)} metrics with direct evidence (not derived) ÷ {len(counted)} metrics × 100 "
            f"= {strict_value:g}",
            "count": len(strict),
        },
        "unverified": [d.name for d in counted if d.name not in verified],
    }
    reason = "" if not details["unverified"] else "NV or deferred: " + ", ".join(details["unverified"])
    return result(overall, OK, details["coverage_overall"]["calculation"], reason, details)


def global_formula(inputs: dict, earlier: dict) -> dict:
    values = {d.name: earlier[d.name]["value"] for d in METRICS if d.counted}
    used = {name: value for name, value in values.items() if value is not None}
    if not used:
        return result(None, NV, "no value to average", "every metric is NV or deferred", {"count": 0})
    value = round(sum(used.values()) / len(used), 2)
    return result(
        value,
        OK,
        f"({' + '.join(f'{v:g}' for v in used.values())}) ÷ {len(used)} = {value:g}",
        "" if len(used) == len(values) else f"mean of {len(used)} of {len(values)} metrics (NV ones left out)",
        {"count": len(used), "averaged": sorted(used), "left_out": sorted(set(values) - set(used))},
    )


def no_gather(now: datetime) -> dict:
    return {}


METRICS: tuple[Definition, ...] = (
    Definition("health_core_pct", "fleet.Module: latest probe round", gather_health, health_formula, pass_at=90),
    Definition("contract_coherence_pct", "flows.FlowRun", gather_contract, contract_formula, 2 * DAY, 100),
    Definition("tests_p0_pct", "metrics.TestRun (unit)", gather_tests, tests_formula, 7 * DAY, 100),
    Definition(
        "db_integrity_pct", "audits: quick_check, integrity_check", gather_integrity, integrity_formula, 2 * DAY
    ),
    Definition(
        "Estabilidad_operativa_pct", DERIVED, None, stability_formula, pass_at=75
    ),  # weighs the four above; gated on integrity_check
    Definition("Orden_db_module_assignment_pct", "audits: DB map", gather_assignment, assignment_formula, 2 * DAY),
    Definition("Orden_fs_pct", "audits: filesystem check", gather_fs, fs_formula, 2 * DAY),
    Definition("Coherencia_routing_pct", "target database: routing_events", gather_routing, routing_formula, DAY),
    Definition(
        "Automatizacion_pct", "audits DB map, metrics.Scorecard, metrics.TestRun", gather_automation, automation_formula
    ),
    Definition("Autonomia_pct", "pipeline: latest run", gather_autonomy, autonomy_formula, 2 * DAY),
    Definition("evidence_coverage_pct", DERIVED, None, coverage_formula, counted=False),
    Definition("Global_ponderado_pct", DERIVED, None, global_formula, counted=False),
)
BY_NAME = {d.name: d for d in METRICS}


# --- gathering and evaluating ------------------------------------------------------------------------


def gather(now: datetime | None = None) -> dict:
    """Every metric's inputs as of `now`, with each one's freshness bound: what a snapshot stores (inputs.json)."""
    now = now or timezone.now()
    weights = stability_weights()  # refused before anything is read
    metrics = {}
    for definition in METRICS:
        inputs = definition.gather(now) if definition.gather else {}
        bound = definition.freshness()
        if definition.name == "health_core_pct" and bound is None:
            bound = 3 * settings.VX11_PROBE_INTERVAL_SECONDS  # a round younger than 3 probe intervals
        if definition.gather:
            inputs["max_age_seconds"] = bound
        if definition.name == "Estabilidad_operativa_pct":
            inputs["weights"] = weights
        metrics[definition.name] = inputs
    return {"now": iso(now), "metrics": metrics}


def stale(inputs: dict, now: datetime) -> str:
    """The "stale" reason when the evidence is older than the metric's bound, else ""."""
    bound = inputs.get("max_age_seconds")
    observed = parse(inputs.get("observed_at"))
    if bound is None or observed is None:
        return ""
    age = (now - observed).total_seconds()
    if age <= bound:
        return ""
    return f"stale: the evidence is from {observed.isoformat()}, {age:.0f} s old, over its {bound} s bound"


def evaluate(gathered: dict) -> dict[str, dict]:
    """Run every formula over stored inputs (the same code for a snapshot and for its verification)."""
    now = parse(gathered["now"])
    results: dict[str, dict] = {}
    for definition in METRICS:
        inputs = gathered["metrics"].get(definition.name, {})
        old = stale(inputs, now)
        if old:
            outcome = result(None, NV, "stale evidence: not computed", old)
        else:
            outcome = definition.formula(inputs, results)
        evidence = inputs.get("evidence") or []
        results[definition.name] = {
            **outcome,
            "source": definition.source,
            "evidence_path": evidence[0]["path"] if evidence else "",
            "inputs": inputs,
        }
    return results


def verdict(results: dict[str, dict]) -> tuple[str, dict]:
    """OPERATIONAL, DEGRADED or CRITICAL, and the decision logic written out."""
    stability = results["Estabilidad_operativa_pct"]["value"]
    health = results["health_core_pct"]["value"]
    strict = results["evidence_coverage_pct"]["details"]["coverage_strict"]["value"]

    def at_least(value, bound) -> bool:
        return value is not None and value >= bound

    operational = at_least(stability, 75) and at_least(strict, 50) and at_least(health, 90)
    degraded = at_least(stability, 50) and at_least(health, 80)
    status = "OPERATIONAL" if operational else "DEGRADED" if degraded else "CRITICAL"
    logic = {
        "Estabilidad_value": stability if stability is not None else NV,
        "Estabilidad_threshold": 75,
        "coverage_strict_check": f"{shown(strict)} >= 50: {at_least(strict, 50)}",
        "health_services_check": f"{shown(health)} >= 90: {at_least(health, 90)}",
        "all_flows_pass": results["contract_coherence_pct"]["value"] == 100,
        "db_integrity_status": results["db_integrity_pct"]["status"],
        "rules": VERDICT_RULES,
        "because": (
            f"Estabilidad {shown(stability)} (>= 75: {at_least(stability, 75)}, >= 50: {at_least(stability, 50)}), "
            f"strict coverage {shown(strict)} (>= 50: {at_least(strict, 50)}), health {shown(health)} "
            f"(>= 90: {at_least(health, 90)}, >= 80: {at_least(health, 80)}): {status}"
        ),
    }
    return status, logic


def compute(now: datetime | None = None) -> dict[str, dict]:
    """name -> {value, status, source, evidence_path, calculation, reason, details, inputs}, as of `now`."""
    return evaluate(gather(now))
