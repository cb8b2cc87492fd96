"""A snapshot of the scorecard: compute every metric, store it, prove it, and check the proof later.

`take_snapshot()` gathers every metric's inputs (apps.metrics.definitions), evaluates them, and writes
- a `Scorecard` row and one `MetricSnapshot` row per metric;
- an evidence bag docs/audit/<stamp>_metrics_scorecard_<id>/ holding inputs.json (every metric's inputs, the
  evidence files they came from with their sha256, the SCORECARD facts), PERCENTAGES.json and SCORECARD.json;
- the same two files as the "latest" copies directly in docs/audit/ (atomically);
and announces the new scorecard (`status_changed`, source "metrics").

`verify_snapshot()` recomputes a snapshot from its bag's inputs.json with the same formulas and compares: the
numbers with the stored rows, the files it rebuilds with the stored hashes, the bag and the evidence files it
names with their hashes, and, for the latest snapshot, the copies in docs/audit/ with the snapshot's files.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.events.models import publish
from apps.evidence import bags

from . import definitions
from .definitions import NV, iso, parse, sha256_of
from .models import MetricSnapshot, Scorecard

VERSION = "9.0"  # the PERCENTAGES.json layout VX11's readers know
BAG_NAME = "metrics_scorecard"
INPUTS = "inputs.json"
PERCENTAGES = "PERCENTAGES.json"
SCORECARD = "SCORECARD.json"
# SCORECARD.json's percentages, as VX11's root copy lists them
SCORECARD_PERCENTAGES = (
    "Orden_fs_pct",
    "Coherencia_routing_pct",
    "Automatizacion_pct",
    "Autonomia_pct",
    "Global_ponderado_pct",
)


def dumps(data: dict) -> bytes:
    """The one serialisation of the files, so a rebuild is byte for byte the same."""
    return (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode()


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def flat(value):
    return NV if value is None else value


# --- the facts of SCORECARD.json --------------------------------------------------------------------


def count_files(folder: Path) -> int | None:
    if not folder.is_dir() or folder.is_symlink():
        return None
    return sum(1 for entry in folder.iterdir() if entry.is_file() and not entry.is_symlink())


def gather_facts() -> dict:
    """What SCORECARD.json says besides percentages: the latest database audit's integrity and sizes, the backups."""
    audit = definitions.latest_audit(("db", "map", "all"), "checks")
    found = {} if audit is None else audit["result"]
    counts = found.get("counts") or {}
    root = Path(settings.VX11_ROOT)
    return {
        "audit": None if audit is None else audit["id"],
        "integrity": found.get("integrity") or NV,
        "total_tables": len(counts["tables"]) if "tables" in counts else None,
        "total_rows": counts.get("total_rows"),
        "db_size_bytes": (found.get("stats") or {}).get("size_bytes"),
        "backup_db_count": count_files(root / "data" / "backups"),
        "backups_archived_count": count_files(root / "data" / "backups" / "archived"),
    }


# --- the files -------------------------------------------------------------------------------------


def percentages_file(gathered: dict, results: dict, status: str, logic: dict) -> dict:
    context = gathered["context"]
    metrics = {}
    for name, outcome in results.items():
        entry = {
            "value": flat(outcome["value"]),
            "status": outcome["status"],
            "source": outcome["source"],
            "evidence_path": outcome["evidence_path"],
            "calculation": outcome["calculation"],
        }
        if outcome["reason"]:
            entry["reason"] = outcome["reason"]
        entry["details"] = outcome["details"]
        if name == "Estabilidad_operativa_pct":
            entry["weights"] = outcome["details"].get("weights") or outcome["inputs"].get("weights")
            entry["inputs"] = outcome["details"].get("inputs", {})
        if name == "evidence_coverage_pct":
            entry["coverage_strict"] = outcome["details"]["coverage_strict"]
            entry["coverage_overall"] = outcome["details"]["coverage_overall"]
        metrics[name] = entry
    unverified = results["evidence_coverage_pct"]["details"]["unverified"]
    weights = results["Estabilidad_operativa_pct"]["inputs"]["weights"]
    return {
        "version": VERSION,
        "generated_at": gathered["now"],
        "outdir": context["outdir"],
        "audit_context": {
            "input_sources": context["input_sources"],
            "evidence_complete": not unverified,
            "reason_incomplete": "" if not unverified else "NV or deferred: " + ", ".join(unverified),
        },
        "metrics": metrics,
        "metrics_flat": {name: flat(outcome["value"]) for name, outcome in results.items()},
        "autonomy_verdict": {"status": status, "decision_logic": logic},
        "validation_checksums": {
            "weights_sum": round(sum(weights.values()), 9),
            "metrics_count": len(results),
            "inputs_sha256": context["inputs_sha256"],
        },
    }


def scorecard_file(gathered: dict, results: dict) -> dict:
    facts = gathered["facts"]
    notes = [
        f"{name}: {outcome['status']} ({outcome['reason']})"
        for name, outcome in results.items()
        if outcome["value"] is None
    ]
    return {
        "generated_ts": parse(gathered["now"]).astimezone(UTC).strftime(bags.STAMP),
        "integrity": facts["integrity"],
        "total_tables": facts["total_tables"],
        "total_rows": facts["total_rows"],
        "db_size_bytes": facts["db_size_bytes"],
        "backup_db_count": facts["backup_db_count"],
        "backups_archived_count": facts["backups_archived_count"],
        "percentages": {name: flat(results[name]["value"]) for name in SCORECARD_PERCENTAGES},
        "notes": notes,
    }


def build_files(gathered: dict) -> tuple[dict, str, dict, bytes, bytes]:
    """(results, verdict, decision logic, PERCENTAGES.json, SCORECARD.json) from stored inputs: pure."""
    results = definitions.evaluate(gathered)
    status, logic = definitions.verdict(results)
    percentages = dumps(percentages_file(gathered, results, status, logic))
    scorecard = dumps(scorecard_file(gathered, results))
    return results, status, logic, percentages, scorecard


def input_sources(gathered: dict) -> list[dict]:
    """Every evidence path the metrics read, once, with its sha256 where it is a file."""
    seen = {}
    for inputs in gathered["metrics"].values():
        for item in inputs.get("evidence") or []:
            seen.setdefault(item["path"], item)
    return list(seen.values())


# --- taking a snapshot ------------------------------------------------------------------------------


def take_snapshot(now: datetime | None = None, actor: str = "") -> Scorecard:
    """Compute every metric as of `now`, store the rows, write the bag and the latest files, announce it."""
    now = (now or timezone.now()).astimezone(UTC).replace(microsecond=0)
    gathered = definitions.gather(now)
    gathered["facts"] = gather_facts()
    with transaction.atomic():
        card = Scorecard.objects.create(generated_at=now, actor=actor[:150], verdict=Scorecard.Verdict.CRITICAL)
        folder = f"{now:{bags.STAMP}}_{BAG_NAME}_{card.id}"
        gathered["context"] = {
            "scorecard": card.id,
            "outdir": f"docs/audit/{folder}",
            "input_sources": input_sources(gathered),
        }
        inputs_json = dumps(gathered)
        gathered["context"]["inputs_sha256"] = sha256(inputs_json)
        results, status, logic, percentages, scorecard = build_files(gathered)
        MetricSnapshot.objects.bulk_create(
            [
                MetricSnapshot(
                    scorecard=card,
                    name=name,
                    value=outcome["value"],
                    status=outcome["status"],
                    source=outcome["source"][:200],
                    evidence_path=outcome["evidence_path"][:500],
                    calculation=outcome["calculation"],
                    reason=outcome["reason"],
                    details=outcome["details"],
                    inputs=outcome["inputs"],
                )
                for name, outcome in results.items()
            ]
        )
        coverage = results["evidence_coverage_pct"]["details"]
        bag = bags.write_bag(
            BAG_NAME,
            "metrics",
            {INPUTS: inputs_json, PERCENTAGES: percentages, SCORECARD: scorecard},
            info={"description": f"VX11 scorecard #{card.id}: {status}", "started_at": iso(now)},
            run_id=str(card.id),
            now=now,
            folder_name=folder,
        )
        card.verdict = status
        card.decision_logic = logic
        card.evidence_path = bag.path
        card.percentages_sha256 = sha256(percentages)
        card.scorecard_sha256 = sha256(scorecard)
        card.coverage = {
            "overall": coverage["coverage_overall"]["value"],
            "strict": coverage["coverage_strict"]["value"],
            "unverified": coverage["unverified"],
            "complete": not coverage["unverified"],
        }
        card.save()
        publish("status_changed", {"source": "metrics", "scorecard": card.id, "verdict": status})
    # after the commit (an outer transaction, as in a test, keeps the rows it sees): the latest copies
    bags.write_latest({PERCENTAGES: percentages, SCORECARD: scorecard})
    return card


# --- verifying a snapshot ---------------------------------------------------------------------------


def _bag_state(path: str) -> dict:
    from apps.evidence.models import Evidence

    row = Evidence.objects.filter(path=path).first()
    found = bags.verify(path) if row is None else bags.verify_indexed(row)
    return {"path": path, "state": found["state"], "files": found.get("files", []), "ok": found["state"] == "valid"}


def _same(stored, recomputed) -> bool:
    return stored == recomputed or (stored is not None and recomputed is not None and abs(stored - recomputed) < 1e-9)


def verify_snapshot(scorecard: Scorecard) -> dict:
    """{ok, metrics: [{name, stored, recomputed, match}], evidence: [...], files: {...}, latest_files: {...}}."""
    report = {"scorecard": scorecard.id, "ok": False, "metrics": [], "evidence": [], "files": {}, "latest_files": {}}
    folder = bags.evidence_root() / scorecard.evidence_path
    report["evidence"].append({"what": "the snapshot's bag", **_bag_state(scorecard.evidence_path)})
    try:
        raw = (folder / "data" / INPUTS).read_bytes()
        gathered = json.loads(raw)
        gathered["context"]["inputs_sha256"] = sha256(raw)  # as take_snapshot names the file it wrote
        results, status, _logic, percentages, scorecard_json = build_files(gathered)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report["error"] = f"inputs.json of the bag cannot be recomputed: {type(exc).__name__}: {exc}"
        return report
    stored = {row.name: row for row in scorecard.metrics.all()}
    for name in list(results) + [n for n in stored if n not in results]:
        row = stored.get(name)
        outcome = results.get(name)
        entry = {
            "name": name,
            "stored": None if row is None else {"value": row.value, "status": row.status},
            "recomputed": None if outcome is None else {"value": outcome["value"], "status": outcome["status"]},
        }
        entry["match"] = (
            row is not None
            and outcome is not None
            and row.status == outcome["status"]
            and _same(row.value, outcome["value"])
        )
        report["metrics"].append(entry)
    report["verdict"] = {"stored": scorecard.verdict, "recomputed": status, "match": scorecard.verdict == status}
    report["files"] = {
        PERCENTAGES: {
            "stored_sha256": scorecard.percentages_sha256,
            "recomputed_sha256": sha256(percentages),
            "in_bag_sha256": sha256_of(folder / "data" / PERCENTAGES),
        },
        SCORECARD: {
            "stored_sha256": scorecard.scorecard_sha256,
            "recomputed_sha256": sha256(scorecard_json),
            "in_bag_sha256": sha256_of(folder / "data" / SCORECARD),
        },
    }
    for entry in report["files"].values():
        entry["match"] = entry["stored_sha256"] == entry["recomputed_sha256"] == entry["in_bag_sha256"]
    for item in gathered.get("context", {}).get("input_sources", []):
        if item.get("sha256") is None:
            continue  # a database row or the live target: its numbers are in inputs.json, covered by the bag
        now_hash = sha256_of(bags.evidence_root() / item["path"])
        report["evidence"].append(
            {
                "what": "an input file",
                "path": item["path"],
                "state": "valid" if now_hash == item["sha256"] else ("missing" if now_hash is None else "modified"),
                "ok": now_hash == item["sha256"],
            }
        )
    report["latest_files"] = latest_files(scorecard)
    report["ok"] = (
        all(m["match"] for m in report["metrics"])
        and report["verdict"]["match"]
        and all(f["match"] for f in report["files"].values())
        and all(e["ok"] for e in report["evidence"])
        and report["latest_files"].get("ok", True)
    )
    return report


def latest_files(scorecard: Scorecard) -> dict:
    """For the latest snapshot: are docs/audit/PERCENTAGES.json and SCORECARD.json still its files?"""
    latest = Scorecard.latest()
    if latest is None or latest.pk != scorecard.pk:
        return {"checked": False, "why": "not the latest snapshot: the copies in docs/audit/ belong to a newer one"}
    audit = bags.audit_dir()
    found = {"checked": True}
    for name, expected in ((PERCENTAGES, scorecard.percentages_sha256), (SCORECARD, scorecard.scorecard_sha256)):
        now_hash = sha256_of(audit / name)
        found[name] = "same" if now_hash == expected else ("missing" if now_hash is None else "differs")
    found["ok"] = all(found[name] == "same" for name in (PERCENTAGES, SCORECARD))
    return found
