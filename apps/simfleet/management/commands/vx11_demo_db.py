import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.simfleet.target_db import create_target_db


class Command(BaseCommand):
    help = "Build the demo audit target: a VX11-shaped SQLite database (--rows N, default 20000) at VX11_TARGET_DB."

    def add_arguments(self, parser):
        parser.add_argument("--rows", type=int, default=20000, help="rows in all (default 20000; 2300000 is real size)")
        parser.add_argument("--tables", type=int, default=None, help="add filler tables up to this many (e.g. 65)")
        parser.add_argument("--seed", type=int, default=11, help="the random seed: the same seed, the same rows")
        parser.add_argument("--path", help="where to write it (default VX11_TARGET_DB; replaced if it exists)")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, **options):
        if options["rows"] < 0:
            raise CommandError("--rows must be 0 or more", returncode=2)
        target = options["path"] or settings.VX11_TARGET_DB
        if "://" in target:
            raise CommandError(f"the target {target} is not a SQLite path; pass --path FILE", returncode=2)
        path = Path(target)
        if path.is_dir():
            raise CommandError(f"{path} is a directory; pass --path FILE", returncode=2)
        bar = tqdm(total=options["rows"], desc="demo-db", unit="row", disable=options["json"], file=self.stderr._out)

        def on_table(name: str, rows: int) -> None:
            bar.update(rows)
            bar.set_postfix_str(name)

        try:
            result = create_target_db(
                path, options["rows"], options["seed"], tables=options["tables"], on_table=on_table
            )
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc}", returncode=2) from None
        finally:
            bar.close()
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
        else:
            self.stdout.write(
                f"{result['path']}: {result['tables']} tables, {result['rows']} rows, {result['bytes']} bytes"
            )
