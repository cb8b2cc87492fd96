"""Make one module of the running SIMULATED fleet misbehave: `manage.py vx11_sim madre hang`.

Talks to the simulator's control server (apps.simfleet.sim); it never touches a real VX11 module.

`vx11 sim controls SLUG...` gives demo modules the power manager's process backend: the portal then runs
`python -m apps.simfleet.serve_one SLUG --port PORT` on the module's registered port as the module's own
process, so the power console really starts and stops it. It writes the ServiceControl rows only.
"""

import sys

import httpx
from django.core.management.base import BaseCommand, CommandError

from apps.fleet.models import Module
from apps.power.models import ServiceControl
from apps.simfleet.sim import CONTROL_PORT, MISBEHAVIOURS, PORTS
from vx11_site import running_demo


def default_control_url() -> str:
    """The control server of the demo running on this checkout's var/ (it moves with --port-offset)."""
    demo = running_demo.current()
    if demo and demo.get("control_url"):
        return demo["control_url"]
    return f"http://127.0.0.1:{CONTROL_PORT}"


CONTROLS = "controls"


def serve_one_argv(slug: str, port: int) -> list[str]:
    """The command line that serves one simulated module as its own process on `port`."""
    return [sys.executable, "-m", "apps.simfleet.serve_one", slug, "--port", str(port)]


class Command(BaseCommand):
    help = (
        "Demo fleet (simulator): set a simulated module's mode. Without arguments, show the fleet. "
        "`controls SLUG...`: give demo modules the process backend (python -m apps.simfleet.serve_one)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "target",
            nargs="?",
            metavar="MODULE|controls",
            help=f"simulated module: {', '.join(PORTS)}; or `{CONTROLS}`",
        )
        parser.add_argument(
            "values",
            nargs="*",
            metavar="MODE|SLUG",
            help=f"after a module, its mode, one of: {', '.join(MISBEHAVIOURS)}; after `{CONTROLS}`, the modules "
            "to give the process backend",
        )
        parser.add_argument("--delay", type=float, help='seconds for mode "slow"')
        parser.add_argument(
            "--control-url",
            help="the simulator's control server (default: the running demo's, "
            f"from var/demo.json, else http://127.0.0.1:{CONTROL_PORT})",
        )
        parser.add_argument("--list", action="store_true", help="print the modes and exit")

    def handle(self, *args, **options):
        if options["list"]:
            for mode, what in MISBEHAVIOURS.items():
                self.stdout.write(f"{mode:<13} {what}")
            return
        if options["target"] == CONTROLS:
            return self.controls(options["values"])
        if len(options["values"]) > 1:
            raise CommandError(f"one mode at a time; got {' '.join(options['values'])}")
        slug, mode, delay = options["target"], next(iter(options["values"]), None), options["delay"]
        url = (options["control_url"] or default_control_url()).rstrip("/") + "/_sim"
        if slug is None:
            for slug, state in self.call("GET", url)["modules"].items():
                self.stdout.write(
                    f"{slug:<15} port {state['port']:<6} {state['mode']}"
                    + (f" {state['delay']}s" if state["delay"] is not None else "")
                )
            return
        if slug not in PORTS:
            raise CommandError(f"unknown module {slug!r}; expected one of: {', '.join(PORTS)}")
        if mode not in MISBEHAVIOURS:
            raise CommandError(
                f"unknown or missing mode {mode!r}; expected one of: {', '.join(MISBEHAVIOURS)} (see --list)"
            )
        if delay is not None and delay < 0:
            raise CommandError("--delay must be >= 0 seconds")
        payload = {"mode": mode} if delay is None else {"mode": mode, "delay": delay}
        state = self.call("POST", f"{url}/{slug}", payload)
        delay_note = f" ({state['delay']}s)" if state["delay"] is not None else ""
        self.stdout.write(f"{slug} (port {state['port']}) is now {state['mode']}{delay_note} [simulated]")

    def controls(self, slugs: list[str]) -> None:
        """Give each module the power manager's process backend, serving it with serve_one on its registered port."""
        if not slugs:
            raise CommandError(f"{CONTROLS}: name the module(s), e.g. `vx11 sim {CONTROLS} switch hermes`")
        modules = {m.slug: m for m in Module.objects.filter(slug__in=slugs)}
        missing = sorted(set(slugs) - set(modules))
        if missing:
            raise CommandError(f"unknown module(s): {', '.join(missing)}")
        for slug, module in modules.items():
            if module.port is None:
                raise CommandError(f"{slug} has no port in its base URL ({module.base_url})")
            argv = serve_one_argv(slug, module.port)
            ServiceControl.objects.update_or_create(
                module=module, defaults={"backend": ServiceControl.Backend.PROCESS, "command": argv}
            )
            self.stdout.write(f"{slug}: process backend, {' '.join(argv)}")

    def call(self, method, url, payload=None):
        """One request to the control server; every failure becomes a one-line CommandError."""
        try:
            response = httpx.request(method, url, json=payload, timeout=5)
            body = response.json()
        except (httpx.HTTPError, httpx.InvalidURL) as err:
            raise CommandError(
                f"no simulated fleet answering at {url} ({err.__class__.__name__}); start the demo fleet first"
            ) from None
        except ValueError:
            raise CommandError(f"{url} answered with something that is not the VX11 simulator") from None
        if response.status_code != 200:
            detail = body.get("detail", body) if isinstance(body, dict) else body
            raise CommandError(f"simulator refused ({response.status_code}): {detail}")
        return body
