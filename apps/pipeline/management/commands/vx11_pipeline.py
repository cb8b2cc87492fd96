import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.metrics.snapshot import PERCENTAGES
from apps.pipeline import runner
from apps.pipeline.models import Busy, PhaseRun, PipelineRun
from vx11_site.permissions import REFUSED, add_as_argument, cli_require

PERMISSION = "pipeline.run_pipeline"


def snapshot(run: PipelineRun) -> dict | None:
    """The PERCENTAGES.json of the scorecard this run computed (from that scorecard's bag), or None."""
    if run.scorecard is None or not run.scorecard.evidence_path:
        return None
    root = Path(settings.VX11_EVIDENCE_ROOT).resolve()
    path = (root / run.scorecard.evidence_path / "data" / PERCENTAGES).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_id(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**63:
        raise CommandError(f"a run id is a positive number, not {text!r}", returncode=REFUSED)
    return int(text)


class Command(BaseCommand):
    help = (
        "The autonomy pipeline: `run [--phases 1,3,6] [--json] [--queue]` (exit 0 ok or findings, 1 failed, "
        "2 refused), `list`, `show ID`, `cancel ID`."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        start = sub.add_parser("run", help="run the phases here with a bar per phase (or --queue it for the workers)")
        start.add_argument("--phases", default="", help="the phases to run, e.g. 1,3,6 (default: all seven)")
        start.add_argument("--json", action="store_true", help="print the run, its phases and its snapshot as JSON")
        start.add_argument("--queue", action="store_true", help="hand it to the Celery workers and print its URL")
        add_as_argument(start)
        listing = sub.add_parser("list", help="the latest runs")
        listing.add_argument("--limit", type=int, default=20)
        listing.add_argument("--json", action="store_true")
        show = sub.add_parser("show", help="one run with its phases")
        show.add_argument("id", metavar="ID")
        show.add_argument("--json", action="store_true")
        stop = sub.add_parser("cancel", help="cancel a run: the phase going on finishes, the rest are skipped")
        stop.add_argument("id", metavar="ID")
        add_as_argument(stop)

    def handle(self, *args, **options):
        return getattr(self, f"do_{options['action']}")(options)

    # --- run -------------------------------------------------------------------------------------------

    def do_run(self, options):
        user = cli_require(options, "starting a pipeline run", PERMISSION)
        try:
            run = runner.start("cli", user=user, phases=options["phases"] or None)
        except ValueError as exc:
            raise CommandError(f"--phases: {exc}", returncode=REFUSED) from None
        except Busy as busy:
            raise CommandError(str(busy), returncode=REFUSED) from None
        if options["queue"]:
            runner.queue(run)
            run.refresh_from_db()
            if options["json"]:
                self.stdout.write(json.dumps(run.as_json(), indent=2, default=str))
            else:
                self.stdout.write(f"pipeline run #{run.id} {run.status}: {run.api_url}")
            if run.status == PipelineRun.Status.FAILED:
                raise SystemExit(run.exit_code)
            return
        run = self.run_here(run, quiet=options["json"])
        if options["json"]:
            self.stdout.write(json.dumps({**run.as_json(), "snapshot": snapshot(run)}, indent=2, default=str))
        else:
            self.print_run(run)
        if run.exit_code:
            raise SystemExit(run.exit_code)

    def run_here(self, run: PipelineRun, quiet: bool) -> PipelineRun:
        """runner.run_inline with a bar per phase (on stderr); Ctrl-C ends the run as interrupted."""
        names = dict(run.phase_runs.values_list("number", "name"))
        bars: dict[int, tqdm] = {}

        def bar(number: int) -> tqdm:
            if number not in bars:
                for other in bars.values():
                    other.close()
                bars[number] = tqdm(
                    total=1, desc=f"{number} {names[number]}", unit="step", disable=quiet, file=self.stderr._out
                )
            return bars[number]

        def on_progress(number: int, done: int, total: int, step: str) -> None:
            shown = bar(number)
            shown.total, shown.n = max(total, 1), done
            if step:
                shown.set_postfix_str(step[:40], refresh=False)
            shown.refresh()

        def on_phase(phase: PhaseRun) -> None:
            shown = bar(phase.number)
            shown.n = shown.total
            shown.set_postfix_str(phase.status, refresh=False)
            shown.close()

        try:
            ended = runner.run_inline(run, on_progress=on_progress, on_phase=on_phase)
        except KeyboardInterrupt:
            runner.interrupt(run, "interrupted: Ctrl-C in `vx11 pipeline run`")
            ended = run
        finally:
            for shown in bars.values():
                shown.close()
        return PipelineRun.objects.get(pk=(ended or run).pk)

    def print_run(self, run: PipelineRun) -> None:
        took = f" in {run.duration_seconds:g} s" if run.duration_seconds is not None else ""
        self.stdout.write(
            f"pipeline run #{run.id}: {run.status}{took}, verdict {run.verdict or 'NV'}, "
            f"{run.manual_interventions} human action(s)  ({run.api_url})"
        )
        for phase in run.phase_runs.all():
            took = f"{phase.duration_seconds:7.1f} s" if phase.duration_seconds is not None else "        -"
            self.stdout.write(f"  {phase.number} {phase.name:<17} {phase.status:<9} {took}  {phase.summary}")
        if run.error:
            self.stderr.write(f"error: {run.error}")
        if run.evidence_path:
            self.stdout.write(f"  evidence: {run.evidence_path}")
        if run.mirror_commit:
            self.stdout.write(f"  mirror: {run.mirror_commit} ({'pushed' if run.mirror_pushed else 'not pushed'})")

    # --- list, show, cancel ------------------------------------------------------------------------------

    def do_list(self, options):
        if options["limit"] < 1:
            raise CommandError("--limit must be 1 or more", returncode=REFUSED)
        runs = list(PipelineRun.objects.prefetch_related("phase_runs")[: options["limit"]])
        if options["json"]:
            self.stdout.write(json.dumps([run.as_json() for run in runs], indent=2, default=str))
            return
        if not runs:
            self.stdout.write("no pipeline runs yet")
        for run in runs:
            took = f"{run.duration_seconds:g} s" if run.duration_seconds is not None else "-"
            started = run.started_at.isoformat(timespec="seconds") if run.started_at else "-"
            self.stdout.write(
                f"#{run.id:<5} {run.status:<11} {run.verdict or 'NV':<11} {run.trigger:<6} {run.actor:<16} "
                f"{started:<25} {took}"
            )

    def get_run(self, options) -> PipelineRun:
        run = PipelineRun.objects.filter(pk=run_id(options["id"])).first()
        if run is None:
            raise CommandError(f"no pipeline run #{options['id']}", returncode=REFUSED)
        return run

    def do_show(self, options):
        run = self.get_run(options)
        if options["json"]:
            self.stdout.write(json.dumps({**run.as_json(), "snapshot": snapshot(run)}, indent=2, default=str))
        else:
            self.print_run(run)

    def do_cancel(self, options):
        user = cli_require(options, "cancelling a pipeline run", PERMISSION)
        run = self.get_run(options)
        try:
            runner.cancel(run, user)
        except ValueError as exc:
            raise CommandError(str(exc), returncode=REFUSED) from None
        self.stdout.write(f"pipeline run #{run.id}: {run.status}, cancel asked for by {run.cancel_requested}")
