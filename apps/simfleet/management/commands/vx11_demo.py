"""`python manage.py vx11 demo`: the demo fleet, and by default the whole portal around it.

Starts the simulated modules (on the real ports + --port-offset), points the module registry
at the ports really used, creates an admin login and prints it, runs a first probe round,
then starts a Celery worker, Celery beat and daphne, and waits until Ctrl-C or SIGTERM.

The worker and daphne write their logs to var/log/ (worker.log, daphne.log) so the terminal keeps the
one block that matters: URL, login, token and consoles, printed last. A child that dies is started
again (logged to the terminal and var/log/demo.log) instead of taking the portal down; the demo gives
up only when a child keeps dying. The running demo records its ports, pids and effective settings in
var/demo.json (vx11_site.running_demo) for `vx11 sim` and `vx11 power status`.

The --power-modules (default: mcp) are not served by the simulator but run as their own processes
(python -m apps.simfleet.serve_one) under the power manager's process backend, so the power console
really stops and starts them. Service control is on for the demo unless VX11_ALLOW_SERVICE_CONTROL
says otherwise; the maintenance-window guard stays on.
"""

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from apps.fleet.models import Module
from apps.fleet.probe import run_round
from apps.fleet.reference import reference_rows
from apps.power import backends
from apps.power.manager import perform
from apps.power.models import ServiceControl
from apps.simfleet.management.commands.vx11_sim import serve_one_argv
from apps.simfleet.sim import PORTS, SimFleet
from apps.simfleet.target_db import create_target_db
from apps.simfleet.target_tree import create_target_tree
from vx11_site import running_demo
from vx11_site.settings import envbool

ADMIN_USER = "admin"


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
RESTART_LIMIT = 5  # restarts of one child within RESTART_PERIOD seconds before the demo gives up
RESTART_PERIOD = 120
DEMO_TARGET_ROWS = 20000  # the audit target `vx11 demo` makes; `vx11 demo-db --rows N` makes any size


def _stop(signum, frame):
    raise KeyboardInterrupt


def admin_login() -> str:
    """The demo admin's password: made once, kept in var/ (git-ignored, mode 600)."""
    path = settings.VAR_DIR / "demo-admin-password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    password = path.read_text().strip()
    user, created = get_user_model().objects.get_or_create(
        username=ADMIN_USER, defaults={"is_staff": True, "is_superuser": True}
    )
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


class Child:
    """One process of the portal (worker or daphne), its output in var/log/<name>.log, started again when it dies."""

    def __init__(self, name: str, argv: list[str], log_dir: Path):
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.restarts: list[float] = []

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            # unbuffered, so `tail -f var/log/<name>.log` shows each line as it happens
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.proc = subprocess.Popen(
                self.argv, cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def restart(self, now: float) -> None:
        """Start again; refuse (CommandError) when it died RESTART_LIMIT times within RESTART_PERIOD seconds."""
        self.restarts.append(now)
        recent = [at for at in self.restarts if now - at <= RESTART_PERIOD]
        if len(recent) > RESTART_LIMIT:
            raise CommandError(f"{self.name} died {len(recent)} times in {RESTART_PERIOD} s; see {self.log_path}")
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_or_kill(self, timeout: float = 10) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


class Command(BaseCommand):
    help = "Run the demo fleet (simulated VX11 modules) and, unless --fleet-only, the portal around it."

    def add_arguments(self, parser):
        parser.add_argument(
            "--port-offset", type=int, default=0, help="move every simulated module's port by this much"
        )
        parser.add_argument("--portal-port", type=int, default=8080, help="daphne's port (default 8080)")
        parser.add_argument(
            "--fleet-only", action="store_true", help="only the simulated modules; no worker, beat or daphne"
        )
        parser.add_argument(
            "--shub-warmup", type=float, default=10.0, help="seconds shub answers 'initializing' (as the real one does)"
        )
        parser.add_argument(
            "--power-modules",
            default="mcp",
            help=(
                "comma-separated modules run as their own processes under the power manager (default mcp; '' for none)"
            ),
        )

    def handle(self, *args, **options):
        for stream in (sys.stdout, sys.stderr):  # each line reaches a terminal, a pipe or a log file at once
            stream.reconfigure(line_buffering=True)
        offset = options["port_offset"]
        if not -8000 <= offset <= 50000:
            raise CommandError("--port-offset must keep ports between 1 and 65535")
        powered = [slug for slug in options["power_modules"].split(",") if slug.strip()]
        unknown = sorted(set(powered) - set(PORTS))
        if unknown:
            raise CommandError(
                f"--power-modules: unknown module(s) {', '.join(unknown)}; expected some of: {', '.join(PORTS)}"
            )
        if powered:  # the demo's own modules only: control is on unless the environment says otherwise
            os.environ.setdefault("VX11_ALLOW_SERVICE_CONTROL", "1")
            settings.VX11_ALLOW_SERVICE_CONTROL = envbool("VX11_ALLOW_SERVICE_CONTROL", True)  # as the settings read it
        call_command("migrate", verbosity=0, interactive=False)
        self.make_audit_target()
        self.make_managed_tree()
        self.log_dir = settings.VAR_DIR / "log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.state = {
            "portal_url": None,
            "control_url": None,
            "port_offset": offset,
            "power_modules": powered,
            "service_control_allowed": settings.VX11_ALLOW_SERVICE_CONTROL,
            "log_dir": str(self.log_dir),
            "children": {},
            "restarts": {},
            "started_at": time.time(),
        }
        # both set here, SIGINT too: a shell starts background jobs with SIGINT ignored, and Python then keeps it so
        for stop in STOP_SIGNALS:
            signal.signal(stop, _stop)
        sim = SimFleet(port_offset=offset, shub_warmup=options["shub_warmup"], exclude=powered)
        try:
            sim.start()
        except OSError as exc:
            raise CommandError(
                f"cannot start the demo fleet: {exc}. Another demo running? Try --port-offset 100"
            ) from None
        children: list[Child] = []
        try:
            self.state["control_url"] = sim.control_url
            running_demo.record(self.state)
            point_registry_at(sim)
            self.stdout.write(self.style.SUCCESS("Demo fleet (SIMULATOR) is up:"))
            for slug, port in sorted(sim.ports.items(), key=lambda kv: kv[1]):
                self.stdout.write(f"  {slug:<16} http://127.0.0.1:{port}/health")
            self.start_powered(sim, powered)
            results, _ = run_round()
            self.stdout.write(
                f"First probe round: {sum(r.outcome != 'fail' for r in results)}/{len(results)} answering."
            )
            if not options["fleet_only"]:
                self.pipeline_settings(options["portal_port"])
                children = self.start_portal(options["portal_port"])
                self.state["portal_url"] = f"http://127.0.0.1:{options['portal_port']}"
                self.wait_until_answering(options["portal_port"], children)
            # recorded before the welcome block: whoever acts on the welcome finds var/demo.json complete
            self.record(children)
            if not options["fleet_only"]:
                self.print_welcome(powered)
            self.supervise(children)
        except KeyboardInterrupt:
            self.stdout.write("\nstopping the demo…")
        finally:
            for stop in STOP_SIGNALS:  # a second Ctrl-C or SIGTERM must not cut the clean-up short
                signal.signal(stop, signal.SIG_IGN)
            for child in children:
                child.stop()
            for child in children:
                child.wait_or_kill()
            self.stop_powered(powered)
            sim.stop()
            running_demo.forget()

    def make_audit_target(self) -> None:
        """The database `vx11 audit` reads: made once (a SQLite VX11_TARGET_DB that does not exist yet); an
        existing one, or a PostgreSQL target, is the operator's and left alone."""
        target = settings.VX11_TARGET_DB
        if "://" in target or Path(target).exists():
            return
        made = create_target_db(Path(target), DEMO_TARGET_ROWS)
        self.stdout.write(f"Audit target: {made['path']} ({made['tables']} tables, {made['rows']} rows)")

    def make_managed_tree(self) -> None:
        """The VX11 checkout housekeeping and the fs/git checks work on: made once, when VX11_ROOT does not exist
        (an existing folder, a real checkout, is left alone)."""
        root = settings.VX11_ROOT
        if root.exists() or root.is_symlink():
            return
        made = create_target_tree(root)
        git = made["git"].get("commit", "")[:12] or made["git"].get("skipped", "")
        self.stdout.write(f"Managed tree: {made['root']} ({made['files']} files; git {git})")

    def pipeline_settings(self, port: int) -> None:
        """What the pipeline's worker needs from the demo, in the environment its children inherit: the portal's
        address (the operator check), unless the operator named them a bare repository in var/ as the mirror's
        remote (so a demo run goes all the way to a push) and the demo fleet's own suite as the runner's test
        command."""
        os.environ.setdefault("VX11_PORTAL_URL", f"http://127.0.0.1:{port}")
        if not os.environ.get("VX11_MIRROR_REMOTE"):
            remote = settings.VAR_DIR / "mirror-remote.git"
            if not remote.exists():
                subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=False, timeout=30)
            os.environ["VX11_MIRROR_REMOTE"] = str(remote)
        if not os.environ.get("VX11_PIPELINE_TESTS"):
            # the demo fleet's own suite, so the runner phase has a real report behind tests_p0_pct; recorded in
            # var/demo.json, where the pipeline finds it (a `vx11 pipeline run` from another shell included)
            suite = Path(__file__).resolve().parents[2] / "fleet_tests" / "test_demo_fleet.py"
            argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:django", "-p", "no:cacheprovider", str(suite)]
            urls = json.dumps(dict(Module.objects.values_list("slug", "base_url")))
            self.state["pipeline_tests"] = [
                {
                    "name": "demo-fleet",
                    "kind": "unit",
                    "argv": [*argv, "--junitxml", "{report}"],
                    "env": {"VX11_DEMO_FLEET_URLS": urls},
                    "timeout": 120,
                }
            ]
        settings.VX11_PORTAL_URL = os.environ["VX11_PORTAL_URL"]
        settings.VX11_MIRROR_REMOTE = os.environ["VX11_MIRROR_REMOTE"]

    def record(self, children: list["Child"]) -> None:
        self.state["children"] = {child.name: child.proc.pid for child in children}
        self.state["restarts"] = {child.name: len(child.restarts) for child in children}
        self.state["powered_pids"] = dict(
            ServiceControl.objects.filter(module__slug__in=self.state["power_modules"]).values_list(
                "module__slug", "pid"
            )
        )
        running_demo.record(self.state)

    def print_welcome(self, powered: list[str]) -> None:
        """The block a newcomer needs, printed last so nothing scrolls it away."""
        url = self.state["portal_url"]
        password = admin_login()
        rows = [
            ("login", f"{ADMIN_USER} / {password}"),
            ("API docs", f"{url}/api/docs"),
            ("Operator console", f"{url}/operator/console"),
            (
                "X-VX11-Token",
                f"{settings.VX11_TOKEN}  (operator endpoints; {url.replace('http', 'ws')}/ws/<session>?token=...)",
            ),
        ]
        if powered:
            control = "ON for the demo" if settings.VX11_ALLOW_SERVICE_CONTROL else "OFF"
            rows.append(
                (
                    "Power console",
                    f"{url}/admin/power/servicecontrol/console/  ({', '.join(powered)} under the power "
                    f"manager; service control {control}; open a window before applying)",
                )
            )
        rows.append(
            (
                "Pipeline",
                f"{url}/admin/pipeline/pipelinerun/  or  python manage.py vx11 pipeline run  (mirror: "
                f"{settings.VX11_MIRROR_REMOTE})",
            )
        )
        rows.append(("Misbehave", "python manage.py vx11 sim hermes down   (also: slow, hang, error, garbage, ok)"))
        logs = ", ".join(str(self.log_dir / f"{name}.log") for name in ("worker", "beat", "daphne", "demo"))
        rows.append(("Logs", logs))
        self.stdout.write(self.style.SUCCESS(f"\nVX11 Ops Portal: {url}/admin/"))
        for label, value in rows:
            self.stdout.write(f"  {label + ':':<18}{value}")
        self.stdout.write("Ctrl-C stops everything.\n")

    def start_powered(self, sim: SimFleet, powered: list[str]) -> None:
        """Give each power module the process backend and start it through the power manager (an audited action).

        Ctrl-C and SIGTERM wait until the start is recorded, so the demo never loses track of a process it started
        (remembered by a handler, not blocked: a blocked signal would stay blocked in the started process)."""
        asked_to_stop = []
        previous = {
            stop: signal.signal(stop, lambda signum, frame: asked_to_stop.append(signum)) for stop in STOP_SIGNALS
        }
        try:
            for slug in powered:
                port = int(sim.base_url(slug).rsplit(":", 1)[1])
                argv = serve_one_argv(slug, port)
                ServiceControl.objects.update_or_create(
                    module=Module.objects.get(slug=slug),
                    defaults={"backend": ServiceControl.Backend.PROCESS, "command": argv},
                )
                row = perform(None, slug, "start", True, system="demo")
                self.stdout.write(
                    f"  {slug:<16} http://127.0.0.1:{port}/health  own process, power manager: {row.message}"
                )
        finally:
            for stop, handler in previous.items():
                signal.signal(stop, handler)
        if asked_to_stop:
            raise KeyboardInterrupt

    def stop_powered(self, powered: list[str]) -> None:
        """Stop each power module through the power manager; a process that outlives that (the stop refused
        because another action holds the module, or failed) is ended here by its recorded pid."""
        for slug in powered:
            try:
                row = perform(None, slug, "stop", True, system="demo")
                self.stdout.write(f"{slug}: {row.message}")
            except Exception as exc:  # stopping the demo goes on whatever happens to one module
                self.stderr.write(f"{slug}: could not stop through the power manager: {exc}")
            control = ServiceControl.objects.filter(module__slug=slug).first()
            if control and backends.pid_alive(control.pid, control.command):
                self.stdout.write(
                    f"{slug}: pid {control.pid} {backends.terminate(control.pid, control.stop_grace_sec)}"
                )

    def start_portal(self, port: int) -> list[Child]:
        python = sys.executable
        # beat is a child of its own (not `worker -B`): a worker that dies and is started again must not leave an
        # orphaned beat behind that schedules everything twice
        # threads, not prefork: a flow that waits for its daughter holds a slot, and eight cost less memory than
        # two forks
        worker = [
            python,
            "-m",
            "celery",
            "-A",
            "vx11_site",
            "worker",
            "-l",
            "WARNING",
            "-P",
            "threads",
            "--concurrency",
            "8",
        ]
        beat = [
            python,
            "-m",
            "celery",
            "-A",
            "vx11_site",
            "beat",
            "-l",
            "WARNING",
            "--scheduler",
            "django_celery_beat.schedulers:DatabaseScheduler",
        ]
        daphne = [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "vx11_site.asgi:application"]
        children = [
            Child(name, argv, self.log_dir) for name, argv in (("worker", worker), ("beat", beat), ("daphne", daphne))
        ]
        for child in children:
            child.start()
        return children

    def wait_until_answering(self, port: int, children: list[Child], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in children:
                if child.died():
                    raise CommandError(
                        f"{child.name} exited with code {child.proc.returncode} at start; see {child.log_path}"
                    )
            if backends.health_answers(f"http://127.0.0.1:{port}/health"):
                return
            time.sleep(0.2)
        raise CommandError(
            f"the portal did not answer on port {port} within {timeout:g} s; see {self.log_dir / 'daphne.log'}"
        )

    def supervise(self, children: list[Child]) -> None:
        """Until Ctrl-C or SIGTERM: start again a child that died, and reap power modules the console stopped."""
        demo_log = logging.getLogger("apps.simfleet.demo")
        handler = logging.FileHandler(self.log_dir / "demo.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        demo_log.addHandler(handler)
        try:
            while True:
                for child in children:
                    if child.died():
                        code = child.proc.returncode
                        child.restart(time.monotonic())
                        message = (
                            f"{child.name} exited with code {code}; started again "
                            f"(pid {child.proc.pid}, see {child.log_path})"
                        )
                        demo_log.warning(message)
                        self.record(children)
                for process in list(backends._children.values()):
                    process.poll()
                time.sleep(0.5)
        finally:
            demo_log.removeHandler(handler)
            handler.close()
