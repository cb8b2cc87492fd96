"""The rule for tampering: a bag found modified, missing a file or with an extra one stays flagged; later checks
record what they find but never clear it; only a re-seal by a user holding evidence.reseal_evidence does, and
the re-sealed bag is a valid BagIt bag again."""

from datetime import UTC, datetime, timedelta

import pytest

from apps.events.models import Event
from apps.evidence.bags import verify
from apps.evidence.models import Evidence
from tests.evidence.helpers import PAYLOAD, bagit_cli, sample_bag

pytestmark = pytest.mark.django_db
AT = datetime(2026, 1, 4, 3, 0, tzinfo=UTC)


def test_a_flag_sticks_when_the_file_is_put_back(evidence_root):
    row = sample_bag()
    assert row.verify(now=AT)["state"] == "valid"
    assert (row.state, row.last_result, row.verified_at) == ("valid", "valid", AT)

    result_file = row.folder() / "data" / "result.json"
    result_file.write_text("tampered")
    assert row.verify(now=AT + timedelta(hours=1))["state"] == "modified"
    row.refresh_from_db()
    assert (row.state, row.findings[0]["file"]) == ("modified", "data/result.json")
    event = Event.objects.filter(type="status_changed").latest("id")
    assert event.data == {
        "source": "evidence",
        "evidence": row.path,
        "from": "valid",
        "to": "modified",
        "files": row.findings,
    }

    result_file.write_text(PAYLOAD["result.json"])  # put back as it was: the bag is valid again ...
    assert row.verify(now=AT + timedelta(hours=2))["state"] == "valid"
    row.refresh_from_db()
    assert (row.state, row.last_result) == ("modified", "valid")  # ... but was tampered with once: still flagged
    assert row.flagged and row.verified_at == AT + timedelta(hours=2)
    assert Evidence.objects.filter(state__in=Evidence.FLAGGED).count() == 1


def test_a_worse_finding_replaces_the_flag_and_a_reseal_clears_it(evidence_root, admin_user):
    row = sample_bag()
    (row.folder() / "data" / "planted.txt").write_text("x")
    row.verify()
    assert row.state == "extra"
    (row.folder() / "data" / "result.json").unlink()
    row.verify()
    assert [(f["file"], f["problem"]) for f in row.findings] == [
        ("data/result.json", "missing"),
        ("data/planted.txt", "extra"),
    ]
    assert row.state == "missing"

    row.reseal(admin_user, "the planted file is the operator's note", now=AT)
    row.refresh_from_db()
    assert (row.state, row.resealed_by, row.resealed_at) == ("valid", "admin", AT)
    assert "before: missing: missing: data/result.json" in row.detail
    assert verify(row.folder())["state"] == "valid"
    assert bagit_cli(row.folder()).returncode == 0
    assert row.verify()["state"] == "valid"  # the new manifests are the indexed ones
    assert row.state == "valid"
