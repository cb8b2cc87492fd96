"""The flows admin: the list with last result and history strip, inline steps validated on save
(the message names the bad step), the Run now button and the run page with its steps."""

import pytest
from django.test import Client
from django.urls import reverse

from apps.flows.models import Flow, FlowRun


@pytest.fixture
def staff(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def inline_data(steps: list[dict], initial: int = 0, flow_fields=None) -> dict:
    data = {
        "name": "D",
        "title": "drill",
        "description": "",
        "enabled": "on",
        **(flow_fields or {}),
        "steps-TOTAL_FORMS": str(len(steps)),
        "steps-INITIAL_FORMS": str(initial),
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
    }
    for i, step in enumerate(steps):
        row = {
            "position": str(i + 1),
            "name": "",
            "kind": "http",
            "module": "",
            "method": "GET",
            "path": "",
            "headers": "{}",
            "body": "null",
            "timeout": "",
            "expect_status": "200",
            "max_latency_ms": "",
            "checks": "[]",
            "capture": "{}",
            "db": "{}",
            "spawn": "{}",
            **step,
        }
        data.update({f"steps-{i}-{key}": value for key, value in row.items()})
    return data


def test_changelist_shows_last_result_and_history_strip(staff, flows, sim):
    flows["A"].run()
    sim.set_mode("hermes", "down")
    flows["A"].run()
    page = staff.get(reverse("admin:flows_flow_changelist")).content.decode()
    assert 'data-status="failed"' in page
    assert "never run" in page
    assert page.count('title="#') == 2  # two squares in A's strip, each linking to its run
    assert reverse("admin:flows_flowrun_change", args=[FlowRun.objects.first().id]) in page


def test_add_a_flow_with_inline_steps(staff, fleet):
    assert 'name="steps-TOTAL_FORMS"' in staff.get(reverse("admin:flows_flow_add")).content.decode()
    data = inline_data(
        [
            {
                "name": "health",
                "module": "madre",
                "path": "/health",
                "checks": '[{"path": "$.status", "equals": "ok"}]',
                "capture": '{"v": "$.version"}',
            },
            {"name": "plans", "module": "madre", "path": "/madre/plans", "headers": '{"X-V": "{{ steps.1.v }}"}'},
        ]
    )
    response = staff.post(reverse("admin:flows_flow_add"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    flow = Flow.objects.get(name="D")
    assert [s.name for s in flow.steps.all()] == ["health", "plans"]
    assert flow.steps.get(position=1).checks == [
        {"path": "$.status", "op": "equals", "value": "ok"}
    ]  # stored normalised


@pytest.mark.parametrize(
    "step2, message",
    [
        (
            {"name": "plans", "module": "madre", "path": "/madre/{{ steps.1.plan_id }}"},
            "flow D: step 2 (plans): template {{ steps.1.plan_id }}: step 1 captures no",
        ),
        ({"name": "ghost", "module": "ghost", "path": "/x"}, "flow D: step 2 (ghost): unknown module"),
        ({"name": "db", "kind": "db", "db": '{"model": "fleet.Module"}'}, "flow D: step 2 (db): db.filter is required"),
        (
            {"name": "check", "module": "madre", "path": "/x", "checks": '[{"path": "$.a", "near": 1}]'},
            "flow D: step 2 (check): expect.json[0] needs exactly one of",
        ),
    ],
)
def test_an_invalid_step_is_refused_at_save_naming_it(staff, fleet, step2, message):
    data = inline_data(
        [{"name": "health", "module": "madre", "path": "/health", "capture": '{"v": "$.version"}'}, step2]
    )
    response = staff.post(reverse("admin:flows_flow_add"), data)
    assert response.status_code == 200
    assert message in response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')
    assert not Flow.objects.filter(name="D").exists()


def test_positions_must_run_one_to_n(staff, fleet):
    data = inline_data([{"module": "madre", "path": "/health"}, {"module": "madre", "path": "/health"}])
    data["steps-1-position"] = "5"
    response = staff.post(reverse("admin:flows_flow_add"), data)
    assert "steps must be numbered 1 to 2 without gaps or repeats (got 1, 5)" in response.content.decode()


def test_run_now_queues_a_run_and_shows_its_page(staff, flows, django_capture_on_commit_callbacks):
    """The button answers at once: the run is stored as queued and handed to a worker after commit."""
    change = staff.get(reverse("admin:flows_flow_change", args=[flows["A"].id])).content.decode()
    assert 'data-action="run-flow"' in change
    assert "Never run" in change
    assert "flows: run flow A</a>: every 300 seconds" in change  # the beat entry, editable in the admin

    assert staff.get(reverse("admin:flows_flow_run", args=[flows["A"].id])).status_code == 405
    with django_capture_on_commit_callbacks() as sent:  # not executed: no worker here
        response = staff.post(reverse("admin:flows_flow_run", args=[flows["A"].id]), follow=True)
    run = FlowRun.objects.get()
    assert len(sent) == 1
    assert (run.status, run.trigger, run.triggered_by.username) == ("queued", "admin", "admin")
    run_page = reverse("admin:flows_flowrun_change", args=[run.id])
    assert response.redirect_chain[-1][0] == run_page
    page = response.content.decode()
    assert f'Flow A queued as run <a href="{run_page}">A #{run.id}</a>' in page
    assert 'data-vx11="run-unfinished"' in page  # it reloads until the run ends
    assert "No step results." in page


@pytest.mark.django_db(transaction=True)
def test_a_run_queued_from_the_admin_runs_on_a_worker(staff, flows, eager_celery, sim):
    sim.set_mode("madre", "garbage")
    response = staff.post(reverse("admin:flows_flow_run", args=[flows["A"].id]), follow=True)
    run = FlowRun.objects.get()
    assert (run.status, run.failed_step, run.trigger) == ("failed", 4, "admin")
    page = response.content.decode()
    assert page.count('class="vx11-step"') == 5
    assert "simulated garbage" in page
    assert "response is not JSON" in page
    assert 'data-vx11="run-unfinished"' not in page


@pytest.mark.django_db(transaction=True)
def test_run_action_from_the_list(staff, flows, eager_celery):
    response = staff.post(
        reverse("admin:flows_flow_changelist"),
        {"action": "run_now", "_selected_action": [flows["A"].id, flows["C"].id]},
        follow=True,
    )
    runs = {r.flow.name: r for r in FlowRun.objects.select_related("flow")}
    assert (
        f'Queued 2 run(s): <a href="{reverse("admin:flows_flowrun_change", args=[runs["A"].id])}">A #{runs["A"].id}</a>'
        in response.content.decode()
    )
    assert {r.status for r in runs.values()} == {"passed"}


def test_run_durations_and_coherence_are_charted(staff, flows, sim):
    flows["A"].run()
    flows["A"].run()
    page = staff.get(reverse("admin:flows_flow_change", args=[flows["A"].pk])).content.decode()
    assert 'aria-label="duration of flow A\'s latest runs"' in page
    assert "<polyline" in page
    coherence = staff.get(reverse("admin:flows_contractcoherence_changelist")).content.decode()
    assert 'aria-label="contract coherence over time"' in coherence
    never_run = staff.get(reverse("admin:flows_flow_change", args=[flows["C"].pk])).content.decode()
    assert "duration of flow C" not in never_run  # no chart without runs


def test_the_list_costs_the_same_queries_for_3_flows_or_10(staff, flows):
    """Last result, last run time, history strip and step count come from two queries for the whole page."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.flows.models import FlowRun

    def list_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            page = staff.get(reverse("admin:flows_flow_changelist"))
        assert page.status_code == 200
        return len(queries)

    def add_runs(flow):
        FlowRun.objects.bulk_create(
            [FlowRun(flow=flow, status=status, trigger="api") for status in ("passed", "failed", "running")]
        )

    for flow in flows.values():
        add_runs(flow)
    three = list_queries()
    for i in range(7):
        add_runs(Flow.save_spec({"name": f"F{i}", "steps": [{"module": "madre", "path": "/health"}] * (i + 1)}))
    page = staff.get(reverse("admin:flows_flow_changelist")).content.decode()
    # each flow: 2 finished runs, the last failed
    assert page.count('title="#') == 20
    assert page.count('data-status="failed"') == 10
    assert list_queries() == three


def upload(name: str, text: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, text.encode(), content_type="application/yaml")


def test_load_from_file_download_edit_and_load_again(staff, flows):
    changelist = staff.get(reverse("admin:flows_flow_changelist")).content.decode()
    assert reverse("admin:flows_flow_load") in changelist
    page = staff.get(reverse("admin:flows_flow_change", args=[flows["C"].pk])).content.decode()
    assert reverse("admin:flows_flow_definition", args=[flows["C"].pk]) in page
    assert staff.get(reverse("admin:flows_flow_definition", args=[999999])).status_code == 404
    exported = staff.get(reverse("admin:flows_flow_definition", args=[flows["C"].pk]))
    assert exported["Content-Disposition"] == 'attachment; filename="flow_C.yaml"'
    text = exported.content.decode()
    as_d = text.replace("name: C\n", "name: D\n", 1)
    response = staff.post(reverse("admin:flows_flow_load"), {"file": upload("d.yaml", as_d)})
    d = Flow.objects.get(name="D")
    assert response.status_code == 302
    assert response.url == reverse("admin:flows_flow_change", args=[d.pk])
    assert d.to_spec()["steps"] == flows["C"].to_spec()["steps"]
    # the same name again: refused unless replace is asked for
    again = staff.post(
        reverse("admin:flows_flow_load"), {"file": upload("d.yaml", as_d.replace("enabled: true", "enabled: false"))}
    )
    assert again.status_code == 200
    assert "flow D already exists" in again.content.decode()
    assert Flow.objects.get(name="D").enabled
    replaced = staff.post(
        reverse("admin:flows_flow_load"),
        {"file": upload("d.yaml", as_d.replace("enabled: true", "enabled: false")), "replace": "on"},
    )
    assert replaced.status_code == 302
    assert not Flow.objects.get(name="D").enabled


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: E\nsteps:\n  - module: madre\n    path: /health\n  - module: nowhere\n    path: /health\n", "step 2"),
        ("name: E\nsteps: [unclosed\n", "is not valid YAML/JSON"),
        ('{"name": "E", "steps": []}', "steps"),
    ],
)
def test_load_from_file_refuses_a_bad_file_storing_nothing(staff, flows, text, message):
    response = staff.post(reverse("admin:flows_flow_load"), {"file": upload("e.yaml", text)})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Flow.objects.filter(name="E").exists()


def test_load_from_file_needs_the_permissions(flows, django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("viewer2", password="x-pass-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(content_type__app_label="flows", codename="view_flow"))
    client = Client()
    client.force_login(user)
    assert client.get(reverse("admin:flows_flow_load")).status_code == 403
    user.user_permissions.add(Permission.objects.get(content_type__app_label="flows", codename="add_flow"))
    text = flows["A"].to_yaml()
    response = client.post(reverse("admin:flows_flow_load"), {"file": upload("a.yaml", text), "replace": "on"})
    assert response.status_code == 200
    assert "needs the permission flows.change_flow" in response.content.decode()
