"""Make one module of the running SIMULATED fleet misbehave: `manage.py vx11_sim madre hang`.

Talks to the simulator's control server (apps.simfleet.sim); it never touches a real VX11 module.
"""

import httpx
from django.core.management.base import BaseCommand, CommandError

from apps.simfleet.sim import CONTROL_PORT, MODES, PORTS
from vx11_site import running_demo


def default_control_url() -> str:
    """The control server of the demo running on this checkout's var/ (it moves with --port-offset)."""
    demo = running_demo.current()
    if demo and demo.get("control_url"):
        return demo["control_url"]
    return f"http://127.0.0.1:{CONTROL_PORT}"


class Command(BaseCommand):
    help = "Demo fleet (simulator): set a simulated module's mode. Without arguments, show the fleet."

    def add_arguments(self, parser):
        parser.add_argument("slug", nargs="?", help=f"simulated module: {', '.join(PORTS)}")
        parser.add_argument("mode", nargs="?", help=f"one of: {', '.join(MODES)}")
        parser.add_argument("--delay", type=float, help='seconds for mode "slow"')
        parser.add_argument(
            "--control-url",
            help="the simulator's control server (default: the running demo's, "
            f"from var/demo.json, else http://127.0.0.1:{CONTROL_PORT})",
        )
        parser.add_argument("--list", action="store_true", help="print the modes and exit")

    def handle(self, *args, **options):
        if options["list"]:
            for mode, what in MODES.items():
                self.stdout.write(f"{mode:<13} {what}")
            return
        slug, mode, delay = options["slug"], options["mode"], options["delay"]
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
        if mode not in MODES:
            raise CommandError(f"unknown or missing mode {mode!r}; expected one of: {', '.join(MODES)} (see --list)")
        if delay is not None and delay < 0:
            raise CommandError("--delay must be >= 0 seconds")
        payload = {"mode": mode} if delay is None else {"mode": mode, "delay": delay}
        state = self.call("POST", f"{url}/{slug}", payload)
        delay_note = f" ({state['delay']}s)" if state["delay"] is not None else ""
        self.stdout.write(f"{slug} (port {state['port']}) is now {state['mode']}{delay_note} [simulated]")

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
