"""The pipeline in the admin: the runs' list with "Start a run", a run's page with its seven phases as a timeline
(live while it goes, with no inline script), the start form, the busy message that names the running run, and
"Cancel"."""

import re

from django.test import Client
from django.urls import reverse

from apps.pipeline import runner
from apps.pipeline.models import PipelineRun
from tests.pipeline.helpers import ended_run, running_run

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>|\son[a-z]+=")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_list_and_an_ended_runs_timeline(faces_env, superuser_client):
    run = ended_run()
    listing = superuser_client.get(reverse("admin:pipeline_pipelinerun_changelist"))
    assert listing.status_code == 200
    html = listing.content.decode()
    assert 'data-action="start-pipeline"' in html
    assert f'data-pipeline-run="{run.id}"' in html
    assert "OPERATIONAL" in html
    assert 'id="vx11-pipeline-chart"' in html  # the runs' wall time, to compare over time
    assert "wall time of the latest 1 pipeline runs" in html
    page = superuser_client.get(reverse("admin:pipeline_pipelinerun_change", args=[run.id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('class="vx11-phase"') == 7
    assert re.findall(r'<tr class="vx11-phase" data-phase="(\d)"', html) == list("1234567")
    assert "phase 3 went fine" in html
    assert "7.0 s" in html
    assert "width:100.0%" in html
    assert "width:14.3%" in html  # phase 1 took 1 of 7 s
    assert f'href="{run.api_url}/phases/1/evidence/audit_bag/notes.txt"' in html
    assert "vx11/pipeline.js" not in html  # nothing to follow: it ended
    assert "vx11-pipeline-data" not in html
    assert 'data-action="cancel-pipeline"' not in html
    assert not INLINE_SCRIPT.search(html)


def test_a_running_runs_page_follows_the_events_without_inline_script(faces_env, superuser_client):
    run = running_run()
    html = superuser_client.get(reverse("admin:pipeline_pipelinerun_change", args=[run.id])).content.decode()
    assert "vx11/live.js" in html
    assert "vx11/pipeline.js" in html
    data = re.search(r'<script id="vx11-pipeline-data" type="application/json">(.*?)</script>', html).group(1)
    assert f'"run": {run.id}' in data
    assert f'"api": "{run.api_url}"' in data
    assert '"1": "phase_1_audit"' in data
    assert 'data-action="cancel-pipeline"' in html
    assert "0% " in html  # the running phase's progress
    assert not INLINE_SCRIPT.search(html)
    assert superuser_client.get("/static/vx11/pipeline.js").status_code == 200


def test_start_form_start_and_the_busy_message(faces_env, superuser_client, django_capture_on_commit_callbacks):
    start = reverse("admin:pipeline_pipelinerun_start")
    form = superuser_client.get(start)
    assert form.status_code == 200
    assert form.content.decode().count('name="phases"') == 7
    with django_capture_on_commit_callbacks():
        started = superuser_client.post(start, {"phases": ["6", "3"]})
    run = PipelineRun.objects.get()
    assert started.status_code == 302
    assert started["Location"] == reverse("admin:pipeline_pipelinerun_change", args=[run.id])
    assert (run.trigger, run.actor, run.phases) == ("admin", "admin", [3, 6])
    busy = superuser_client.post(start, {}, follow=True)
    html = busy.content.decode()
    link = reverse("admin:pipeline_pipelinerun_change", args=[run.id])
    assert f'Not started: <a href="{link}">run #{run.id}</a> is queued; one pipeline run at a time.' in html
    assert PipelineRun.objects.count() == 1
    assert f">#{run.id}</a> is queued: a new run is refused" in superuser_client.get(start).content.decode()


def test_cancel_from_the_runs_page(faces_env, superuser_client):
    run = running_run()
    cancel = reverse("admin:pipeline_pipelinerun_cancel", args=[run.id])
    assert superuser_client.get(cancel).status_code == 405
    answer = superuser_client.post(cancel, follow=True)
    assert f"Pipeline run #{run.id}: cancel asked for (running)" in answer.content.decode()
    run.refresh_from_db()
    assert run.cancel_requested == "admin"
    assert run.status == "running"  # the phase going on finishes; the worker ends the run at the next boundary
    runner.finish_run(run.id)
    again = superuser_client.post(cancel, follow=True).content.decode()
    assert f"Not cancelled: run #{run.id} has already ended (cancelled)" in again


def test_without_the_permission_no_button_and_a_403(faces_env, django_user_model, grant):
    viewer = grant(django_user_model.objects.create_user("viewer2", is_staff=True), "pipeline.view_pipelinerun")
    client = logged_in(viewer)
    run = running_run()
    assert (
        'data-action="start-pipeline"'
        not in client.get(reverse("admin:pipeline_pipelinerun_changelist")).content.decode()
    )
    page = client.get(reverse("admin:pipeline_pipelinerun_change", args=[run.id])).content.decode()
    assert 'data-action="cancel-pipeline"' not in page
    assert client.post(reverse("admin:pipeline_pipelinerun_start")).status_code == 403
    assert client.post(reverse("admin:pipeline_pipelinerun_cancel", args=[run.id])).status_code == 403
    run.refresh_from_db()
    assert (run.cancel_requested, PipelineRun.objects.count()) == ("", 1)
