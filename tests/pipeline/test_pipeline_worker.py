"""The whole pipeline as beat or the API runs it: queued to a real Celery worker (its own process, on Redis),
against the simulated fleet, a live portal (daphne) for the operator check, a real test command and a bare git
repository as the mirror's remote."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from apps.evidence.bags import verify
from apps.flows.models import Flow
from apps.metrics.models import Scorecard
from apps.metrics.snapshot import verify_snapshot
from apps.pipeline import runner
from apps.pipeline.models import Busy, PipelineRun
from apps.power.models import ServiceControl
from tests.helpers import TOKEN, WorkerProcess, celery_sends_to, database_url_of_test_db, redis_url
from tests.pipeline.helpers import git, own_every_table, tidy_tree

SMOKE_TESTS = """
def test_one():
    assert 1 + 1 == 2
"""


def wait_for_end(run: PipelineRun, within: float = 150) -> PipelineRun:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.finished:
            return run
        time.sleep(0.2)
    pytest.fail(f"run #{run.id} still {run.status} after {within} s: {run.phase_list()}")


@pytest.fixture
def pipeline_worker(pipeline_env, daphne, settings, tmp_path):
    """A worker whose settings are the test's: the tidy target and tree, the live portal, the smoke tests."""
    Flow.load_canonical()  # a transactional test may start from a database another one emptied
    settings.VX11_ROOT = tmp_path / "tidy_root"
    tidy_tree(settings.VX11_ROOT)
    own_every_table(Path(settings.VX11_TARGET_DB))
    (tmp_path / "test_smoke.py").write_text(SMOKE_TESTS)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_smoke.py", "--junitxml", "{report}"]
    tests = [{"name": "smoke", "kind": "unit", "argv": argv, "timeout": 60}]
    settings.VX11_PIPELINE_TESTS = tests
    settings.VX11_PIPELINE_TESTS_CWD = tmp_path
    settings.VX11_PORTAL_URL = daphne.replace("ws://", "http://")
    broker = redis_url()
    queue = f"pipeline-test-{os.getpid()}-{time.monotonic_ns()}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "vx11_site.settings",
        "DATABASE_URL": database_url_of_test_db(),
        "REDIS_URL": broker,
        "VX11_CELERY_QUEUE": queue,
        "VX11_TOKEN": TOKEN,
        "VX11_WATCHDOG_SECONDS": "0",
        "VX11_EVIDENCE_ROOT": str(settings.VX11_EVIDENCE_ROOT),
        "VX11_ROOT": str(settings.VX11_ROOT),
        "VX11_TARGET_DB": settings.VX11_TARGET_DB,
        "VX11_AUDIT_ALLOWED_ROOTS": ",".join(str(p) for p in settings.VX11_AUDIT_ALLOWED_ROOTS),
        "VX11_PIPELINE_TESTS": json.dumps(tests),
        "VX11_PIPELINE_TESTS_CWD": str(tmp_path),
        "VX11_PORTAL_URL": settings.VX11_PORTAL_URL,
        "VX11_MIRROR_REPO": str(settings.VX11_MIRROR_REPO),
        "VX11_MIRROR_REMOTE": settings.VX11_MIRROR_REMOTE,
        "VX11_FLOW_HTTP_TIMEOUT": "2",
    }
    worker = WorkerProcess(env, "pipeline-test", tmp_path / "worker.log").start()
    with celery_sends_to(broker, queue):
        yield worker
    worker.kill(signal.SIGTERM)
    import redis

    redis.Redis.from_url(broker).delete(queue)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_whole_run_on_a_worker_is_ok_proves_itself_and_reaches_the_mirror(pipeline_worker, fleet, settings):
    ServiceControl.objects.create(module=fleet["switch"], backend=ServiceControl.Backend.COMPOSE)
    run = runner.queue(runner.start("api"))
    with pytest.raises(Busy) as busy:
        runner.start("api")
    assert busy.value.running.id == run.id
    run = wait_for_end(run)
    phases = {p.number: p for p in run.phase_runs.all()}
    assert {n: p.status for n, p in phases.items()} == dict.fromkeys(range(1, 8), "ok"), {
        n: p.summary for n, p in phases.items()
    }
    assert run.status == "ok"
    assert verify(settings.VX11_EVIDENCE_ROOT / run.evidence_path)["state"] == "valid"
    assert all(p.started_at and p.ended_at for p in phases.values())
    assert verify_snapshot(Scorecard.objects.get(pk=run.scorecard_id))["ok"]
    assert run.mirror_pushed
    remote = settings.VX11_MIRROR_REMOTE
    assert (
        git("log", "-1", "--format=%s", "main", cwd=remote).strip()
        == f"VX11 pipeline run #{run.id}: ok, verdict {run.verdict}"
    )
    tree = git("ls-tree", "-r", "--name-only", "main", cwd=remote).splitlines()
    bag = run.evidence_path.rsplit("/", 1)[-1]
    assert f"runs/{bag}/data/EVIDENCE_INDEX.md" in tree
    assert f"runs/{bag}/data/phase_3_runner/tests/smoke.xml" in tree
    assert "latest/SCORECARD.json" in tree
    assert run.manual_interventions == 0
