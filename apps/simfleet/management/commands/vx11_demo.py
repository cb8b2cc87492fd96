"""`python manage.py vx11 demo`: the demo fleet, and by default the whole portal around it.

Starts the simulated modules (on the real ports + --port-offset), points the module registry
at the ports really used, creates an admin login and prints it, runs a first probe round,
then starts a Celery worker with embedded beat and daphne, and waits until Ctrl-C.

The --power-modules (default: mcp) are not served by the simulator but run as their own processes
(python -m apps.simfleet.serve_one) under the power manager's process backend, so the power console
really stops and starts them. Service control is on for the demo unless VX11_ALLOW_SERVICE_CONTROL
says otherwise; the maintenance-window guard stays on.
"""

import os

import secrets
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from apps.fleet.models import Module
from apps.fleet.probe import run_round
from apps.fleet.reference import reference_rows
from apps.power import backends
from apps.power.models import ServiceControl, perform
from apps.simfleet.sim import PORTS, SimFleet
from vx11_site.settings import envbool

ADMIN_USER = "admin"


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def admin_login() -> str:
    """The demo admin's password: made once, kept in var/ (git-ignored, mode 600)."""
    path = settings.VAR_DIR / "demo-admin-password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    password = path.read_text().strip()
    user, created = get_user_model().objects.get_or_create(username=ADMIN_USER, defaults={"is_staff": True, "is_superuser": True})
    if created or not user.check_password(password):
        user.set_password(password)
        user.is_staff = user.is_superuser = user.is_active = True
        user.save()
    return password


def point_registry_at(sim: SimFleet) -> None:
    for row in reference_rows():
        defaults = {k: v for k, v in row.items() if k in ("name", "role", "core", "port")}
        defaults.update(base_url=sim.base_url(row["slug"]), simulated=True, enabled=True)
        Module.objects.update_or_create(slug=row["slug"], defaults=defaults)


class Command(BaseCommand):
    help = "Run the demo fleet (simulated VX11 modules) and, unless --fleet-only, the portal around it."

    def add_arguments(self, parser):
        parser.add_argument("--port-offset", type=int, default=0, help="move every simulated module's port by this much")
        parser.add_argument("--portal-port", type=int, default=8080, help="daphne's port (default 8080)")
        parser.add_argument("--fleet-only", action="store_true", help="only the simulated modules; no worker, beat or daphne")
        parser.add_argument("--shub-warmup", type=float, default=10.0, help="seconds shub answers 'initializing' (as the real one does)")
        parser.add_argument("--power-modules", default="mcp",
                            help="comma-separated modules run as their own processes under the power manager (default mcp; '' for none)")

    def handle(self, *args, **options):
        offset = options["port_offset"]
        if not -8000 <= offset <= 50000:
            raise CommandError("--port-offset must keep ports between 1 and 65535")
        powered = [slug for slug in options["power_modules"].split(",") if slug.strip()]
        unknown = sorted(set(powered) - set(PORTS))
        if unknown:
            raise CommandError(f"--power-modules: unknown module(s) {', '.join(unknown)}; expected some of: {', '.join(PORTS)}")
        if powered:  # the demo's own modules only: control is on unless the environment says otherwise
            os.environ.setdefault("VX11_ALLOW_SERVICE_CONTROL", "1")
            settings.VX11_ALLOW_SERVICE_CONTROL = envbool("VX11_ALLOW_SERVICE_CONTROL", True)  # as the settings read it
        call_command("migrate", verbosity=0, interactive=False)
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        sim = SimFleet(port_offset=offset, shub_warmup=options["shub_warmup"], exclude=powered)
        try:
            sim.start()
        except OSError as exc:
            raise CommandError(f"cannot start the demo fleet: {exc}. Another demo running? Try --port-offset 100") from None
        children = []
        try:
            point_registry_at(sim)
            self.stdout.write(self.style.SUCCESS("Demo fleet (SIMULATOR) is up:"))
            for slug, port in sorted(sim.ports.items(), key=lambda kv: kv[1]):
                self.stdout.write(f"  {slug:<16} http://127.0.0.1:{port}/health")
            self.start_powered(sim, powered)
            self.stdout.write(f"  misbehave with: python manage.py vx11 sim <module> slow|hang|error|garbage|wrong_status|down|ok --control-url {sim.control_url}")
            results, _ = run_round()
            self.stdout.write(f"First probe round: {sum(r.outcome != 'fail' for r in results)}/{len(results)} answering.")
            if not options["fleet_only"]:
                password = admin_login()
                children = self.start_portal(options["portal_port"])
                url = f"http://127.0.0.1:{options['portal_port']}/admin/"
                self.stdout.write(self.style.SUCCESS(f"\nVX11 Ops Portal: {url}   login: {ADMIN_USER} / {password}"))
                self.stdout.write(f"API docs: http://127.0.0.1:{options['portal_port']}/api/docs   Operator console: http://127.0.0.1:{options['portal_port']}/operator/console")
                self.stdout.write(f"X-VX11-Token (operator endpoints, ws://127.0.0.1:{options['portal_port']}/ws/<session>?token=...): {settings.VX11_TOKEN}")
                if powered:
                    self.stdout.write(f"Power console: {url}power/servicecontrol/console/  ({', '.join(powered)} under the power manager; "
                                      f"service control {'ON' if settings.VX11_ALLOW_SERVICE_CONTROL else 'OFF'}; open a window before applying)")
                self.stdout.write("Ctrl-C stops everything.\n")
            self.wait(children)
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
            self.stop_powered(powered)
            sim.stop()

    def start_powered(self, sim: SimFleet, powered: list[str]) -> None:
        """Give each power module the process backend and start it through the power manager (an audited action)."""
        for slug in powered:
            port = int(sim.base_url(slug).rsplit(":", 1)[1])
            argv = [sys.executable, "-m", "apps.simfleet.serve_one", slug, "--port", str(port)]
            ServiceControl.objects.update_or_create(module=Module.objects.get(slug=slug),
                                                    defaults={"backend": ServiceControl.Backend.PROCESS, "command": argv})
            row = perform(None, slug, "start", True, system="demo")
            self.stdout.write(f"  {slug:<16} http://127.0.0.1:{port}/health  own process, power manager: {row.message}")

    def stop_powered(self, powered: list[str]) -> None:
        for slug in powered:
            try:
                row = perform(None, slug, "stop", True, system="demo")
                self.stdout.write(f"{slug}: {row.message}")
            except Exception as exc:  # stopping the demo goes on whatever happens to one module
                self.stderr.write(f"{slug}: could not stop: {exc}")

    def start_portal(self, port: int) -> list[subprocess.Popen]:
        python = sys.executable
        worker = [python, "-m", "celery", "-A", "vx11_site", "worker", "-B", "-l", "WARNING", "--concurrency", "2",
                  "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"]
        daphne = [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "vx11_site.asgi:application"]
        return [subprocess.Popen(worker, cwd=settings.BASE_DIR), subprocess.Popen(daphne, cwd=settings.BASE_DIR)]

    def wait(self, children: list[subprocess.Popen]) -> None:
        try:
            while True:
                for child in children:
                    if child.poll() is not None:
                        raise CommandError(f"{' '.join(child.args[1:4])} exited with code {child.returncode}")
                for child in list(backends._children.values()):
                    child.poll()  # reap a power module this process started and the console stopped
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.stdout.write("\nstopping the demo…")
