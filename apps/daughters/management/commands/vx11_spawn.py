"""`manage.py vx11 spawn <kind> [key=value ...]`: spawn a task with its daughter(s), optionally wait."""

import json
import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.daughters.models import PRIORITIES, Daughter, DaughterTask
from vx11_site.api import validation_detail
from vx11_site.permissions import REFUSED, MissingPermission, add_as_argument, cli_user


def parse_param(text: str) -> tuple[str, object]:
    """As httpie: `key=value` is text, `key:=value` is JSON (numbers, true, lists)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CommandError(f"param {text!r} is not key=value or key:=json")
    if not key.endswith(":"):
        return key, value
    try:
        return key[:-1], json.loads(value)
    except ValueError as exc:
        raise CommandError(f"param {key[:-1]!r}: {value!r} is not JSON ({exc})") from None


class Command(BaseCommand):
    help = (
        "Spawn a daughter task: `vx11 spawn http module=hermes path=/tools --wait` (key:=json for numbers). "
        "Exits 1 if it does not finish."
    )

    def add_arguments(self, parser):
        parser.add_argument("kind", help="http, command, sleep, flow")
        parser.add_argument(
            "params", nargs="*", help="key=value (text) or key:=value (JSON) params, e.g. command=uptime seconds:=2"
        )
        parser.add_argument("--params-json", help="all params as one JSON object")
        parser.add_argument("--source", default="operator", choices=list(PRIORITIES))
        parser.add_argument("--description", default="")
        parser.add_argument("--ttl", type=int, help="seconds (default VX11_DAUGHTER_TTL_SECONDS)")
        parser.add_argument("--max-retries", type=int)
        parser.add_argument("--count", type=int, default=1)
        parser.add_argument("--wait", action="store_true", help="wait until every daughter has ended (progress bar)")
        parser.add_argument("--timeout", type=float, default=600, help="seconds --wait waits at most")
        parser.add_argument("--json", action="store_true", help="print the task as JSON")
        add_as_argument(parser)

    def handle(self, *args, **options):
        user = cli_user(options["as_user"])
        try:
            DaughterTask.require_spawn_permission(user, options["kind"])
        except MissingPermission as exc:
            raise CommandError(exc.message, returncode=REFUSED) from None
        params = {}
        if options["params_json"]:
            try:
                params = json.loads(options["params_json"])
            except ValueError as exc:
                raise CommandError(f"--params-json is not JSON: {exc}") from None
        params.update(parse_param(p) for p in options["params"])
        try:
            task = DaughterTask.spawn(
                options["kind"],
                params,
                source=options["source"],
                description=options["description"],
                ttl_seconds=options["ttl"],
                max_retries=options["max_retries"],
                count=options["count"],
                user=user,
            )
        except ValidationError as exc:
            raise CommandError(validation_detail(exc)) from None
        if not options["json"]:
            self.stderr.write(f"spawned task #{task.pk} with {options['count']} daughter(s) of kind {options['kind']}")
        if options["wait"]:
            self.wait(task, options["timeout"], quiet=options["json"])
        task.refresh_from_db()
        daughters = list(task.daughters.order_by("id"))
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "task_id": task.pk,
                        "status": task.status,
                        "daughters": [
                            {
                                "id": d.pk,
                                "name": d.name,
                                "status": d.status,
                                "mutation_level": d.mutation_level,
                                "error": d.error_last or None,
                                "result": d.result,
                            }
                            for d in daughters
                        ],
                    },
                    indent=2,
                    default=str,
                )
            )
        else:
            for d in daughters:
                self.stdout.write(
                    f"#{d.pk:<6} {d.name:<20} {d.status:<9} retries={d.mutation_level} {d.error_last[:120]}"
                )
        if options["wait"] and task.status != DaughterTask.Status.COMPLETED:
            self.stderr.write(f"task #{task.pk} ended {task.status}")
            raise SystemExit(1)

    def wait(self, task, timeout, quiet):
        total = task.daughters.count()
        bar = tqdm(total=total, desc=f"task #{task.pk}", unit="daughter", disable=quiet, file=self.stderr._out)
        deadline = time.monotonic() + timeout
        ended = 0
        while ended < total:
            if time.monotonic() > deadline:
                bar.close()
                raise CommandError(f"task #{task.pk} still running after {timeout:g} s (is a Celery worker running?)")
            time.sleep(0.2)
            now_ended = task.daughters.filter(status__in=Daughter.FINAL).count()
            bar.update(now_ended - ended)
            ended = now_ended
            bar.set_postfix_str(
                task.daughters.exclude(status__in=Daughter.FINAL).values_list("status", flat=True).first() or "done"
            )
        bar.close()
