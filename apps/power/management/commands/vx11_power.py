import json

from django.core.management.base import BaseCommand

from apps.power.manager import expire_windows, power_status
from vx11_site import running_demo


def control_line(allowed_here: bool) -> str:
    """Allowed or disabled, as this process's settings say, and as a running demo's processes see it:
    the demo turns service control on for itself only, so its console may allow what this shell does not."""
    if allowed_here:
        return "allowed"
    demo = running_demo.current()
    if demo and demo.get("service_control_allowed"):
        return f"DISABLED here, ON for the running demo (pid {demo['pid']}) and its console"
    return "DISABLED"


class Command(BaseCommand):
    help = "Power: `status` (or --json), `check-windows` (stop expired ttl windows now)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("status", help="every enabled module: backend, running, pid, in a window").add_argument(
            "--json", action="store_true"
        )
        sub.add_parser("check-windows", help="run the expiry checker once").add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        return getattr(self, f"do_{options['action'].replace('-', '_')}")(options)

    def do_status(self, options):
        status = power_status()
        if options["json"]:
            self.stdout.write(json.dumps(status, indent=2))
            return
        self.stdout.write(
            f"service control {control_line(status['service_control_allowed'])}; "
            f"window required: {status['window_required']}; open power window: {status['window'] or 'none'}"
        )
        for s in status["services"]:
            running = {True: "running", False: "stopped", None: "-"}[s["running"]]
            self.stdout.write(
                f"{s['service']:<16} {s['state']:<9} {s['backend'] or 'no backend':<10} {running:<8} "
                f"pid {s['pid'] or '-':<8} {'in window' if s['in_window'] else ''}"
                + (f" ({s['error']})" if s.get("error") else "")
            )

    def do_check_windows(self, options):
        actions = expire_windows()
        rows = [{"service": a.service, "result": a.result, "message": a.message} for a in actions]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
        else:
            for row in rows:
                self.stdout.write(f"{row['service']:<16} {row['result']:<8} {row['message']}")
            self.stdout.write(f"{len(rows)} service(s) stopped by expired windows")
