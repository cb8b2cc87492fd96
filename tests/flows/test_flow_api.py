"""The flows API: list, read, create/replace, run, runs, run detail, coherence; bad input is a 4xx
with a message, never a 500."""

import time

import pytest
from django.test import Client

from apps.flows.models import Flow, FlowRun
from tests.helpers import celery_sends_to

GOOD = {"name": "D", "steps": [{"name": "madre health", "module": "madre", "path": "/health"}]}


def test_list_and_read(api, flows):
    flows["A"].run()
    body = api.get("/api/flows").json()
    assert body["count"] == 3
    assert [f["name"] for f in body["items"]] == ["A", "B", "C"]
    a = body["items"][0]
    assert a["steps"] == 5
    assert a["last_run"]["status"] == "passed"
    assert a["last_run"]["flow"] == "A"
    assert body["items"][1]["last_run"] is None

    detail = api.get("/api/flows/C").json()
    assert detail["definition"]["steps"][0]["path"] == "/hormiguero/scan"
    assert detail["enabled"] is True


def test_run_then_runs_then_run_detail(api, flows, sim):
    sim.set_mode("hermes", "down")
    response = api.post("/api/flows/A/run")
    assert response.status_code == 200
    run = response.json()
    assert (run["status"], run["failed_step"], run["trigger"]) == ("failed", 3, "api")
    assert [s["status"] for s in run["steps"]] == ["passed", "passed", "failed", "skipped", "skipped"]
    assert run["steps"][2]["response_status"] == 502
    assert "unreachable" in run["steps"][2]["response_excerpt"]

    runs = api.get("/api/flows/A/runs").json()
    assert runs["count"] == 1
    assert runs["items"][0]["id"] == run["id"]
    assert api.get("/api/flows/A/runs?status=passed").json()["count"] == 0
    detail = api.get(f"/api/flow-runs/{run['id']}").json()
    assert detail["steps"][2]["reason"] == run["steps"][2]["reason"]
    assert detail["reason"].startswith("step 3")


def test_run_without_waiting_answers_202_with_the_run_to_poll(api, flows, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as sent:  # not executed: no worker here
        response = api.post("/api/flows/B/run?wait=false")
    run = FlowRun.objects.get()
    assert response.status_code == 202
    assert response.json() == {"id": run.id, "flow": "B", "status": "queued", "url": f"/api/flow-runs/{run.id}"}
    assert len(sent) == 1  # handed to a worker after commit
    assert run.steps.count() == 0  # nothing run here
    polled = api.get(response.json()["url"]).json()
    assert (polled["status"], polled["steps"], polled["finished_at"]) == ("queued", [], None)
    assert api.get("/api/flows/B/runs?status=queued").json()["count"] == 1
    assert api.get("/api/flows").json()["items"][1]["last_run"] is None  # unfinished runs are not a result


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_broker_is_a_503_and_a_failed_run(api, flows):
    with celery_sends_to("redis://127.0.0.1:1/0", "nowhere"):
        response = api.post("/api/flows/A/run?wait=false")
    assert response.status_code == 503
    assert "could not be queued: the Celery broker is unreachable" in response.json()["detail"]
    assert response["Retry-After"] == "30"  # a 503 says when to come back
    run = FlowRun.objects.get()
    assert run.status == "failed"
    assert run.finished_at is not None


def poll(api, url: str, seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while (run := api.get(url).json())["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
    return run


@pytest.mark.django_db(transaction=True)
def test_a_queued_run_runs_on_the_worker(api, flows, eager_celery):
    response = api.post("/api/flows/A/run?wait=false")
    assert response.status_code == 202
    run = poll(api, response.json()["url"])
    assert (run["status"], run["trigger"], len(run["steps"])) == ("passed", "api", 5)


@pytest.mark.services
def test_a_queued_run_on_a_real_worker(api, flows, daughter_worker):
    """Queued through Redis to a real Celery worker process; the client polls the run's URL."""
    response = api.post("/api/flows/C/run?wait=false")
    assert response.status_code == 202
    run = poll(api, response.json()["url"])
    assert run["status"] == "passed", f"{run}\n{daughter_worker.output()}"
    assert [s["status"] for s in run["steps"]] == ["passed"] * 5


def test_coherence(api, flows, sim):
    assert api.get("/api/flows/coherence").json()["contract_coherence_pct"] == "NV"
    api.post("/api/flows/A/run")
    sim.set_mode("manifestator", "down")
    api.post("/api/flows/C/run")
    body = api.get("/api/flows/coherence").json()
    assert (body["contract_coherence_pct"], body["passed"], body["total"]) == (50.0, 1, 2)
    assert body["detail"] == {"A": "passed", "C": "failed"}


def test_create_and_replace(editor, fleet):
    response = editor.post("/api/flows", GOOD, content_type="application/json")
    assert response.status_code == 201
    assert response.json()["steps"] == 1
    assert editor.post("/api/flows", GOOD, content_type="application/json").status_code == 409

    longer = {"steps": GOOD["steps"] * 2}
    assert editor.put("/api/flows/D", longer, content_type="application/json").json()["steps"] == 2
    clash = editor.put("/api/flows/D", {**longer, "name": "E"}, content_type="application/json")
    assert clash.status_code == 422
    assert "differs from the URL" in clash.json()["detail"]


@pytest.mark.parametrize(
    "body, message",
    [
        (
            {
                "name": "D",
                "steps": [
                    {"module": "madre", "path": "/h"},
                    {"name": "plan", "module": "madre", "path": "/{{ steps.1.plan_id }}"},
                ],
            },
            "flow D: step 2 (plan): template {{ steps.1.plan_id }}: step 1 captures no 'plan_id'",
        ),
        ({"name": "D", "steps": [{"module": "ghost", "path": "/h"}]}, "flow D: step 1: unknown module 'ghost'"),
        ({"name": "D"}, "flow D: steps must be a list"),
    ],
)
def test_an_invalid_definition_is_a_422_naming_the_step(editor, fleet, body, message):
    response = editor.post("/api/flows", body, content_type="application/json")
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert not Flow.objects.filter(name="D").exists()


@pytest.mark.parametrize(
    "method, url, body, status",
    [
        ("get", "/api/flows/nope", None, 404),
        ("post", "/api/flows/nope/run", None, 404),
        ("get", "/api/flows/nope/runs", None, 404),
        ("get", "/api/flow-runs/999999", None, 404),
        ("get", "/api/flow-runs/abc", None, 422),
        ("get", "/api/flows/A/runs?status=weird", None, 422),
        ("get", "/api/flows?limit=-1", None, 422),
        ("post", "/api/flows", "not json", 400),
        ("post", "/api/flows", [1, 2], 422),
    ],
)
def test_bad_input_is_a_4xx_with_a_detail(api, flows, method, url, body, status):
    kwargs = {"content_type": "application/json", "data": body} if body is not None else {}
    response = getattr(api, method)(url, **kwargs)
    assert response.status_code == status, response.content
    assert response.json()["detail"]


def test_auth(flows, readonly_key):
    assert Client().get("/api/flows").status_code == 401
    viewer = Client(headers={"Authorization": f"Bearer {readonly_key}"})
    assert viewer.get("/api/flows").status_code == 200
    assert viewer.post("/api/flows/A/run").status_code == 403


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            '{"name": "D", "steps": [{"name": "h", "module": "madre", "path": "/health", "timeout": NaN}]}',
            "NaN is not a JSON number",
        ),
        (
            '{"name": "D", "steps": [{"module": "madre", "path": "/h", "body": {"x": Infinity}}]}',
            "Infinity is not a JSON number",
        ),
        (
            '{"name": "D", "steps": [{"db": {"model": "fleet.Module", "filter": {"id": 1}, "within": -Infinity}}]}',
            "-Infinity is not a JSON number",
        ),
    ],
)
def test_a_non_finite_number_is_a_422_naming_the_step(editor, fleet, raw, message):
    """Python's JSON reads NaN and Infinity; the API refuses them with a 422 before any view
    (vx11_site.middleware), never a 500."""
    response = editor.post("/api/flows", raw, content_type="application/json")
    assert response.status_code == 422, response.content
    assert response.json()["detail"].startswith(message), response.content
    assert "in the JSON body at steps[0]." in response.json()["detail"]
    assert not Flow.objects.filter(name="D").exists()
    replaced = editor.put("/api/flows/A", raw.replace('"name": "D", ', ""), content_type="application/json")
    assert replaced.status_code == 422
    assert replaced.json()["detail"].startswith(message)


def test_a_long_flow_is_refused_a_synchronous_run(api, flows, django_capture_on_commit_callbacks):
    """A run that waits may hold a request thread for the flow's longest wait: over VX11_FLOW_SYNC_MAX_SECONDS
    (default 60) it is refused with 409 pointing at ?wait=false, which still queues it."""
    Flow.save_spec(
        {"name": "Slow", "steps": [{"db": {"model": "fleet.Module", "filter": {"slug": "madre"}, "within": 900}}]}
    )
    response = api.post("/api/flows/Slow/run")
    assert response.status_code == 409
    assert response.json()["detail"] == (
        "flow Slow may take up to 900.05 s, over the 60 s a request may wait (VX11_FLOW_SYNC_MAX_SECONDS); "
        "run it with ?wait=false and poll the run's url"
    )
    assert not FlowRun.objects.exists()
    with django_capture_on_commit_callbacks():
        assert api.post("/api/flows/Slow/run?wait=false").status_code == 202


def test_the_canonical_flows_run_synchronously_with_the_default_settings(flows, settings):
    """With the default step timeout (5 s) A, B and C stay under the default bound of 60 s (B: 2 calls, a
    spawn, a 30 s DB wait = 45.2 s), so waiting for them keeps working."""
    from vx11_site import settings as defaults

    settings.VX11_FLOW_HTTP_TIMEOUT, settings.VX11_FLOW_DB_POLL_SECONDS = (
        defaults.VX11_FLOW_HTTP_TIMEOUT,
        defaults.VX11_FLOW_DB_POLL_SECONDS,
    )
    bounds = {name: flow.longest_seconds() for name, flow in flows.items()}
    assert bounds == {"A": 25.0, "B": 45.2, "C": 25.0}
    assert max(bounds.values()) < defaults.VX11_FLOW_SYNC_MAX_SECONDS == 60


def test_the_list_costs_the_same_queries_for_3_flows_or_10(api, flows):
    """Step counts and last runs come from the page's own queries, not two per flow."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def list_queries() -> tuple[int, dict]:
        with CaptureQueriesContext(connection) as queries:
            body = api.get("/api/flows?limit=50").json()
        return len(queries), body

    for flow in flows.values():
        FlowRun.objects.bulk_create(
            [FlowRun(flow=flow, status=s, trigger="api") for s in ("failed", "passed", "running")]
        )
    list_queries()  # the key's first use of the minute also stamps its last_used
    three, _ = list_queries()
    for i in range(7):
        Flow.save_spec({"name": f"F{i}", "steps": [{"module": "madre", "path": "/health"}] * (i + 1)})
    ten, body = list_queries()
    assert ten == three
    assert body["count"] == 10
    by_name = {item["name"]: item for item in body["items"]}
    assert by_name["F6"]["steps"] == 7
    assert by_name["F6"]["last_run"] is None
    assert by_name["A"]["steps"] == flows["A"].steps.count()
    assert by_name["A"]["last_run"]["status"] == "passed"
