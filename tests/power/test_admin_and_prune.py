"""The admin shows power actions, service controls and open windows; the action log is pruned."""

from datetime import timedelta

from django.test import Client
from django.utils import timezone

from apps.fleet.models import MaintenanceWindow
from apps.power.models import PowerAction, ServiceControl
from apps.power.tasks import prune_power_actions


def test_admin_pages(power_on, admin_user, fleet, window):
    ServiceControl.objects.create(module=fleet["switch"], backend="systemd", systemd_unit="vx11-switch.service")
    w = window("switch", "hermes")
    PowerAction.objects.create(actor="admin", service="switch", action="start", result="refused", http_status=409, message="no window")
    client = Client()
    client.force_login(admin_user)
    page = client.get("/admin/fleet/module/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-window="{w.id}"' in html and "maintenance window" in html
    assert client.get("/admin/power/poweraction/?result=refused").status_code == 200
    assert client.get("/admin/power/servicecontrol/").status_code == 200
    assert "systemctl start vx11-switch.service" in client.get("/admin/power/servicecontrol/").content.decode()
    assert client.get(f"/admin/fleet/maintenancewindow/{w.id}/change/").status_code == 200
    # closed windows leave the fleet page
    MaintenanceWindow.objects.filter(pk=w.pk).update(closed_at=timezone.now())
    assert f'data-window="{w.id}"' not in client.get("/admin/fleet/module/").content.decode()


def test_prune_keeps_recent_rows(power_on, db):
    power_on.VX11_POWER_ACTION_RETENTION_DAYS = 30
    power_on.VX11_PRUNE_CHUNK = 2
    old = timezone.now() - timedelta(days=31)
    for i in range(5):
        PowerAction.objects.create(actor="a", service="switch", action="stop", result="ok", http_status=200, message="m", at=old)
    PowerAction.objects.create(actor="a", service="switch", action="stop", result="ok", http_status=200, message="recent")
    assert prune_power_actions() == {"pruned": 5}
    assert list(PowerAction.objects.values_list("message", flat=True)) == ["recent"]
