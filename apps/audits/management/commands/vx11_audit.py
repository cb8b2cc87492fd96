import json
import os

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.audits.models import AuditRun
from apps.audits.runner import run_now
from vx11_site.permissions import add_as_argument, cli_require


class Command(BaseCommand):
    help = (
        "Audit the fleet: `db` (PRAGMA checks, counts), `map` (plus the DB map files), `fs`, `git`, `all`; "
        "exits 0 ok, 1 findings, 2 error."
    )

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=[k.value for k in AuditRun.Kind], help="what to audit")
        parser.add_argument("--json", action="store_true", help="print the run as JSON (checks named by their PRAGMA)")
        parser.add_argument(
            "--approx", action="store_true", help="estimate row counts (sqlite_stat1, max(rowid), reltuples)"
        )
        parser.add_argument("--target", help="the database to audit instead of VX11_TARGET_DB (a path or postgres URL)")
        parser.add_argument(
            "--timeout", type=float, help="seconds per integrity check instead of VX11_AUDIT_INTEGRITY_TIMEOUT"
        )
        parser.add_argument(
            "--nice",
            type=int,
            default=10,
            help="from the command line: lower the process's CPU priority by N (default 10; 0 keeps it)",
        )
        add_as_argument(parser)

    own_process = False  # run from the command line (not call_command): its priority is this command's to lower

    def run_from_argv(self, argv):
        self.own_process = True
        super().run_from_argv(argv)

    def handle(self, *args, **options):
        user = cli_require(options, "running an audit", "audits.run_audit")
        if options["timeout"] is not None and options["timeout"] < 0:
            raise CommandError("--timeout must be 0 or more seconds", returncode=2)
        if self.own_process and options["nice"] > 0:  # background work: the portal's requests get the CPU first
            os.nice(options["nice"])
        as_json = options["json"]
        bar = tqdm(total=0, desc=f"audit {options['kind']}", unit="step", disable=as_json, file=self.stderr._out)

        def on_progress(done: int, total: int, step: str) -> None:
            bar.total = total
            bar.n = done
            if step:
                bar.set_postfix_str(step[:40], refresh=False)
            bar.refresh()

        extra = {key: options[key] for key in ("target", "timeout") if options[key] is not None}
        try:
            run = run_now(
                options["kind"], approx=options["approx"], trigger="cli", user=user, on_progress=on_progress, **extra
            )
        finally:
            bar.close()
        if as_json:
            self.stdout.write(json.dumps(run.as_json(), indent=2, default=str))
        else:
            self.print_run(run)
        if run.exit_code:
            raise SystemExit(run.exit_code)

    def print_run(self, run: AuditRun) -> None:
        result = run.result
        self.stdout.write(f"audit {run.kind} #{run.id}: {run.status}  target {run.target or '-'}")
        for name, value in (result.get("checks") or {}).items():
            shown = value if isinstance(value, str) else json.dumps(value)[:200]
            self.stdout.write(f"  {name:<24} {shown}")
        if "integrity" in result:
            self.stdout.write(f"  integrity: {result['integrity']}")
        counts = result.get("counts")
        if counts:
            label = "approximate" if counts["approximate"] else "exact"
            self.stdout.write(f"  rows ({label}): {counts['total_rows']} in {len(counts['tables'])} tables")
        if "map" in result:
            found = result["map"]
            self.stdout.write(
                f"  map: {found['tables']} tables, {found['owned']} owned, "
                f"Orden_db_module_assignment_pct {found['Orden_db_module_assignment_pct']}"
            )
        for finding in run.findings.all():
            where = f" [{finding.table}]" if finding.table else ""
            self.stdout.write(f"  {finding.severity:<7} {finding.check_name}{where}: {finding.message}")
        if run.error:
            self.stderr.write(f"error: {run.error}")
        if run.evidence_path:
            self.stdout.write(f"  evidence: {run.evidence_path}")
