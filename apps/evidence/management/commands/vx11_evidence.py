import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.evidence.bags import evidence_root, verify
from apps.evidence.models import Evidence
from apps.evidence.rotation import rotate
from vx11_site.permissions import REFUSED, add_as_argument, cli_require

FINDINGS = 1  # it ran and found a bag not valid (or still flagged)


class Command(BaseCommand):
    help = (
        "Evidence bags: `verify PATH...|--all` (exit 0 all valid, 1 findings, 2 error), `rotate`, "
        "`reseal PATH --note WHY`."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        check = sub.add_parser("verify", help="re-hash bags; exit 1 if any is modified, missing a file or has an extra")
        check.add_argument(
            "paths", nargs="*", metavar="PATH", help="bag folders (absolute or under VX11_EVIDENCE_ROOT)"
        )
        check.add_argument("--all", action="store_true", help="every indexed bag")
        check.add_argument("--json", action="store_true", help="print one JSON array, a result per bag")
        turn = sub.add_parser("rotate", help="archive old bags, delete very old ones (never forensic ones)")
        turn.add_argument("--json", action="store_true")
        add_as_argument(turn)
        seal = sub.add_parser("reseal", help="accept a flagged bag as it is now: rewrite its manifests")
        seal.add_argument("path", metavar="PATH")
        seal.add_argument("--note", required=True, help="why the bag is accepted (stored on the row)")
        seal.add_argument("--json", action="store_true")
        add_as_argument(seal)

    def handle(self, *args, **options):
        return getattr(self, f"do_{options['action']}")(options)

    # --- verify: a check, run as the portal itself (as the daily beat entry); it never clears a flag ---

    def do_verify(self, options):
        if options["all"] == bool(options["paths"]):
            raise CommandError("give bag folders or --all (not both)", returncode=REFUSED)
        targets = list(Evidence.objects.order_by("created_at", "id")) if options["all"] else self.locate(options)
        as_json, results = options["json"], []
        for target in tqdm(targets, desc="verify", unit="bag", disable=as_json, file=self.stderr._out):
            if isinstance(target, Evidence):
                result = target.verify()
                results.append({"path": target.path, "indexed": True, "flagged_state": target.state, **result})
            else:
                results.append({"path": str(target), "indexed": False, "flagged_state": "", **verify(target)})
        if as_json:
            self.stdout.write(json.dumps(results, indent=2))
        else:
            for result in results:
                self.stdout.write(self.line(result))
        bad = [r for r in results if r["state"] != "valid" or r["flagged_state"] in Evidence.FLAGGED]
        if options["all"] and not as_json:
            self.stdout.write(f"{len(results)} bag(s), {len(bad)} with findings")
        if bad:
            raise SystemExit(FINDINGS)

    def locate(self, options) -> list:
        """Each PATH as its Evidence row, or as a folder when no row indexes it; refused outside the root."""
        root = evidence_root()
        targets: list = []
        for given in options["paths"]:
            path = Path(given)
            candidates = [path] if path.is_absolute() else [root / path, Path.cwd() / path]
            folder = next((c for c in candidates if c.exists()), candidates[0]).resolve()
            if not folder.is_relative_to(root):
                raise CommandError(f"{given}: outside VX11_EVIDENCE_ROOT ({root})", returncode=REFUSED)
            row = Evidence.objects.filter(path=folder.relative_to(root).as_posix()).first()
            if row is None and not (folder / "bagit.txt").is_file():
                raise CommandError(f"{given}: no evidence bag there (no index row, no bagit.txt)", returncode=REFUSED)
            targets.append(row or folder)
        return targets

    @staticmethod
    def line(result: dict) -> str:
        flagged = result["flagged_state"] in Evidence.FLAGGED and result["flagged_state"] != result["state"]
        note = f"  (flagged {result['flagged_state']} until re-sealed)" if flagged else ""
        unindexed = "" if result["indexed"] else "  (not indexed)"
        files = ", ".join(f"{f['file']} {f['problem']}" for f in result["files"])
        return f"{result['state']:<9} {result['path']}{unindexed}{note}" + (f"\n          {files}" if files else "")

    # --- writes: they act as a portal user and need its permission ---

    def do_rotate(self, options):
        cli_require(options, "rotating evidence", "evidence.delete_evidence")
        report = rotate()
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
            return
        for path in report["archived"]:
            self.stdout.write(f"archived  {path}")
        for path in report["deleted"]:
            self.stdout.write(f"deleted   {path}")
        for skipped in report["skipped"]:
            self.stdout.write(f"skipped   {skipped['path']}: {skipped['why']}")
        archive, delete = settings.VX11_EVIDENCE_ARCHIVE_DAYS, settings.VX11_EVIDENCE_DELETE_DAYS
        counts = ", ".join(f"{len(report[key])} {key}" for key in ("archived", "deleted", "skipped"))
        self.stdout.write(f"{counts} (archive after {archive} d, delete after {delete} d)")

    def do_reseal(self, options):
        user = cli_require(options, "re-sealing evidence", "evidence.reseal_evidence")
        targets = self.locate({"paths": [options["path"]]})
        if not isinstance(targets[0], Evidence):
            raise CommandError(
                f"{options['path']}: not indexed; only an indexed bag can be re-sealed", returncode=REFUSED
            )
        try:
            result = targets[0].reseal(user, options["note"])
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc), returncode=FINDINGS) from None
        self.stdout.write(json.dumps(result, indent=2) if options["json"] else f"re-sealed {targets[0].path}")
