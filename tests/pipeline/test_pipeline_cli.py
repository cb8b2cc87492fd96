"""`vx11 pipeline`: run (here, with --json and the snapshot in the PERCENTAGES layout; or --queue), list, show,
cancel; exit 0 for ok or findings, 1 for a run that did not get through, 2 for what is refused before anything
runs (bad --phases, a run already going, no permission)."""

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.pipeline import runner
from apps.pipeline.models import PipelineRun
from tests.pipeline.helpers import ended_run, running_run


def pipeline(*args: str) -> None:
    call_command("vx11_pipeline", *args)


def test_the_dispatcher_knows_the_verb():
    from vx11_site.management.commands.vx11 import command_name, verbs

    assert "pipeline" in verbs()
    assert command_name("pipeline") == "vx11_pipeline"


def test_run_only_metrics_prints_the_run_and_its_snapshot(faces_env, pipeliner, capsys):
    pipeline("run", "--json", "--phases", "6", "--as", "pipeliner")  # no SystemExit: exit 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["number"] for p in printed["phases"]] == [1, 2, 3, 4, 5, 6, 7]
    statuses = {p["number"]: p["status"] for p in printed["phases"]}
    assert statuses[6] == "ok", printed["phases"][5]["summary"]
    assert {statuses[n] for n in (1, 2, 3, 4, 5, 7)} == {"skipped"}
    assert (printed["status"], printed["exit_code"], printed["trigger"], printed["actor"]) == (
        "ok",
        0,
        "cli",
        "pipeliner",
    )
    assert printed["evidence"].startswith("docs/audit/")
    snapshot = printed["snapshot"]
    assert snapshot["version"] == "9.0"
    assert {"metrics", "metrics_flat", "autonomy_verdict", "validation_checksums", "audit_context"} <= set(snapshot)
    assert snapshot["autonomy_verdict"]["status"] == printed["verdict"]
    assert all(value == "NV" or 0 <= value <= 100 for value in snapshot["metrics_flat"].values())
    assert any(path.endswith("phase_6_metrics/PERCENTAGES.json") for path in printed["phases"][5]["evidence"])
    assert PipelineRun.running() is None  # the slot is free


def test_a_failed_run_exits_1(faces_env, pipeliner, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise OSError("the metrics disk is gone")

    monkeypatch.setattr("apps.metrics.snapshot.take_snapshot", broken)
    with pytest.raises(SystemExit) as ended:
        pipeline("run", "--phases", "6", "--as", "pipeliner")
    assert ended.value.code == 1
    out = capsys.readouterr().out
    assert "failed" in out
    assert "the metrics disk is gone" in out


def test_ctrl_c_ends_the_run_as_interrupted_and_frees_the_slot(faces_env, pipeliner, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("apps.metrics.snapshot.take_snapshot", interrupted)
    with pytest.raises(SystemExit) as ended:
        pipeline("run", "--phases", "6", "--as", "pipeliner")
    assert ended.value.code == 1
    run = PipelineRun.objects.get()
    assert (run.status, run.error) == ("interrupted", "interrupted: Ctrl-C in `vx11 pipeline run`")
    assert run.phase_runs.get(number=6).status == "failed"
    assert run.evidence_path  # what was staged is in its bag
    assert PipelineRun.running() is None


def test_refusals_exit_2(faces_env, pipeliner, django_user_model):
    for phases, words in (("0,9", "phases must be numbers from 1 to 7"), ("six", "separated by commas")):
        with pytest.raises(CommandError, match=words) as refused:
            pipeline("run", "--phases", phases, "--as", "pipeliner")
        assert refused.value.returncode == 2
    going = runner.start("beat")
    with pytest.raises(CommandError, match=going.api_url) as busy:
        pipeline("run", "--phases", "6", "--as", "pipeliner")
    assert busy.value.returncode == 2
    django_user_model.objects.create_user("nobody")
    with pytest.raises(CommandError, match="starting a pipeline run needs the permission pipeline.run_pipeline"):
        pipeline("run", "--as", "nobody")
    assert PipelineRun.objects.count() == 1


def test_queue_hands_it_to_the_workers(faces_env, pipeliner, capsys, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as sent:
        pipeline("run", "--queue", "--phases", "1,6", "--as", "pipeliner")
    run = PipelineRun.objects.get()
    assert capsys.readouterr().out.strip() == f"pipeline run #{run.id} queued: {run.api_url}"
    assert run.phases == [1, 6]
    assert any(callback.__qualname__ == "queue.<locals>.send" for callback in sent)


def test_list_show_and_cancel(faces_env, pipeliner, capsys):
    done = ended_run()
    going = running_run()
    pipeline("list")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"#{going.id} ")
    assert "running" in lines[0]
    assert lines[1].startswith(f"#{done.id} ")
    assert "OPERATIONAL" in lines[1]
    pipeline("show", str(done.id), "--json")
    shown = json.loads(capsys.readouterr().out)
    assert (shown["id"], shown["status"], shown["snapshot"]) == (done.id, "ok", None)
    pipeline("show", str(done.id))
    assert "1 audit" in capsys.readouterr().out
    pipeline("cancel", str(going.id), "--as", "pipeliner")
    assert "cancel asked for by pipeliner" in capsys.readouterr().out
    with pytest.raises(CommandError, match="has already ended") as ended:
        pipeline("cancel", str(done.id), "--as", "pipeliner")
    assert ended.value.returncode == 2
    for bad in ("999999", "x1"):
        with pytest.raises(CommandError) as missing:
            pipeline("show", bad)
        assert missing.value.returncode == 2
