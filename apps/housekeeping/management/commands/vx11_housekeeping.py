"""`manage.py vx11 housekeeping [--apply] [--json] [--path P ...]`: a guarded housekeeping run (dry run by default);
`--archive-forensic` copies forensic/ into docs/audit/archived_forensic/ instead. Exits 0 ok, 1 when something was
refused or protected (the run aborted), 2 on an error or a refused permission."""

import json

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.housekeeping import runner
from apps.housekeeping.models import HousekeepingRun
from vx11_site.permissions import REFUSED, MissingPermission, add_as_argument, cli_user

ERROR = 2


class Bars:
    """One tqdm bar per stage of the run (hashing, moving, restoring), fed by the runner's progress calls."""

    def __init__(self, stream, disable: bool):
        self.stream = stream
        self.disable = disable
        self.bar = None
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int, label: str) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total or None, desc=stage, unit="path", disable=self.disable, file=self.stream)
        self.bar.n = done if total else done + 1
        self.bar.set_postfix_str(label[-60:], refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def report(stdout, row: HousekeepingRun) -> None:
    mode = "applied" if row.applied else "dry run"
    stdout.write(f"{row.operation} #{row.pk} ({mode}) on {row.root}: {row.status}")
    verb = "moved" if row.applied else "would move"
    for move in row.moves:
        if row.applied and move.get("moved") is False:
            continue
        stdout.write(f"  {verb:<10} {move['path']}  ->  {move['stored']}  ({move['size']} bytes; {move['reason']})")
    for refused in row.refused:
        stdout.write(f"  REFUSED    {refused['reason']}")
    for protected in row.protected:
        stdout.write(f"  PROTECTED  {protected['path']} (excludes entry {protected['protected_by']})")
    stdout.write(row.message)
    if row.evidence_path:
        stdout.write(f"evidence: {row.evidence_path}")


class Command(BaseCommand):
    help = (
        "Housekeeping of the managed VX11 tree: stray files, old backups and old audit folders into attic/<stamp>/ "
        "(dry run unless --apply; undo with `vx11 restore <stamp>`). Exits 0 ok, 1 refused/protected, 2 error."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--apply", action="store_true", help="move for real (default: a dry run that moves nothing)"
        )
        parser.add_argument("--json", action="store_true", help="print the run as JSON")
        parser.add_argument(
            "--path",
            action="append",
            default=[],
            dest="paths",
            metavar="PATH",
            help="also move this path (relative to the managed root); repeatable",
        )
        parser.add_argument(
            "--archive-forensic",
            action="store_true",
            help="instead: copy forensic/ to docs/audit/archived_forensic/<stamp>/ (forensic/ is never moved)",
        )
        add_as_argument(parser)

    def handle(self, *args, **options):
        user = cli_user(options["as_user"])
        bars = Bars(self.stderr._out, disable=options["json"])
        try:
            if options["archive_forensic"]:
                row = runner.archive_forensic(user, via="cli")
            else:
                row = runner.run(user, apply=options["apply"], paths=options["paths"], via="cli", progress=bars)
        except MissingPermission as exc:
            raise CommandError(exc.message, returncode=REFUSED) from None
        finally:
            bars.close()
        if options["json"]:
            self.stdout.write(json.dumps(row.as_dict(), indent=2, default=str))
        else:
            report(self.stdout, row)
        if row.exit_code:
            raise SystemExit(row.exit_code)
