import json

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.fleet.models import Module
from apps.fleet.probe import run_round


class Command(BaseCommand):
    help = "Probe the fleet now (progress bar, or --json); exits 1 if a core module is down."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON array, an object per module")
        parser.add_argument("slugs", nargs="*", help="only these modules (default: every enabled one)")

    def handle(self, *args, **options):
        modules = Module.objects.filter(enabled=True)
        if options["slugs"]:
            modules = Module.objects.filter(slug__in=options["slugs"])
            missing = set(options["slugs"]) - set(modules.values_list("slug", flat=True))
            if missing:
                raise CommandError(f"unknown module(s): {', '.join(sorted(missing))}")
        modules = list(modules)
        as_json = options["json"]
        bar = tqdm(total=len(modules), desc="probing", unit="module", disable=as_json, file=self.stderr._out)
        results, _ = run_round(modules, on_result=lambda r: (bar.update(1), bar.set_postfix_str(r.slug)))
        bar.close()

        fresh = {m.id: m for m in Module.objects.filter(id__in=[m.id for m in modules])}
        rows = sorted((r.as_dict(fresh[r.module_id].state) for r in results), key=lambda d: d["slug"])
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
        else:
            for row in rows:
                latency = "-" if row["latency_ms"] is None else f"{row['latency_ms']:.1f} ms"
                code = str(row["status_code"] or "-")
                detail = row["error"] or row["status"]
                self.stdout.write(f"{row['slug']:<16} {row['state']:<9} {code:<4} {latency:>10}  {detail}")
        core_down = [m.slug for m in fresh.values() if m.core and m.state == "down"]
        if core_down:
            self.stderr.write(f"core module(s) down: {', '.join(sorted(core_down))}")
            raise SystemExit(1)
