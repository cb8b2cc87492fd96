import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.flows.models import Flow
from vx11_site.api import validation_detail
from vx11_site.permissions import add_as_argument, cli_require


class Command(BaseCommand):
    help = "E2E flows: `run A [B ...]` (progress bar, or --json; exits 1 if a flow fails), `list`, `load FILE`."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        run = sub.add_parser("run", help="run flows now; exit 1 if any fails")
        run.add_argument("names", nargs="*", help="flow names (default: every enabled flow)")
        run.add_argument("--json", action="store_true", help="print one JSON array, a run (with its steps) per flow")
        add_as_argument(run)
        listing = sub.add_parser("list", help="flows and their last result")
        listing.add_argument("--json", action="store_true")
        load = sub.add_parser("load", help="create a flow from a YAML or JSON file")
        load.add_argument("file")
        load.add_argument("--replace", action="store_true", help="overwrite a flow of the same name")
        load.add_argument("--json", action="store_true")
        add_as_argument(load)

    def handle(self, *args, **options):
        return getattr(self, f"do_{options['action']}")(options)

    def do_run(self, options):
        user = cli_require(options, "running a flow", "flows.run_flow")
        flows = self.pick(options["names"])
        as_json, runs = options["json"], []
        for flow in flows:
            steps = flow.steps.count()
            bar = tqdm(total=steps, desc=f"flow {flow.name}", unit="step", disable=as_json, file=self.stderr._out)
            run = flow.run(trigger="cli", user=user, on_step=self.advance(bar))
            bar.close()
            runs.append(run)
        if as_json:
            self.stdout.write(json.dumps([self.run_json(run) for run in runs], indent=2))
        else:
            for run in runs:
                self.stdout.write(f"{run.flow.name:<6} {run.status:<7} {run.duration_ms:>9.1f} ms  {run.reason}")
                for step in run.steps.all():
                    self.stdout.write(
                        f"  {step.position:>2}. {step.name:<36} {step.status:<7} "
                        f"{step.duration_ms or 0:>8.1f} ms  {step.reason}"
                    )
        failed = [run.flow.name for run in runs if not run.passed]
        if failed:
            self.stderr.write(f"flow(s) failed: {', '.join(failed)}")
            raise SystemExit(1)

    def do_list(self, options):
        rows = []
        for flow in Flow.summarised(Flow.objects.all()):
            last = flow.last_run()
            rows.append(
                {
                    "name": flow.name,
                    "title": flow.title,
                    "enabled": flow.enabled,
                    "steps": flow.step_count(),
                    "last_status": last.status if last else None,
                    "last_run_at": last.started_at.isoformat() if last else None,
                }
            )
        if options["json"]:
            self.stdout.write(
                json.dumps({"flows": rows, "contract_coherence_pct": Flow.contract_coherence_pct()}, indent=2)
            )
            return
        for row in rows:
            state = "on " if row["enabled"] else "off"
            last = row["last_status"] or "never run"
            self.stdout.write(f"{row['name']:<6} {state} {row['steps']:>2} steps  {last:<9}  {row['title']}")
        self.stdout.write(f"contract_coherence_pct: {Flow.contract_coherence_pct()}")

    def do_load(self, options):
        cli_require(options, "loading a flow", "flows.add_flow", *(["flows.change_flow"] if options["replace"] else []))
        try:
            flow = Flow.load_file(options["file"], replace=options["replace"])
        except ValidationError as exc:
            raise CommandError(validation_detail(exc), returncode=2) from None
        if options["json"]:
            self.stdout.write(json.dumps(flow.to_spec(), indent=2))
        else:
            self.stdout.write(f"loaded flow {flow.name} ({flow.steps.count()} steps)")

    @staticmethod
    def advance(bar):
        """The on_step callback that moves this flow's progress bar one step."""

        def on_step(result):
            bar.update(1)
            bar.set_postfix_str(f"{result.position} {result.status}")

        return on_step

    def pick(self, names: list[str]) -> list[Flow]:
        if not names:
            flows = list(Flow.objects.filter(enabled=True))
            if not flows:
                raise CommandError("no enabled flow to run", returncode=2)
            return flows
        found = {f.name: f for f in Flow.objects.filter(name__in=names)}
        missing = [n for n in names if n not in found]
        if missing:
            known = ", ".join(Flow.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"unknown flow(s): {', '.join(missing)}; known: {known}", returncode=2)
        return [found[n] for n in names]

    @staticmethod
    def run_json(run) -> dict:
        return {
            **run.summary(),
            "steps": [
                {
                    "position": s.position,
                    "name": s.name,
                    "kind": s.kind,
                    "status": s.status,
                    "reason": s.reason,
                    "duration_ms": s.duration_ms,
                    "response_status": s.response_status,
                    "captured": s.captured,
                }
                for s in run.steps.all()
            ],
        }
