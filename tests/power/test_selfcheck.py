"""The guardrail self-check: every guard refuses through the real perform(), and nothing in the fleet changes."""

import sys

import pytest
from django.conf import settings as django_settings

from apps.fleet.models import MaintenanceWindow, Module
from apps.power import manager
from apps.power.manager import Policy
from apps.power.models import PowerAction, ServiceControl
from apps.power.selfcheck import check_guardrails
from tests.helpers import free_port

ALL_PASS = "5 of 5 guards refused as they must"


def vx11_settings() -> dict:
    return {name: getattr(django_settings, name) for name in dir(django_settings) if name.startswith("VX11_")}


@pytest.fixture
def marked(fleet, tmp_path):
    """`marked(slug)`: the module gets the process backend whose command creates a marker file, returned with the
    control: the file exists only if a backend ever ran (its health URL answers nothing, so a start would run it)."""

    def make(slug: str) -> tuple[ServiceControl, object]:
        marker = tmp_path / f"{slug}.ran"
        Module.objects.filter(slug=slug).update(base_url=f"http://127.0.0.1:{free_port()}")
        argv = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
        control = ServiceControl.objects.create(
            module=fleet[slug], backend=ServiceControl.Backend.PROCESS, command=argv
        )
        return control, marker

    return make


def by_name(result: dict) -> dict:
    return {case["name"]: case for case in result["cases"]}


@pytest.mark.parametrize("allowed, windows", [(True, True), (False, False)])
def test_every_guard_refuses_whatever_the_portal_settings(power_on, controller, marked, allowed, windows):
    power_on.VX11_ALLOW_SERVICE_CONTROL = allowed
    power_on.VX11_MAINTENANCE_WINDOW_ENABLED = windows
    control, marker = marked("switch")
    states = dict(Module.objects.values_list("slug", "state"))
    before = vx11_settings()

    result = check_guardrails(controller)

    assert vx11_settings() == before
    assert (result["ok"], result["target"], result["summary"]) == (True, "switch", ALL_PASS)
    cases = by_name(result)
    assert list(cases) == [
        "control_off",
        "no_window",
        "protected_stop_madre",
        "protected_stop_tentaculo_link",
        "rate_limit",
    ]
    expected = {"control_off": 403, "no_window": 409, "rate_limit": 429} | dict.fromkeys(
        ["protected_stop_madre", "protected_stop_tentaculo_link"], 403
    )
    assert {name: (c["ok"], c["got"]) for name, c in cases.items()} == {
        name: (True, status) for name, status in expected.items()
    }
    assert "service control is disabled" in cases["control_off"]["message"]
    assert "no open maintenance window covers switch" in cases["no_window"]["message"]
    assert "madre cannot be stopped" in cases["protected_stop_madre"]["message"]
    assert "rate limit" in cases["rate_limit"]["message"]
    rows = PowerAction.objects.filter(id__in=[c["action"] for c in result["cases"]])
    assert sorted(rows.values_list("user__username", "result", "applied", "http_status")) == sorted(
        ("controller", "refused", False, status) for status in expected.values()
    )
    assert not marker.exists()
    control.refresh_from_db()
    assert (control.busy_since, control.busy_with, control.pid) == (None, "", None)
    assert not MaintenanceWindow.objects.exists()
    assert dict(Module.objects.values_list("slug", "state")) == states


def test_broken_guard_stops_at_the_held_claim(power_on, controller, marked, monkeypatch):
    control, marker = marked("switch")
    monkeypatch.setattr(manager, "check_windows", lambda modules, policy=None: None)

    result = check_guardrails(controller)

    assert result["ok"] is False
    assert result["summary"] == "4 of 5 guards refused as they must; failed: no_window"
    case = by_name(result)["no_window"]
    assert (case["ok"], case["got"]) == (False, 409)
    assert case["message"].startswith("another action is running on switch (guardrail self-check by the pipeline")
    assert "maintenance window guard let it through" in case["failure"]
    assert "no backend ran" in case["failure"]
    assert not marker.exists()
    control.refresh_from_db()
    assert control.busy_since is None
    # the same broken guard without the self-check's claim: the backend runs, and the marker shows it
    manager.perform(controller, "switch", "start", True, policy=Policy(allow_control=True, windows=True, rate_limit=6))
    assert marker.exists()


@pytest.mark.parametrize(
    "guard, case_name, says",
    [
        ("check_allowed", "control_off", "the service control guard let it through: only the self-check's claim"),
        ("check_rate", "rate_limit", "the rate limit guard let it through: only the self-check's claim"),
        ("check_never_stop", "protected_stop_madre", "expected 403 'cannot be stopped' from the never-stop guard"),
    ],
)
def test_each_broken_guard_is_named(power_on, controller, marked, monkeypatch, guard, case_name, says):
    control, marker = marked("switch")
    monkeypatch.setattr(manager, guard, lambda *args, **kwargs: None)

    result = check_guardrails(controller)

    assert result["ok"] is False
    case = by_name(result)[case_name]
    assert case["ok"] is False
    assert says in case["failure"]
    assert f"failed: {case_name}" in result["summary"]
    assert not marker.exists()
    control.refresh_from_db()
    assert control.busy_since is None


def test_target_in_an_open_window_skips_the_window_case(power_on, controller, marked, window):
    marked("switch")
    marked("spawner")
    window("spawner")
    assert check_guardrails(controller)["target"] == "switch"  # the one no window covers
    window("switch")

    result = check_guardrails(controller)

    assert (result["ok"], result["target"]) == (True, "spawner")
    case = by_name(result)["no_window"]
    assert (case["ok"], case["got"], case["action"]) == (None, None, None)
    assert case["skipped"] == "every controllable module is in an open maintenance window"
    assert result["summary"] == (
        "4 of 4 guards refused as they must; 1 skipped (no_window: every controllable module is in an open "
        "maintenance window)"
    )
    chosen = by_name(check_guardrails(controller, target="switch"))["no_window"]
    assert chosen["skipped"] == "switch is in an open maintenance window"


def test_busy_target_runs_only_the_plans(power_on, controller, marked):
    control, marker = marked("switch")
    assert control.claim("restart by someone")

    result = check_guardrails(controller)

    cases = by_name(result)
    assert [name for name, c in cases.items() if c["ok"]] == ["protected_stop_madre", "protected_stop_tentaculo_link"]
    skipped = [c for c in cases.values() if c["ok"] is None]
    assert len(skipped) == 3
    assert all("switch is busy with another action (restart by someone)" in c["skipped"] for c in skipped)
    assert result["ok"] is True
    control.refresh_from_db()
    assert control.busy_with == "restart by someone"  # a real action's claim is left alone
    assert not marker.exists()


def test_no_controllable_module(power_on, controller, fleet):
    result = check_guardrails(controller)
    assert (result["ok"], result["target"]) == (True, None)
    assert result["summary"].startswith("2 of 2 guards refused as they must; 3 skipped (control_off: no module but")


@pytest.mark.parametrize("target, says", [("madre", "protected modules"), ("hermes", "has none"), ("nope", "has none")])
def test_bad_target_is_a_clear_error(power_on, controller, marked, target, says):
    marked("switch")
    with pytest.raises(ValueError, match=says):
        check_guardrails(controller, target=target)
    assert not PowerAction.objects.exists()
