"""Runs of the pipeline in this process (the CLI's way), phase by phase, against the simulated fleet."""

import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from apps.evidence.bags import verify
from apps.metrics.models import MetricSnapshot, Scorecard, TestRun
from apps.metrics.snapshot import take_snapshot, verify_snapshot
from apps.pipeline import runner
from apps.pipeline.models import Busy, PipelineRun
from tests.audits.helpers import corrupted_index
from tests.pipeline.helpers import git, own_every_table, tidy_tree


def statuses(run: PipelineRun) -> dict[int, str]:
    return {p.number: p.status for p in run.phase_runs.all()}


def test_audit_cleanup_metrics_make_one_bag_that_verifies(pipeline_env, settings):
    run = runner.run_inline(runner.start("cli", phases="1,2,6"))
    got = statuses(run)
    assert got[1] == "findings"  # the demo's target and tree have something to find
    assert got[2] == "findings"  # the demo tree has strays; a dry run lists them
    assert got[6] == "ok", run.phase_runs.get(number=6).summary
    assert [got[n] for n in (3, 4, 5, 7)] == ["skipped"] * 4
    assert run.status == "findings"
    report = verify(settings.VX11_EVIDENCE_ROOT / run.evidence_path)
    assert report["state"] == "valid", report
    index = (settings.VX11_EVIDENCE_ROOT / run.evidence_path / "data" / "EVIDENCE_INDEX.md").read_text()
    assert "### Phase 1: Audit" in index
    assert "### Phase 7: Mirror" in index
    phase1 = run.phase_runs.get(number=1)
    assert any(path.endswith("phase_1_audit/audit.json") for path in phase1.evidence)
    assert all((settings.VX11_EVIDENCE_ROOT / path).is_file() for path in phase1.evidence)
    card = Scorecard.objects.get(pk=run.scorecard_id)
    assert verify_snapshot(card)["ok"]
    assert run.verdict == card.verdict


def test_a_tidy_fleet_audits_and_cleans_to_ok(pipeline_env, settings, tmp_path):
    settings.VX11_ROOT = tmp_path / "tidy_root"
    tidy_tree(settings.VX11_ROOT)
    own_every_table(Path(settings.VX11_TARGET_DB))
    run = runner.run_inline(runner.start("cli", phases="1,2"))
    assert statuses(run)[1] == "ok", run.phase_runs.get(number=1).summary
    assert statuses(run)[2] == "ok", run.phase_runs.get(number=2).summary
    assert run.status == "ok"
    assert run.exit_code == 0


def test_a_corrupt_target_is_a_finding_and_gates_stability_to_zero(pipeline_env, settings):
    corrupted_index(Path(settings.VX11_TARGET_DB))
    run = runner.run_inline(runner.start("cli", phases="1,6"))
    phase1 = run.phase_runs.get(number=1)
    assert phase1.status == "findings"
    assert "integrity_check" in phase1.summary
    stability = MetricSnapshot.objects.get(scorecard_id=run.scorecard_id, name="Estabilidad_operativa_pct")
    assert stability.value == 0
    assert stability.reason == "gated: the database's integrity_check failed"
    assert run.verdict == "CRITICAL"


def test_a_failed_phase_skips_what_needs_it_and_metrics_still_runs(pipeline_env, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("the evidence disk is gone")

    monkeypatch.setattr("apps.audits.runner.run_now", broken)
    run = runner.run_inline(runner.start("cli", phases="1,2,6"))
    got = {p.number: p for p in run.phase_runs.all()}
    assert got[1].status == "failed"
    assert "the evidence disk is gone" in got[1].summary
    assert got[2].status == "skipped"
    assert got[2].summary == "skipped: phase 1 (audit) failed and this phase needs its output"
    assert got[6].status == "ok"
    assert run.status == "failed"
    assert run.exit_code == 1
    nv = MetricSnapshot.objects.get(scorecard_id=run.scorecard_id, name="db_integrity_pct")
    assert nv.value is None


def test_one_run_at_a_time(pipeline_env):
    first = runner.start("api")
    with pytest.raises(Busy) as busy:
        runner.start("cli")
    assert busy.value.running.id == first.id
    assert first.api_url in str(busy.value)
    assert PipelineRun.objects.count() == 1
    runner.cancel(first, None)
    first.refresh_from_db()
    assert first.status == "cancelled"
    assert runner.start("cli").id != first.id  # the slot is free again


def test_a_lost_worker_is_noticed_by_the_sweep(pipeline_env, settings):
    settings.VX11_PIPELINE_SILENT_SECONDS = 300
    started = timezone.now()
    run = runner.start("api", now=started)
    runner.run_phase(run.id, 6, now=started)
    lost = run.phase_runs.get(number=1)
    run.refresh_from_db()
    assert lost.claim(started)  # phase 1 taken by a worker that then died
    assert runner.sweep(now=started + timedelta(seconds=299)) == []
    assert runner.sweep(now=started + timedelta(seconds=301)) == [run.id]
    run.refresh_from_db()
    assert run.status == "interrupted"
    assert "no sign of its worker for 301 s" in run.error
    got = statuses(run)
    assert got[1] == "failed"
    assert got[6] == "ok"
    assert [got[n] for n in (2, 3, 4, 5, 7)] == ["skipped"] * 5
    assert run.evidence_path  # what was staged is in its bag
    assert runner.start("cli")  # and the slot is free


def test_human_actions_during_a_run_are_counted_and_lower_autonomy(pipeline_env, admin_user):
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.contenttypes.models import ContentType

    from apps.fleet.models import Module
    from apps.power.models import PowerAction

    run = runner.start("cli", phases="1,6")
    runner.run_phase(run.id, 1)
    hermes = Module.objects.get(slug="hermes")
    LogEntry.objects.create(
        user=admin_user,
        content_type=ContentType.objects.get_for_model(Module),
        object_id=str(hermes.pk),
        object_repr="hermes",
        action_flag=CHANGE,
        change_message="timeout",
    )
    PowerAction.objects.create(
        user=admin_user,
        actor=admin_user.username,
        service="hermes",
        action="restart",
        apply=True,
        applied=True,
        result="ok",
        http_status=200,
        at=timezone.now(),
    )
    phase6 = runner.run_phase(run.id, 6)
    run = runner.finish_run(run.id)
    assert run.manual_interventions == 2
    assert [i["kind"] for i in run.interventions] == ["admin", "power"]
    assert phase6.interventions == 2
    autonomy = MetricSnapshot.objects.get(scorecard_id=run.scorecard_id, name="Autonomia_pct")
    assert autonomy.value == 100  # phase 6 took the snapshot: phase 1 ran with no human action
    later = take_snapshot()
    assert later.metrics.get(name="Autonomia_pct").value == 50  # phase 6 itself had two


def test_the_mirror_push_that_fails_is_retried_by_the_next_run(pipeline_env, settings):
    remote = settings.VX11_MIRROR_REMOTE
    settings.VX11_MIRROR_REMOTE = str(pipeline_env / "not-yet.git")
    first = runner.run_inline(runner.start("cli", phases="6,7"))
    mirror = first.phase_runs.get(number=7)
    assert mirror.status == "failed"
    assert first.status == "failed"
    assert first.mirror_commit
    assert not first.mirror_pushed
    Path(remote).rename(pipeline_env / "not-yet.git")
    second = runner.run_inline(runner.start("cli", phases="6,7"))
    assert second.phase_runs.get(number=7).status == "ok"
    first.refresh_from_db()
    assert first.mirror_pushed
    log = git("log", "--format=%s", "main", cwd=pipeline_env / "not-yet.git").splitlines()
    assert log == [
        f"VX11 pipeline run #{second.id}: ok, verdict {second.verdict}",
        f"VX11 pipeline run #{first.id}: ok, verdict {first.verdict}",
    ]
    tree = git("ls-tree", "-r", "--name-only", "main", cwd=pipeline_env / "not-yet.git")
    assert f"runs/{Path(first.evidence_path).name}/data/run.json" in tree
    assert f"runs/{Path(second.evidence_path).name}/data/run.json" in tree
    assert "latest/PERCENTAGES.json" in tree


SMOKE_TESTS = """
def test_one():
    assert 1 + 1 == 2


def test_two():
    assert "vx11".upper() == "VX11"
"""


def test_the_runner_phase_with_hermes_down_fails_flow_a_and_the_verdict_is_not_operational(pipeline_env, settings, sim):
    settings.VX11_FLOW_HTTP_TIMEOUT = 0.5
    settings.VX11_PIPELINE_TESTS_CWD = pipeline_env
    (pipeline_env / "test_smoke.py").write_text(SMOKE_TESTS)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_smoke.py", "--junitxml", "{report}"]
    settings.VX11_PIPELINE_TESTS = [{"name": "smoke", "kind": "unit", "argv": argv, "timeout": 60}]
    settings.VX11_PIPELINE_FLOWS = ["A"]  # B waits for a daughter, which needs a worker (the worker test runs it)
    sim.set_mode("hermes", "down")
    run = runner.run_inline(runner.start("cli", phases="3,6"))
    phase3 = run.phase_runs.get(number=3)
    assert phase3.status == "findings"
    assert "flow A failed" in phase3.summary
    assert "A" in phase3.details["failed_flows"]
    assert "not answering: hermes" in phase3.summary
    assert "tests smoke (unit): 2 passed, 0 failed" in phase3.summary
    test_run = TestRun.objects.get(pk=phase3.details["test_runs"][0]["test_run"])
    assert (test_run.passed, test_run.failed, test_run.source) == (2, 0, "pipeline")
    assert any(path.endswith("phase_3_runner/tests/smoke.xml") for path in phase3.evidence)
    assert run.verdict in ("DEGRADED", "CRITICAL")
    tests_metric = MetricSnapshot.objects.get(scorecard_id=run.scorecard_id, name="tests_p0_pct")
    assert tests_metric.value == 100


def test_a_phase_task_delivered_again_after_its_worker_died_ends_the_run_as_interrupted(pipeline_env):
    run = runner.start("api", phases="1,6")
    assert run.phase_runs.get(number=1).claim(timezone.now())  # the lost worker had taken it
    assert runner.run_phase(run.id, 1) is None  # the broker hands the task to another worker
    assert runner.run_phase(run.id, 6) is None  # the rest of the chain finds the run ended
    run.refresh_from_db()
    assert run.status == "interrupted"
    assert run.error == "interrupted: the worker running phase 1 was lost (its task was delivered again)"
    assert statuses(run)[1] == "failed"
    assert statuses(run)[6] == "skipped"


def test_old_runs_are_pruned_with_what_is_left_of_their_staging_but_never_the_latest(pipeline_env, settings):
    settings.VX11_PIPELINE_RETENTION_DAYS = 30
    long_ago = timezone.now() - timedelta(days=31)
    old = runner.start("beat", phases="6", now=long_ago)
    runner.run_phase(old.id, 6)
    runner.finish_run(old.id)
    left = runner.staging(old) / "phase_7_mirror"
    left.mkdir(parents=True)
    (left / "mirror.log").write_text("$ git push\n")
    assert PipelineRun.prune() == 0  # the only run is the latest: kept
    newer = runner.finish_run(runner.start("cli", phases="6").id)
    assert PipelineRun.prune() == 8  # the old run and its seven phases
    assert not runner.staging(old).exists()
    assert list(PipelineRun.objects.values_list("id", flat=True)) == [newer.id]


def test_a_test_command_over_its_timeout_is_killed_with_its_children_and_is_a_finding(pipeline_env, settings):
    settings.VX11_PIPELINE_FLOWS = []
    pid_file = pipeline_env / "grandchild.pid"
    spawn = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    # the command starts a child of its own, waits until that child is up, then hangs
    script = (
        f"import os, subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {spawn!r}]); "
        f"[time.sleep(0.05) for _ in range(200) if not os.path.exists({str(pid_file)!r})]; time.sleep(60)"
    )
    slow = {"name": "slow", "kind": "unit", "argv": [sys.executable, "-c", script], "timeout": 2}
    settings.VX11_PIPELINE_TESTS = [slow]
    run = runner.run_inline(runner.start("cli", phases="3"))
    phase3 = run.phase_runs.get(number=3)
    assert phase3.status == "findings"
    assert "tests slow: timed out after 2 s" in phase3.summary
    assert not TestRun.objects.exists()  # no report: no test run counted
    grandchild = int(pid_file.read_text())
    assert not alive(grandchild)  # the command's whole process group went with it


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (killed, waiting for a parent that is gone to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_phase_announces_its_progress_at_most_once_a_second(pipeline_env):
    from apps.events.models import Event
    from apps.pipeline.phases import Context

    run = runner.start("cli", phases="3")
    phase = run.phase_runs.get(number=3)
    ctx = Context(run, phase, None, runner.staging(run) / "phase_3_runner")
    announced = Event.objects.filter(type="plan_updated", data__pipeline_run=run.id)
    before = announced.count()
    ctx.progress(1, 4, "flow A")  # the phase's start was announced just now: stored, not announced
    assert announced.count() == before
    ctx.announced -= 1.0  # a second later
    ctx.progress(2, 4, "flow B")
    assert announced.count() == before + 1
    latest = announced.order_by("-id").first().data["phases"]
    assert [p["step"] for p in latest if p["number"] == 3] == ["flow B"]
    assert [p["progress"] for p in latest if p["number"] == 3] == [50.0]


def test_an_http_remote_the_outbound_policy_refuses_is_never_contacted(pipeline_env, settings):
    settings.VX11_MIRROR_REMOTE = "http://169.254.169.254/vx11-evidence.git"
    run = runner.run_inline(runner.start("cli", phases="6,7"))
    mirror = run.phase_runs.get(number=7)
    assert mirror.status == "failed"
    assert "outbound request refused" in mirror.summary
    assert not run.mirror_commit  # git never ran: nothing committed, nothing to push
    assert not (pipeline_env / "mirror-clone").exists()
