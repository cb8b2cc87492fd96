"""Modes: low_power, operative_core and full, planned and applied on demo modules running as real processes."""

import httpx

from apps.power.models import PowerAction


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def mode(client, name, apply=False):
    return client.post("/madre/power/mode", {"mode": name, "apply": apply}, content_type="application/json")


def test_plans(power_on, power_api, demo_process):
    for slug in ("madre", "switch", "hermes"):
        demo_process(slug)
    plans = {
        name: {s["service"]: s["action"] for s in mode(power_api, name).json()["plan"]["steps"]}
        for name in ("low_power", "operative_core", "full")
    }
    assert plans == {
        "low_power": {"madre": "start", "switch": "stop", "hermes": "stop"},
        "operative_core": {"madre": "start", "switch": "start", "hermes": "stop"},
        "full": {"madre": "start", "switch": "start", "hermes": "start"},
    }
    assert PowerAction.objects.filter(action="mode", applied=False).count() == 3
    assert not any(answers(c.module.health_url) for c in [demo_process("spawner")])  # plans run nothing


def test_apply_each_mode(power_on, power_api, demo_process, window):
    controls = {slug: demo_process(slug, grace=1.0) for slug in ("madre", "switch", "hermes")}
    window("madre", "switch", "hermes")
    url = {slug: c.module.health_url for slug, c in controls.items()}

    r = mode(power_api, "full", apply=True)
    assert r.status_code == 200, r.content
    assert [(s["service"], s["action"], s["result"]) for s in r.json()["steps"]] == [
        ("hermes", "start", "ok"),
        ("madre", "start", "ok"),
        ("switch", "start", "ok"),
    ]  # by slug
    assert all(answers(u) for u in url.values())

    r = mode(power_api, "operative_core", apply=True)
    assert r.status_code == 200, r.content
    assert answers(url["madre"])
    assert answers(url["switch"])
    assert not answers(url["hermes"])

    r = mode(power_api, "low_power", apply=True)
    assert r.status_code == 200, r.content
    assert answers(url["madre"])
    assert not answers(url["switch"])
    assert not answers(url["hermes"])

    # each step is its own audited row under its mode row
    top = PowerAction.objects.filter(action="mode").order_by("id")
    assert [(m.service, m.result, m.steps.count()) for m in top] == [
        ("full", "ok", 3),
        ("operative_core", "ok", 3),
        ("low_power", "ok", 3),
    ]
    assert PowerAction.objects.filter(parent__isnull=False, applied=True).count() == 9


def test_apply_needs_windows_for_every_step(power_on, power_api, demo_process, window):
    for slug in ("madre", "switch", "hermes"):
        demo_process(slug)
    window("madre")
    r = mode(power_api, "low_power", apply=True)
    assert r.status_code == 409
    assert "switch" in r.json()["detail"]
    assert "hermes" in r.json()["detail"]
    assert PowerAction.objects.filter(parent__isnull=False).count() == 0  # nothing ran


def test_mode_and_window_events(power_on, power_api, demo_process):
    from apps.events.models import Event

    demo_process("hermes")
    power_api.post("/madre/power/window/open", {"services": ["hermes"], "ttl_sec": 60}, content_type="application/json")
    assert mode(power_api, "low_power", apply=True).status_code == 200
    data = [e.data for e in Event.objects.filter(type="status_changed").order_by("id")]
    assert [(d["power_action"], d.get("module"), d.get("mode"), d.get("services")) for d in data] == [
        ("start", "hermes", None, None),  # the window starts hermes (not running): a step, announced as it ends
        ("window_open", None, None, ["hermes"]),
        ("stop", "hermes", None, None),
        ("mode", None, "low_power", None),
    ]
