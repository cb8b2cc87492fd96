import json

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from apps.metrics.models import Scorecard
from apps.metrics.snapshot import take_snapshot, verify_snapshot
from vx11_site.permissions import REFUSED, add_as_argument, cli_require, username

MISMATCH = 1


class Command(BaseCommand):
    help = (
        "The scorecard: `metrics` computes a snapshot (rows, evidence bag, docs/audit/PERCENTAGES.json and "
        "SCORECARD.json); `metrics verify [ID|--latest|--all]` recomputes snapshots from their evidence "
        "(exit 0 all match, 1 a mismatch or changed evidence, 2 an error)."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", nargs="?", choices=["verify"], help="verify: recompute stored snapshots")
        parser.add_argument("id", nargs="?", type=int, help="the scorecard to verify (default: the latest)")
        parser.add_argument("--latest", action="store_true", help="verify the latest snapshot")
        parser.add_argument("--all", action="store_true", help="verify every stored snapshot")
        parser.add_argument("--json", action="store_true", help="print JSON")
        add_as_argument(parser)

    def handle(self, *args, **options):
        if options["action"] == "verify":
            return self.verify(options)
        if options["id"] is not None or options["latest"] or options["all"]:
            raise CommandError("an ID, --latest and --all go with `vx11 metrics verify`", returncode=REFUSED)
        user = cli_require(options, "computing the scorecard", "metrics.add_scorecard")
        try:
            card = take_snapshot(actor=username(user))
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc), returncode=REFUSED) from None
        rows = list(card.metrics.all())
        if options["json"]:
            data = {
                "id": card.id,
                "generated_at": card.generated_at.isoformat(),
                "verdict": card.verdict,
                "decision_logic": card.decision_logic,
                "coverage": card.coverage,
                "evidence_path": card.evidence_path,
                "metrics": {row.name: row.as_dict() for row in rows},
            }
            self.stdout.write(json.dumps(data, indent=2, default=str))
            return
        self.stdout.write(f"scorecard #{card.id} at {card.generated_at.isoformat()}: {card.verdict}")
        for row in rows:
            shown = "NV" if row.value is None else f"{row.value:g}"
            why = f"  ({row.reason})" if row.reason else ""
            self.stdout.write(f"  {row.name:<32} {shown:>7}  {row.status:<8} {row.calculation}{why}")
        self.stdout.write(f"  verdict: {card.decision_logic.get('because', '')}")
        self.stdout.write(f"  evidence: {card.evidence_path}")

    def verify(self, options):
        chosen = [options["id"] is not None, options["latest"], options["all"]]
        if sum(chosen) > 1:
            raise CommandError("give one of ID, --latest or --all", returncode=REFUSED)
        if options["all"]:
            cards = list(Scorecard.objects.order_by("generated_at", "id"))
        elif options["id"] is not None:
            cards = list(Scorecard.objects.filter(pk=options["id"]))
            if not cards:
                raise CommandError(f"no scorecard #{options['id']}", returncode=REFUSED)
        else:
            cards = [card for card in [Scorecard.latest()] if card is not None]
        if not cards:
            raise CommandError("no scorecard stored yet: run `vx11 metrics` first", returncode=REFUSED)
        reports = [verify_snapshot(card) for card in cards]
        if options["json"]:
            self.stdout.write(json.dumps(reports if options["all"] else reports[0], indent=2, default=str))
        else:
            for report in reports:
                self.print_report(report)
        if any("error" in report for report in reports):
            raise SystemExit(REFUSED)
        if not all(report["ok"] for report in reports):
            raise SystemExit(MISMATCH)

    def print_report(self, report: dict) -> None:
        word = "match" if report["ok"] else "MISMATCH"
        self.stdout.write(f"scorecard #{report['scorecard']}: {word}")
        if "error" in report:
            self.stdout.write(f"  error: {report['error']}")
        for metric in report["metrics"]:
            if not metric["match"]:
                self.stdout.write(
                    f"  metric {metric['name']}: stored {metric['stored']}, recomputed {metric['recomputed']}"
                )
        verdict = report.get("verdict")
        if verdict and not verdict["match"]:
            self.stdout.write(f"  verdict: stored {verdict['stored']}, recomputed {verdict['recomputed']}")
        for name, entry in report["files"].items():
            if not entry["match"]:
                self.stdout.write(f"  {name}: the stored, rebuilt and bagged files differ")
        for item in report["evidence"]:
            if not item["ok"]:
                files = ", ".join(f"{f['file']} {f['problem']}" for f in item.get("files", []))
                self.stdout.write(
                    f"  evidence modified: {item['path']} {item['state']}" + (f" ({files})" if files else "")
                )
        latest = report["latest_files"]
        if latest.get("checked") and not latest["ok"]:
            for name in ("PERCENTAGES.json", "SCORECARD.json"):
                if latest[name] != "same":
                    self.stdout.write(f"  latest files differ: docs/audit/{name} {latest[name]}")
