"""The admin shows power actions, service controls and open windows; the action log is pruned with its evidence folders;
the process backend's module logs stay bounded."""

import os
import sys
from datetime import timedelta

from django.test import Client
from django.utils import timezone

from apps.evidence.bags import write_bag
from apps.evidence.models import Evidence
from apps.fleet.models import MaintenanceWindow
from apps.power import backends
from apps.power.evidence import evidence_name
from apps.power.models import PowerAction, ServiceControl
from apps.power.tasks import prune_power_actions


def test_admin_pages(power_on, admin_user, fleet, window):
    ServiceControl.objects.create(module=fleet["switch"], backend="systemd", systemd_unit="vx11-switch.service")
    w = window("switch", "hermes")
    PowerAction.objects.create(
        actor="admin", service="switch", action="start", result="refused", http_status=409, message="no window"
    )
    client = Client()
    client.force_login(admin_user)
    page = client.get("/admin/fleet/module/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-window="{w.id}"' in html
    assert "maintenance window" in html
    assert client.get("/admin/power/poweraction/?result=refused").status_code == 200
    assert client.get("/admin/power/servicecontrol/").status_code == 200
    assert client.get("/admin/power/windowstop/").status_code == 200
    assert "systemctl start vx11-switch.service" in client.get("/admin/power/servicecontrol/").content.decode()
    assert client.get(f"/admin/fleet/maintenancewindow/{w.id}/change/").status_code == 200
    # closed windows leave the fleet page
    MaintenanceWindow.objects.filter(pk=w.pk).update(closed_at=timezone.now())
    assert f'data-window="{w.id}"' not in client.get("/admin/fleet/module/").content.decode()


def test_prune_keeps_recent_rows(power_on, db):
    power_on.VX11_POWER_ACTION_RETENTION_DAYS = 30
    power_on.VX11_PRUNE_CHUNK = 2
    old = timezone.now() - timedelta(days=31)
    for _ in range(5):
        PowerAction.objects.create(
            actor="a", service="switch", action="stop", result="ok", http_status=200, message="m", at=old
        )
    PowerAction.objects.create(
        actor="a", service="switch", action="stop", result="ok", http_status=200, message="recent"
    )
    assert prune_power_actions() == {"pruned": 5, "window_stops": 0, "logs_cut": 0}
    assert list(PowerAction.objects.values_list("message", flat=True)) == ["recent"]


def with_folder(at, **fields) -> PowerAction:
    row = PowerAction.objects.create(
        **{
            "actor": "a",
            "service": "switch",
            "action": "stop",
            "result": "ok",
            "http_status": 200,
            "message": "m",
            "at": at,
            **fields,
        }
    )
    bag = write_bag(row.action, "power", {"result.json": "{}"}, folder_name=evidence_name(row.action, row.service, at))
    PowerAction.objects.filter(pk=row.pk).update(evidence_path=str(bag.folder()))
    return row


def test_prune_deletes_evidence_folders(power_on, power_api, compose_switch, evidence):
    power_on.VX11_POWER_ACTION_RETENTION_DAYS = 30
    power_on.VX11_PRUNE_CHUNK = 2
    for _ in range(3):  # real requests: refused, no window; each leaves a folder
        assert (
            power_api.post(
                "/madre/power/service/start", {"service": "switch"}, content_type="application/json"
            ).status_code
            == 409
        )
    old = timezone.now() - timedelta(days=31)
    mode = with_folder(old, action="mode", service="low_power")
    step = with_folder(timezone.now(), parent=mode)  # a step goes with its mode (CASCADE), its folder too
    keep = PowerAction.objects.filter(action="start").order_by("id").last()
    PowerAction.objects.filter(action="start").exclude(pk=keep.pk).update(at=old)
    assert len(evidence()) == 5

    assert Evidence.objects.count() == 5
    assert prune_power_actions()["pruned"] == 4  # two starts, the mode and its step
    assert [str(f) for f in evidence()] == [keep.evidence_path]
    assert [e.folder() for e in Evidence.objects.all()] == evidence()  # the bags' index rows went with them
    assert not PowerAction.objects.filter(pk=step.pk).exists()


def test_prune_never_deletes_outside_the_evidence_root(power_on, db, tmp_path):
    power_on.VX11_POWER_ACTION_RETENTION_DAYS = 30
    audit = power_on.VX11_EVIDENCE_ROOT / "docs" / "audit"
    audit.mkdir(parents=True)
    outside = tmp_path / "precious" / "madre_power_stop_switch_20200101T000000Z"
    outside.mkdir(parents=True)
    (outside / "keep.txt").write_text("mine")
    link = audit / "madre_power_stop_link_20200101T000000Z"
    link.symlink_to(outside, target_is_directory=True)
    other = audit / "not_power_evidence"
    other.mkdir()
    old = timezone.now() - timedelta(days=31)
    for path in (
        outside,
        link,
        audit / ".." / ".." / ".." / "precious" / outside.name,
        other,
        audit,
        "relative/madre_power_x",
        "/",
    ):
        PowerAction.objects.create(
            actor="a",
            service="switch",
            action="stop",
            result="ok",
            http_status=200,
            message="m",
            at=old,
            evidence_path=str(path),
        )

    assert prune_power_actions()["pruned"] == 7  # the rows go; their bogus folders stay
    assert (outside / "keep.txt").read_text() == "mine"
    assert link.is_symlink()
    assert other.is_dir()
    assert audit.is_dir()


def test_module_log_stays_bounded(power_on, demo_process):
    """A module's log is cut to its last half beyond VX11_POWER_LOG_MAX_BYTES at each start and by the hourly prune;
    a failed start reports the log's tail, read from its end."""
    power_on.VX11_POWER_LOG_MAX_BYTES = 10_000
    control = demo_process("switch")
    argv = [sys.executable, "-c", "print('last words', flush=True); raise SystemExit(3)"]
    log = backends.log_path("switch")
    log.write_bytes(b"old line of output\n" * 50_000)  # ~1 MB

    outcome = backends.process_start("switch", argv, None, control.module.health_url)
    assert not outcome.ok
    assert "exited with 3" in outcome.message
    assert "last words" in outcome.output[-1]
    assert len(outcome.output[-1]) <= 2000
    assert log.stat().st_size <= 10_000
    assert log.read_text().endswith("last words\n") and log.read_text().startswith("[log cut")

    other = backends.log_path("hermes")
    with other.open("ab") as f:  # a module that ran for long, logging all the while
        f.write(b"y" * 50_000)
    assert prune_power_actions() == {"pruned": 0, "window_stops": 0, "logs_cut": 1}
    assert other.stat().st_size <= 10_000
    assert log.stat().st_size <= 10_000
    assert os.path.getsize(log) == log.stat().st_size
