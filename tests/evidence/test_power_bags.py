"""Power's evidence folders are bags now: madre's folder name, its three files under data/, indexed as kind
power, valid for our check and for bagit's own; removing an action's evidence takes its row too."""

import json
from pathlib import Path

import bagit
import pytest
from django.test import Client
from django.utils import timezone

from apps.evidence.bags import verify
from apps.evidence.models import Evidence
from apps.power.evidence import remove_evidence
from apps.power.models import PowerAction
from tests.evidence.helpers import bagit_cli

pytestmark = pytest.mark.django_db


def test_a_refused_power_request_leaves_a_valid_bag(evidence_root, readonly_key):
    ro = Client(headers={"Authorization": f"Bearer {readonly_key}"})
    answer = ro.post("/madre/power/service/start", {"service": "switch"}, content_type="application/json")
    assert answer.status_code == 403
    action = PowerAction.objects.get()
    folder = evidence_root / "docs" / "audit" / f"madre_power_start_switch_{action.at:%Y%m%dT%H%M%SZ}"
    assert action.evidence_path == str(folder)
    assert sorted(p.name for p in (folder / "data").iterdir()) == [
        "EVIDENCE_INDEX.md",
        "output.log",
        "plan.json",
        "result.json",
    ]
    assert json.loads((folder / "data" / "result.json").read_text())["result"] == "refused"
    assert json.loads((folder / "data" / "plan.json").read_text())["refused_by"] == "auth"
    row = Evidence.objects.get()
    assert (row.path, row.kind, row.run_id) == (f"docs/audit/{folder.name}", "power", f"power-action-{action.pk}")
    info = bagit.Bag(str(folder)).info
    assert (info["VX11-Target"], info["VX11-Kind"]) == ("switch", "power")
    assert info["External-Description"] == "power start switch by viewer: refused (403)"
    assert verify(folder)["state"] == "valid"
    assert bagit_cli(folder).returncode == 0

    assert remove_evidence(action.evidence_path)
    assert not folder.exists() and not Evidence.objects.exists()


def test_two_actions_in_one_second_get_two_bags(evidence_root):
    at = timezone.now().replace(microsecond=0)
    rows = [
        PowerAction.objects.create(actor="a", service="switch", action="stop", result="ok", http_status=200, at=at)
        for _ in range(2)
    ]
    for row in rows:
        row.finish("ok", 200, "stopped", output="done")
    name = f"madre_power_stop_switch_{at:%Y%m%dT%H%M%SZ}"
    assert [Path(r.evidence_path).name for r in rows] == [name, f"{name}_2"]
    assert all(verify(r.evidence_path)["state"] == "valid" for r in rows)
    assert Evidence.objects.filter(kind="power").count() == 2
