"""Rotation by age, with now=: a bag older than VX11_EVIDENCE_ARCHIVE_DAYS moves into docs/audit/archive/ (its row
follows), one older than VX11_EVIDENCE_DELETE_DAYS is deleted, a forensic bag is never touched, and a power
action's out_dir follows its bag."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from apps.evidence.bags import verify, write_bag
from apps.evidence.models import Evidence
from apps.evidence.rotation import rotate
from apps.evidence.tasks import rotate_evidence, verify_recent_evidence
from apps.power.evidence import evidence_name
from apps.power.models import PowerAction
from tests.evidence.helpers import TAMPERING, sample_bag

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def ages(evidence_root, settings):
    settings.VX11_EVIDENCE_ARCHIVE_DAYS = 7
    settings.VX11_EVIDENCE_DELETE_DAYS = 90
    return {
        "fresh": sample_bag("fresh", now=NOW - timedelta(days=6)),
        "week_old": sample_bag("week_old", now=NOW - timedelta(days=8)),
        "ancient": sample_bag("ancient", now=NOW - timedelta(days=91)),
        "forensic": write_bag(
            "crash", "forensic", {"core.txt": "x"}, now=NOW - timedelta(days=400), folder_name="forensic_crash_1"
        ),
    }


def test_rotation_moves_and_deletes_by_age(ages, evidence_root):
    audit = evidence_root / "docs" / "audit"
    ancient = ages["ancient"].folder()
    report = rotate(now=NOW)
    assert report["archived"] == ["docs/audit/archive/" + ages["week_old"].name]
    assert report["deleted"] == [ages["ancient"].path]
    assert report["skipped"] == [{"path": ages["forensic"].path, "why": "forensic evidence is never rotated"}]

    week_old = Evidence.objects.get(pk=ages["week_old"].pk)
    assert week_old.folder() == audit / "archive" / ages["week_old"].name
    assert verify(week_old.folder())["state"] == "valid"  # a bag moves whole
    assert week_old.verify()["state"] == "valid"
    assert not ancient.exists() and not Evidence.objects.filter(pk=ages["ancient"].pk).exists()
    assert ages["fresh"].folder().is_dir() and ages["forensic"].folder().is_dir()
    assert rotate(now=NOW) == {"archived": [], "deleted": [], "skipped": report["skipped"]}  # nothing twice

    # archived, then past the delete age: gone from the archive too
    later = rotate(now=NOW + timedelta(days=84))  # week_old is 92 days old, fresh exactly 90
    assert set(later["deleted"]) == {week_old.path}
    assert later["archived"] == ["docs/audit/archive/" + ages["fresh"].name]


def test_rotation_never_follows_a_symlink(ages, evidence_root, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    link = evidence_root / "docs" / "audit" / "20250101T000000Z_link"
    link.symlink_to(precious, target_is_directory=True)
    Evidence.objects.create(path="docs/audit/20250101T000000Z_link", kind="audit", created_at=NOW - timedelta(days=200))
    report = rotate(now=NOW)
    assert {"path": "docs/audit/20250101T000000Z_link", "why": "a symlink"} in report["skipped"]
    assert (precious / "keep.txt").read_text() == "mine" and link.is_symlink()


def test_a_power_actions_out_dir_follows_its_bag(evidence_root, settings):
    at = NOW - timedelta(days=10)
    row = PowerAction.objects.create(
        actor="a", service="switch", action="stop", result="ok", http_status=200, message="m", at=at
    )
    row.finish("ok", 200, "stopped", output="SIGTERM sent")
    row.refresh_from_db()
    assert row.evidence_path.endswith(evidence_name("stop", "switch", at))
    rotate(now=NOW)
    row.refresh_from_db()
    assert row.evidence_path == str(evidence_root / "docs" / "audit" / "archive" / evidence_name("stop", "switch", at))
    assert (row.as_dict()["out_dir"], (evidence_root / row.evidence_path / "data" / "output.log").is_file()) == (
        row.evidence_path,
        True,
    )
    settings.VX11_EVIDENCE_DELETE_DAYS = 9
    rotate(now=NOW)
    row.refresh_from_db()
    assert row.evidence_path == ""


def test_the_beat_tasks(ages):
    TAMPERING["modified"](ages["fresh"].folder())
    assert verify_recent_evidence(now=NOW) == {"modified": 1, "valid": 1}  # fresh and week_old; not the older ones
    assert rotate_evidence(now=NOW) == {"archived": 1, "deleted": 1, "skipped": 1}
    assert Evidence.objects.get(pk=ages["fresh"].pk).state == "modified"
    # a flagged bag is checked every day, however old
    assert verify_recent_evidence(now=NOW + timedelta(days=30)) == {"modified": 1}


def test_rotate_from_the_cli_needs_the_permission(ages, django_user_model, grant):
    keeper = django_user_model.objects.create_user("keeper")
    with pytest.raises(CommandError, match="evidence.delete_evidence"):
        call_command("vx11_evidence", "rotate", "--as", "keeper")
    grant(keeper, "evidence.delete_evidence")
    call_command("vx11_evidence", "rotate", "--as", "keeper")  # the real now: everything in the fixture is old
    assert set(Evidence.objects.values_list("kind", flat=True)) == {"forensic"}
