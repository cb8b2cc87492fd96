"""The pipeline's API: list and read runs, start one (202 with its URL; 409 with the running one's while another
goes; 422 for bad phases), cancel, a phase's evidence listed and downloaded (only its own files, confined to the
evidence root), and who may do what."""

from pathlib import Path

from django.test import Client

from apps.pipeline import runner
from apps.pipeline.models import PipelineRun
from tests.pipeline.helpers import ended_run, running_run


def post(client, path, body=None):
    return client.post(path, body if body is not None else {}, content_type="application/json")


def test_start_answers_202_with_the_run_and_its_url(faces_env, pipeline_api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as sent:  # not executed: no worker here
        response = post(pipeline_api, "/api/pipeline/runs", {"phases": "1,3,6"})
    assert response.status_code == 202, response.content
    run = PipelineRun.objects.get()
    body = response.json()
    assert (body["id"], body["url"], body["status"], body["trigger"]) == (run.id, run.api_url, "queued", "api")
    assert body["phases_asked"] == [1, 3, 6]
    assert [(p["number"], p["status"]) for p in body["phases"]] == [
        (1, "pending"),
        (2, "skipped"),
        (3, "pending"),
        (4, "skipped"),
        (5, "skipped"),
        (6, "pending"),
        (7, "skipped"),
    ]
    assert any(callback.__qualname__ == "queue.<locals>.send" for callback in sent)  # the chain, after the commit
    assert pipeline_api.get(body["url"]).json()["phases_asked"] == [1, 3, 6]


def test_phases_as_a_list_or_left_out(faces_env, pipeline_api):
    listed = post(pipeline_api, "/api/pipeline/runs", {"phases": [6, 3]})
    assert listed.json()["phases_asked"] == [3, 6]
    runner.cancel(PipelineRun.objects.get(), None)
    every = post(pipeline_api, "/api/pipeline/runs")
    assert every.status_code == 202
    assert every.json()["phases_asked"] == [1, 2, 3, 4, 5, 6, 7]


def test_a_second_start_while_one_goes_is_a_409_with_its_url(faces_env, pipeline_api):
    going = runner.start("beat")
    response = post(pipeline_api, "/api/pipeline/runs", {"phases": "6"})
    assert response.status_code == 409
    assert response.json()["running"] == going.api_url
    assert going.api_url in response.json()["detail"]
    assert PipelineRun.objects.count() == 1


def test_bad_phases_are_a_422_that_says_why(faces_env, pipeline_api):
    for body, words in (
        ({"phases": "1,9"}, "phases must be numbers from 1 to 7"),
        ({"phases": "one"}, "phases must be numbers from 1 to 7 separated by commas"),
        ({"phases": [0]}, "phases must be numbers from 1 to 7"),
        ({"phases": ","}, "phases must be numbers from 1 to 7"),
        ({"phase": "1"}, "phase"),
        ({"phases": {"1": 2}}, "phases"),
    ):
        response = post(pipeline_api, "/api/pipeline/runs", body)
        assert response.status_code == 422, body
        assert words in response.json()["detail"], (body, response.json())
    assert not PipelineRun.objects.exists()


def test_list_filter_and_read(faces_env, pipeline_api):
    done = ended_run()
    going = running_run()
    listing = pipeline_api.get("/api/pipeline/runs").json()
    assert listing["count"] == 2
    assert [run["id"] for run in listing["items"]] == [going.id, done.id]
    assert [run["id"] for run in pipeline_api.get("/api/pipeline/runs?status=ok").json()["items"]] == [done.id]
    assert pipeline_api.get("/api/pipeline/runs?status=nope").status_code == 422
    read = pipeline_api.get(done.api_url).json()
    assert (read["status"], read["exit_code"], read["verdict"]) == ("ok", 0, "OPERATIONAL")
    assert [p["number"] for p in read["phases"]] == [1, 2, 3, 4, 5, 6, 7]
    assert read["phases"][2]["duration_seconds"] == 3.0
    assert read["mirror"] == {"commit": "", "pushed": False}
    assert pipeline_api.get(going.api_url).json()["phases"][1]["status"] == "running"
    missing = pipeline_api.get("/api/pipeline/runs/999999")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no pipeline run with id 999999"


def test_cancel_a_queued_run_then_409(faces_env, pipeline_api):
    run = runner.start("api", phases="6")
    response = post(pipeline_api, f"{run.api_url}/cancel")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"
    assert response.json()["cancel_requested"] == "pipeliner"
    assert response.json()["phases"][5]["status"] == "skipped"
    again = post(pipeline_api, f"{run.api_url}/cancel")
    assert again.status_code == 409
    assert again.json()["detail"] == f"run #{run.id} has already ended (cancelled)"
    assert post(pipeline_api, "/api/pipeline/runs/999999/cancel").status_code == 404


def test_cancel_a_running_run_asks_it_to_stop(faces_env, pipeline_api):
    run = running_run()
    response = post(pipeline_api, f"{run.api_url}/cancel")
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", "pipeliner")
    assert runner.run_phase(run.id, 3) is None  # the next phase the worker takes ends the run instead
    run.refresh_from_db()
    assert run.status == "cancelled"


def test_evidence_listed_and_downloaded(faces_env, pipeline_api):
    run = ended_run()
    listing = pipeline_api.get(f"{run.api_url}/phases/1/evidence")
    assert listing.status_code == 200
    files = {f["name"]: f for f in listing.json()}
    assert set(files) == {"audit.json", "audit_bag/notes.txt"}
    notes = files["audit_bag/notes.txt"]
    assert notes["bytes"] == 4
    assert notes["path"] == f"pipeline/{run.id}/phase_1_audit/audit_bag/notes.txt"
    assert notes["url"] == f"{run.api_url}/phases/1/evidence/audit_bag/notes.txt"
    download = pipeline_api.get(notes["url"])
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b"two\n"
    assert download["Content-Type"] == "application/octet-stream"
    assert download["Content-Disposition"] == 'attachment; filename="notes.txt"'
    assert pipeline_api.get(f"{run.api_url}/phases/2/evidence").json() == []


def test_only_the_phases_own_files_inside_the_root(faces_env, pipeline_api, tmp_path):
    run = ended_run()
    base = f"{run.api_url}/phases/1/evidence"
    # a file in the phase's folder that the phase does not list, a path out of it, and the root's neighbour
    (Path(faces_env) / f"pipeline/{run.id}/phase_1_audit/unlisted.txt").write_text("x")
    (tmp_path / "secret.txt").write_text("not evidence")
    for name in ("unlisted.txt", "../../../secret.txt", "..%2F..%2F..%2Fsecret.txt", "audit_bag/../audit.json"):
        response = pipeline_api.get(f"{base}/{name}")
        assert response.status_code == 404, name
        assert "has no evidence file" in response.json()["detail"]
    # a listed path that leads out of the evidence root is neither sized nor served
    phase = run.phase_runs.get(number=1)
    phase.evidence = [*phase.evidence, "../secret.txt"]
    phase.save()
    outside = next(f for f in pipeline_api.get(base).json() if f["name"] == "secret.txt")
    assert outside["bytes"] is None
    refused = pipeline_api.get(outside["url"])
    assert refused.status_code == 404
    assert refused.json()["detail"] == "evidence file '../secret.txt' is gone (rotated or deleted)"
    (Path(faces_env) / phase.evidence[0]).unlink()
    assert pipeline_api.get(f"{base}/audit.json").status_code == 404
    assert pipeline_api.get(f"{run.api_url}/phases/8/evidence").status_code == 422
    assert pipeline_api.get("/api/pipeline/runs/999999/phases/1/evidence").status_code == 404


def test_reading_is_for_any_key_writing_needs_the_permission(faces_env, readonly_key, plain_key):
    run = ended_run()
    for key, words in (
        (readonly_key, "is read-only"),
        (plain_key, "starting a pipeline run needs the permission pipeline.run_pipeline; user 'plain'"),
    ):
        client = Client(headers={"Authorization": f"Bearer {key}"})
        refused = post(client, "/api/pipeline/runs", {"phases": "6"})
        assert refused.status_code == 403
        assert words in refused.json()["detail"]
        assert post(client, f"{run.api_url}/cancel").status_code == 403
        assert client.get("/api/pipeline/runs").status_code == 200
        assert client.get(f"{run.api_url}/phases/1/evidence").status_code == 200
    plain = Client(headers={"Authorization": f"Bearer {plain_key}"})
    queued = runner.start("beat")
    assert post(plain, f"{queued.api_url}/cancel").json()["detail"] == (
        "cancelling a pipeline run needs the permission pipeline.run_pipeline; user 'plain' does not have it"
    )
    assert PipelineRun.objects.get(pk=queued.pk).status == "queued"
    anonymous = Client()
    assert anonymous.get("/api/pipeline/runs").status_code == 401
    assert post(anonymous, "/api/pipeline/runs").status_code == 401
    assert anonymous.get(f"{run.api_url}/phases/1/evidence/audit.json").status_code == 401
