"""`manage.py vx11 restore <stamp> [--json]`: put back what housekeeping moved into attic/<stamp>/, exactly.

Exits 0 when every file is back and matches its manifest's sha256; 1 when the restore was refused (a path exists
again, the manifest names a path it may not) or a file came back different; 2 on an error or a refused permission."""

import json

from django.core.management.base import BaseCommand, CommandError

from apps.housekeeping import runner
from apps.housekeeping.attic import RestoreRefused
from apps.housekeeping.management.commands.vx11_housekeeping import Bars
from vx11_site.permissions import REFUSED, MissingPermission, add_as_argument, cli_user


class Command(BaseCommand):
    help = "Restore a housekeeping run from attic/<stamp>/ (its MANIFEST.json); exits 0 ok, 1 refused/differs, 2 error."

    def add_arguments(self, parser):
        parser.add_argument("stamp", help="the attic stamp, YYYYmmddTHHMMSSZ (shown by `vx11 housekeeping --apply`)")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        add_as_argument(parser)

    def handle(self, *args, **options):
        user = cli_user(options["as_user"])
        bars = Bars(self.stderr._out, disable=options["json"])
        try:
            result = runner.restore(user, options["stamp"], via="cli", progress=bars)
        except MissingPermission as exc:
            raise CommandError(exc.message, returncode=REFUSED) from None
        except RestoreRefused as exc:
            if options["json"]:
                self.stdout.write(json.dumps({"refused": str(exc), "conflicts": exc.conflicts}, indent=2))
            self.stderr.write(f"restore refused: {exc}")
            raise SystemExit(1 if exc.status == 409 else REFUSED) from None
        finally:
            bars.close()
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2, default=str))
        else:
            self.stdout.write(
                f"restored {len(result['restored'])} path(s) from attic/{result['stamp']}/; "
                f"{result['files_verified']} file(s) match the manifest"
            )
            for mismatch in result["mismatches"]:
                self.stdout.write(f"  DIFFERS  {mismatch['path']}: {mismatch['problem']}")
            if result.get("evidence_path"):
                self.stdout.write(f"evidence: {result['evidence_path']}")
        if result["mismatches"]:
            raise SystemExit(1)
