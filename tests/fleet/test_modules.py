"""Module CRUD, history, state changes, probe now and the overview, including bad input."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.fleet.models import HealthCheck, Module, Rollup, StateChange

pytestmark = pytest.mark.django_db
NEW = {"slug": "edge-cache", "name": "Edge cache", "base_url": "http://127.0.0.1:9100", "timeout": 1.5}


def post(api, path, body=None):
    return api.post(path, body, content_type="application/json")


def patch(api, path, body):
    return api.patch(path, body, content_type="application/json")


def test_list_has_the_ten_reference_modules_with_state_fields(api):
    r = api.get("/api/modules")
    assert r.status_code == 200
    assert r.json()["count"] == 10
    rows = {m["slug"]: m for m in r.json()["items"]}
    assert set(rows) == {
        "tentaculo_link",
        "madre",
        "switch",
        "hermes",
        "hormiguero",
        "manifestator",
        "mcp",
        "shub",
        "spawner",
        "operator",
    }
    assert rows["manifestator"]["accepted_statuses"] == ["healthy"]
    assert rows["madre"]["core"]
    assert not rows["hermes"]["core"]
    assert rows["operator"]["port"] == 8011
    assert {"state", "last_latency_ms", "uptime_24h", "uptime_30d"} <= set(rows["madre"])


def test_list_filters(api):
    Module.objects.filter(slug="hermes").update(state="down")
    assert [m["slug"] for m in api.get("/api/modules?state=down").json()["items"]] == ["hermes"]
    assert api.get("/api/modules?core=true").json()["count"] == 5
    assert api.get("/api/modules?state=sideways").status_code == 422


def test_list_is_paged(api):
    page = api.get("/api/modules?limit=3&offset=3").json()
    assert page["count"] == 10
    assert [m["port"] for m in page["items"]] == [8003, 8004, 8005]
    assert api.get("/api/modules?limit=5000").status_code == 422


def test_create_read_update_delete(api):
    r = post(api, "/api/modules", NEW)
    assert r.status_code == 201, r.content
    body = r.json()
    assert (body["port"], body["timeout"], body["state"], body["accepted_statuses"]) == (9100, 1.5, "unknown", ["ok"])
    assert api.get("/api/modules/edge-cache").json()["name"] == "Edge cache"

    r = patch(api, "/api/modules/edge-cache", {"base_url": "http://127.0.0.1:9200", "degraded_latency_ms": 250})
    assert r.status_code == 200
    assert (r.json()["port"], r.json()["degraded_latency_ms"]) == (9200, 250)

    assert api.delete("/api/modules/edge-cache").status_code == 204
    assert api.get("/api/modules/edge-cache").status_code == 404


@pytest.mark.parametrize(
    "body, needle",
    [
        ({**NEW, "base_url": "not a url"}, "base_url"),
        ({**NEW, "base_url": "ftp://127.0.0.1/x"}, "base_url"),
        ({**NEW, "timeout": -1}, "timeout"),
        ({**NEW, "timeout": 0}, "timeout"),
        ({**NEW, "colour": "blue"}, "colour"),
        ({**NEW, "slug": "Bad Slug!"}, "slug"),
        ({**NEW, "accepted_statuses": []}, "accepted_statuses"),
        ({**NEW, "down_after": 0}, "down_after"),
        ({k: v for k, v in NEW.items() if k != "name"}, "name"),
    ],
)
def test_create_refuses_bad_input_with_a_clear_message(api, body, needle):
    r = post(api, "/api/modules", body)
    assert r.status_code == 422, r.content
    assert needle in r.json()["detail"]
    assert not Module.objects.filter(slug=body.get("slug", "")).exists()


def test_create_refuses_duplicate_slug_and_broken_json(api):
    assert post(api, "/api/modules", {**NEW, "slug": "madre"}).status_code == 409
    r = api.post("/api/modules", "{not json", content_type="application/json")
    assert 400 <= r.status_code < 500
    assert Module.objects.count() == 10


def test_update_refuses_bad_input_and_keeps_what_is_stored(api):
    before = Module.objects.get(slug="madre")
    for body, needle in [
        ({"timeout": -3}, "timeout"),
        ({"slug": "x"}, "slug"),
        ({"base_url": "madre"}, "base_url"),
        ({"name": None}, "name"),
        ({"accepted_statuses": ["ok", ""]}, "accepted_statuses"),
    ]:
        r = patch(api, "/api/modules/madre", body)
        assert r.status_code == 422, (body, r.content)
        assert needle in r.json()["detail"]
    after = Module.objects.get(slug="madre")
    assert (after.timeout, after.base_url, after.name) == (before.timeout, before.base_url, before.name)


def test_unknown_slug_is_404_everywhere(api):
    for method, path in [
        ("get", "/api/modules/nope"),
        ("delete", "/api/modules/nope"),
        ("get", "/api/modules/nope/history"),
        ("get", "/api/modules/nope/changes"),
        ("post", "/api/modules/nope/probe"),
    ]:
        assert getattr(api, method)(path).status_code == 404, path
    assert patch(api, "/api/modules/nope", {"name": "x"}).status_code == 404


def test_history_raw_and_rolled_up_paged(api):
    m = Module.objects.get(slug="madre")
    now = timezone.now().replace(microsecond=0)
    HealthCheck.objects.bulk_create(
        [
            HealthCheck(
                module=m, checked_at=now - timedelta(seconds=15 * i), outcome="ok", status_code=200, latency_ms=float(i)
            )
            for i in range(30)
        ]
    )
    Rollup.objects.bulk_create(
        [
            Rollup(
                module=m,
                period="hour",
                bucket_start=now.replace(minute=0, second=0) - timedelta(hours=h),
                count=240,
                failures=h,
                latency_samples=240,
                latency_avg=5.0,
            )
            for h in range(5)
        ]
    )

    r = api.get("/api/modules/madre/history?limit=10&offset=5").json()
    assert r["count"] == 30
    assert len(r["items"]) == 10
    assert r["items"][0]["latency_ms"] == 5.0  # newest first
    assert r["items"][0]["outcome"] == "ok"

    r = api.get("/api/modules/madre/history?resolution=hour").json()
    assert r["count"] == 5
    assert [i["failures"] for i in r["items"]] == [0, 1, 2, 3, 4]
    assert r["items"][1]["uptime"] == pytest.approx(100 * 239 / 240)

    since = (now - timedelta(seconds=15 * 9, milliseconds=1)).isoformat()
    r = api.get("/api/modules/madre/history", {"since": since}).json()
    assert r["count"] == 10
    assert api.get("/api/modules/madre/history?resolution=week").status_code == 422
    assert api.get("/api/modules/madre/history?limit=-1").status_code == 422
    assert api.get("/api/modules/madre/history?since=yesterday").status_code == 422


def test_state_changes_paged(api):
    m = Module.objects.get(slug="madre")
    now = timezone.now()
    StateChange.objects.bulk_create(
        [
            StateChange(module=m, at=now - timedelta(minutes=i), from_state="up", to_state="down", reason=f"r{i}")
            for i in range(3)
        ]
    )
    r = api.get("/api/modules/madre/changes").json()
    assert r["count"] == 3
    assert [c["reason"] for c in r["items"]] == ["r0", "r1", "r2"]


def test_probe_now_one_module_and_the_fleet(api, fleet, sim):
    sim.set_mode("hermes", "error")
    r = post(api, "/api/modules/madre/probe")
    assert r.status_code == 200
    assert (r.json()["slug"], r.json()["state"], r.json()["status"]) == ("madre", "up", "ok")

    r = post(api, "/api/probe")
    rows = {row["slug"]: row for row in r.json()}
    assert len(rows) == 10
    assert rows["hermes"]["state"] == "down"
    assert rows["hermes"]["status_code"] == 500
    assert rows["manifestator"]["state"] == "up"


def test_overview(api, fleet, sim):
    sim.set_mode("switch", "down")
    post(api, "/api/probe")
    r = api.get("/api/overview").json()
    assert r["summary"]["total"] == 10
    assert r["summary"]["down"] == 1
    assert r["summary"]["core_down"] == ["switch"]
    assert r["summary"]["up"] + r["summary"]["degraded"] == 9
    assert len(r["modules"]) == 10
    assert {m["slug"]: m["state"] for m in r["modules"]}["switch"] == "down"
    assert [(p["slug"], p["core"], p["last_error"]) for p in r["problems"]] == [("switch", True, "connection refused")]


def test_openapi_docs_are_served(api):
    schema = api.get("/api/openapi.json").json()
    assert "/api/modules/{slug}/history" in schema["paths"]
    assert api.get("/api/docs").status_code == 200
