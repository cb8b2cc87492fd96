"""What a flow may read and who may write one: db steps only on the VX11 domain models (never users,
sessions, API keys, not even through a relation), {{ env.NAME }} only for flow variables (never VX11_TOKEN)
and their values masked wherever a run is stored, and creating/replacing a definition needs the Django
permission, not just a read-write key."""

import json

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from apps.accounts.models import ApiKey
from apps.flows.models import Flow, FlowRun, Step, StepResult

SECRET = "s3cret-plan-77"


def db_flow(query: dict) -> dict:
    return {"name": "D", "steps": [{"name": "peek", "db": {"within": 0, **query}}]}


def stored(run: FlowRun) -> str:
    """Everything a run stored, as the API and the admin would show it."""
    rows = list(StepResult.objects.filter(run=run).values()) + list(FlowRun.objects.filter(id=run.id).values())
    return json.dumps(rows, default=str)


@pytest.mark.parametrize(
    "query, message",
    [
        (
            {"model": "auth.User", "filter": {"is_superuser": True}, "expect": {"password__isnull": False}},
            "model 'auth.User' is not one a flow may read",
        ),
        (
            {"model": "sessions.Session", "filter": {"session_key__isnull": False}},
            "model 'sessions.Session' is not one a flow may read",
        ),
        ({"model": "accounts.ApiKey", "filter": {"id__gt": 0}}, "model 'accounts.ApiKey' is not one a flow may read"),
        (
            {"model": "fleet.NotificationChannel", "filter": {"id__gt": 0}},
            "model 'fleet.NotificationChannel' is not one a flow may read",
        ),
        (
            {"model": "flows.FlowRun", "filter": {"triggered_by__password__startswith": "pbkdf2"}},
            "db.filter: 'triggered_by__password__startswith' reaches auth.User, which a flow may not read",
        ),
        (
            {"model": "daughters.Daughter", "filter": {"id__gt": 0}, "expect": {"task__created_by__username": "admin"}},
            "db.expect: 'task__created_by__username' reaches auth.User",
        ),
    ],
)
def test_a_db_step_on_a_model_flows_may_not_read_is_refused_at_save(editor, fleet, query, message):
    response = editor.post("/api/flows", db_flow(query), content_type="application/json")
    assert response.status_code == 422, response.json()
    assert response.json()["detail"].startswith("flow D: step 1 (peek): "), response.json()
    assert message in response.json()["detail"]
    assert not Flow.objects.filter(name="D").exists()


def test_the_allow_list_is_a_setting_but_credentials_stay_out(fleet, settings):
    settings.VX11_FLOW_DB_MODELS = [*settings.VX11_FLOW_DB_MODELS, "fleet.*", "auth.User", "sessions.*", "accounts.*"]
    assert Flow.save_spec(db_flow({"model": "fleet.NotificationChannel", "filter": {"id__gt": 0}}))
    for label in ("auth.User", "sessions.Session", "accounts.ApiKey", "admin.LogEntry"):
        with pytest.raises(ValidationError, match=f"model '{label}' is not one a flow may read"):
            Flow.save_spec(db_flow({"model": label, "filter": {"pk__gt": 0}}), replace=True)


def test_relations_into_allowed_models_and_key_comparisons_are_fine(fleet):
    flow = Flow.save_spec(
        db_flow(
            {
                "model": "daughters.Daughter",
                "filter": {"task__status": "completed", "task__created_by__isnull": True},
                "expect": {"task_id__gt": 0},
            }
        )
    )
    assert flow.steps.get().db["filter"] == {"task__status": "completed", "task__created_by__isnull": True}


def test_a_db_step_edited_behind_validation_reads_nothing(flows, admin_user):
    """The runner checks again: a step changed straight in the database to read users fails, excerpt empty."""
    flow = Flow.save_spec(db_flow({"model": "fleet.Module", "filter": {"slug": "madre"}}))
    Step.objects.filter(flow=flow).update(
        db={
            "model": "auth.User",
            "filter": {"is_superuser": True},
            "expect": {"password__isnull": False},
            "fail_on": {},
            "within": 0,
            "min_count": 1,
        }
    )
    run = flow.run()
    result = run.steps.get()
    assert result.status == "failed"
    assert result.reason.startswith("model 'auth.User' is not one a flow may read")
    assert "pbkdf2" not in stored(run)
    assert admin_user.password not in stored(run)


def test_excerpts_show_the_allowed_model_fields_only(flows):
    flow = Flow.save_spec(db_flow({"model": "fleet.Module", "filter": {"slug": "madre"}, "expect": {"enabled": True}}))
    excerpt = flow.run().steps.get().response_excerpt
    assert excerpt.startswith("pk=")
    assert "enabled=true" in excerpt
    assert "password" not in excerpt


@pytest.mark.parametrize(
    "where",
    [
        {"path": "/madre/plans/{{ env.VX11_TOKEN }}"},
        {"path": "/x", "body": {"t": "{{ env.VX11_TOKEN }}"}},
        {"path": "/x", "headers": {"X-T": "{{ env.VX11_SECRET }}"}},
    ],
)
def test_env_outside_the_allow_list_is_refused_at_save(editor, fleet, where):
    spec = {"name": "D", "steps": [{"name": "leak", "module": "madre", **where}]}
    response = editor.post("/api/flows", spec, content_type="application/json")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("flow D: step 1 (leak): template {{ env.")
    assert "is not an environment variable a flow may read" in detail


def test_env_names_listed_in_the_setting_are_allowed(fleet, settings):
    settings.VX11_FLOW_ENV_NAMES = ["VX11_MADRE_KEY", "VX11_TOKEN"]
    assert Flow.save_spec(
        {"name": "D", "steps": [{"module": "madre", "path": "/x", "headers": {"X-Key": "{{ env.VX11_MADRE_KEY }}"}}]}
    )
    with pytest.raises(ValidationError, match="VX11_TOKEN is not an environment variable a flow may read"):
        Flow.save_spec(
            {"name": "E", "steps": [{"module": "madre", "path": "/{{ env.VX11_TOKEN }}"}]}
        )  # never, even listed


def test_the_portal_token_is_never_read_at_run_time(flows, monkeypatch):
    monkeypatch.setenv("VX11_TOKEN", "portal-token-123")
    flow = Flow.save_spec({"name": "D", "steps": [{"module": "madre", "path": "/health"}]})
    Step.objects.filter(flow=flow).update(path="/madre/plans/{{ env.VX11_TOKEN }}")
    run = flow.run()
    assert "VX11_TOKEN is not an environment variable a flow may read" in run.steps.get().reason
    assert "portal-token-123" not in stored(run)


def test_env_values_are_masked_in_everything_a_run_stores(flows, api, monkeypatch):
    """The value shows up in the URL, the body, madre's 404 answer, the reason and the run's reason: *** everywhere."""
    monkeypatch.setenv("VX11_FLOW_PLAN_ID", SECRET)
    flow = Flow.save_spec(
        {
            "name": "D",
            "steps": [
                {
                    "name": "intent",
                    "module": "madre",
                    "method": "POST",
                    "path": "/vx11/intent",
                    "body": {"text": "plan {{ env.VX11_FLOW_PLAN_ID }}"},
                },
                {"name": "plan", "module": "madre", "path": "/madre/plans/{{ env.VX11_FLOW_PLAN_ID }}"},
            ],
        }
    )
    run = flow.run()
    assert (run.status, run.failed_step) == ("failed", 2)
    plan = run.steps.get(position=2)
    assert plan.request["url"].endswith("/madre/plans/***")
    assert "plan *** not found" in plan.response_excerpt
    assert "plan *** not found" in plan.reason
    assert "plan *** not found" in run.reason
    assert run.steps.get(position=1).request["body"] == '{"text": "plan ***"}'
    assert SECRET not in stored(run)
    assert SECRET not in api.get(f"/api/flow-runs/{run.id}").content.decode()


def test_writing_a_definition_needs_the_permission(flows, api, editor_user_key, django_user_model):
    """A read-write key is not enough: POST needs flows.add_flow, PUT flows.change_flow (403 with a message)."""
    nobody = Client(headers={"Authorization": f"Bearer {editor_user_key}"})
    spec = {"name": "D", "steps": [{"module": "madre", "path": "/health"}]}
    for client in (nobody, api):  # a plain user's key, and a staff operator's key without the permissions
        created = client.post("/api/flows", spec, content_type="application/json")
        assert created.status_code == 403
        assert "creating a flow needs the permission flows.add_flow" in created.json()["detail"]
        replaced = client.put("/api/flows/A", spec, content_type="application/json")
        assert replaced.status_code == 403
        assert "replacing a flow needs the permission flows.change_flow" in replaced.json()["detail"]
        assert client.get("/api/flows/A").status_code == 200
    assert not Flow.objects.filter(name="D").exists()
    assert Flow.objects.get(name="A").steps.count() == 5

    from django.contrib.auth.models import Permission

    user = django_user_model.objects.get(username="dev")
    user.user_permissions.add(Permission.objects.get(content_type__app_label="flows", codename="add_flow"))
    assert (
        Client(headers={"Authorization": f"Bearer {editor_user_key}"})
        .post("/api/flows", spec, content_type="application/json")
        .status_code
        == 201
    )


@pytest.fixture
def editor_user_key(db, django_user_model):
    user = django_user_model.objects.create_user("dev", password="dev-pass-123")
    return ApiKey.issue(user, "dev rw")[1]
