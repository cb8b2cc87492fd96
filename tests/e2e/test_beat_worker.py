"""The beat schedule really fires: a real Celery worker with embedded beat, on real Redis,
reads the portal's schedule (vx11_site.schedules) from the database and stores probe rounds of the demo fleet."""

import importlib
import os
import signal
import subprocess
import sys
import time

import pytest
from django.apps import apps as django_apps
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from apps.fleet.models import HealthCheck, Module
from tests.helpers import ROOT, database_url_of_test_db, point_fleet_at, redis_url
from vx11_site.schedules import ensure_schedules


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_worker_with_beat_stores_probe_rounds(sim):
    broker = redis_url()
    point_fleet_at(sim)
    sim.set_mode("hermes", "error")
    # a transactional test starts from an empty database: make the modules as the migration does, and the
    # beat entries as every migrate does
    importlib.import_module("apps.fleet.migrations.0002_reference_fleet_and_schedule").load(django_apps, None)
    ensure_schedules()
    probe_entry = PeriodicTask.objects.get(task="apps.fleet.tasks.probe_fleet")
    probe_entry.interval, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    probe_entry.save()

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "vx11_site.settings",
        "DATABASE_URL": database_url_of_test_db(),
        "REDIS_URL": broker,
        "VX11_CELERY_QUEUE": f"beat-test-{os.getpid()}",
    }  # two test runs side by side do not share a queue
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "vx11_site",
            "worker",
            "-B",
            "-P",
            "solo",
            "-l",
            "WARNING",
            "--scheduler",
            "django_celery_beat.schedulers:DatabaseScheduler",
            "-n",
            f"beat-test-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and HealthCheck.objects.filter(module__slug="madre").count() < 3:
            assert worker.poll() is None, worker.stdout.read()
            time.sleep(0.5)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            output = worker.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            output = worker.communicate()[0]

    rounds = HealthCheck.objects.filter(module__slug="madre").count()
    assert rounds >= 3, f"beat fired {rounds} rounds in 45 s; worker said:\n{output[-3000:]}"
    assert HealthCheck.objects.filter(module__slug="madre", outcome="ok").count() == rounds
    assert set(HealthCheck.objects.filter(module__slug="hermes").values_list("error", flat=True)) == {"HTTP 500"}
    assert Module.objects.get(slug="madre").state == "up"
    assert Module.objects.get(slug="hermes").state == "down"
    assert PeriodicTask.objects.get(pk=probe_entry.pk).total_run_count >= 1  # beat synced its bookkeeping
