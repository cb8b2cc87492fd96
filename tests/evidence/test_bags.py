"""A written bag is a valid BagIt bag, checked by our verify() and by bagit's own command line; every kind of
tampering (payload file changed, deleted, added; bag-info.txt edited; a tag file added or removed; the whole bag
re-made) is found with the file named."""

from datetime import UTC, datetime

import bagit
import pytest

from apps.evidence.bags import INDEX, verify, verify_indexed, write_bag, write_latest
from apps.evidence.models import Evidence
from tests.evidence.helpers import PAYLOAD, TAMPERING, bagit_cli, sample_bag

pytestmark = pytest.mark.django_db
AT = datetime(2026, 1, 4, 3, 0, 5, 123456, tzinfo=UTC)


def test_a_written_bag_validates_and_is_indexed(evidence_root):
    row = sample_bag(now=AT)
    folder = evidence_root / "docs" / "audit" / "20260104T030005Z_db_audit"
    assert row.folder() == folder
    assert row.path == "docs/audit/20260104T030005Z_db_audit"
    assert (row.kind, row.run_id, row.state, row.created_at) == (
        "audit",
        "run-1",
        "unverified",
        AT.replace(microsecond=0),
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        "bag-info.txt",
        "bagit.txt",
        "data",
        "manifest-sha256.txt",
        "tagmanifest-sha256.txt",
    ]
    assert (folder / "data" / "result.json").read_text() == PAYLOAD["result.json"]
    bagit.Bag(str(folder)).validate()  # the library's full check
    assert bagit_cli(folder).returncode == 0
    assert verify(folder) == {"state": "valid", "files": [], "detail": "every file matches its manifest"}
    assert verify(row.path)["state"] == "valid"  # relative to the evidence root
    assert row.payload_oxum == bagit.Bag(str(folder)).info["Payload-Oxum"]
    assert len(row.manifest_sha256) == len(row.tagmanifest_sha256) == 64


def test_bag_info_and_the_index_say_what_the_run_was(evidence_root):
    row = sample_bag(now=AT)
    info = bagit.Bag(str(row.folder())).info
    assert info["VX11-Run-Id"] == "run-1"
    assert info["VX11-Target"] == "var/vx11_target.db"
    assert info["VX11-Started-At"] == "2026-01-04T03:00:00+00:00"
    assert info["VX11-Created-At"] == "2026-01-04T03:00:05+00:00"
    assert info["VX11-Kind"] == "audit"
    assert info["VX11-Portal-Version"]
    assert info["Payload-Oxum"].endswith(".3")  # two files and the index
    index = (row.folder() / "data" / INDEX).read_text()
    assert "run id: run-1" in index and "target: var/vx11_target.db" in index
    assert "| logs/run.log | 14 | " in index
    assert "python -m bagit --validate" in index


def test_two_bags_in_the_same_second_do_not_collide(evidence_root):
    first, second, third = (sample_bag(now=AT) for _ in range(3))
    assert [r.folder().name for r in (first, second, third)] == [
        "20260104T030005Z_db_audit",
        "20260104T030005Z_db_audit_2",
        "20260104T030005Z_db_audit_3",
    ]
    assert all(verify(r.folder())["state"] == "valid" for r in (first, second, third))


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", "a/../../b", "", "."])
def test_payload_names_stay_inside_the_bag(evidence_root, name):
    with pytest.raises(ValueError):
        write_bag("x", "audit", {name: "x"})
    assert Evidence.objects.count() == 0
    assert [p.name for p in (evidence_root / "docs" / "audit").iterdir()] == []  # no half bag left behind


def test_write_latest_replaces_the_canonical_files(evidence_root):
    [path] = write_latest({"DB_SCHEMA_v7_FINAL.json": "{}"})
    assert path == evidence_root / "docs" / "audit" / "DB_SCHEMA_v7_FINAL.json"
    write_latest({"DB_SCHEMA_v7_FINAL.json": b'{"v": 2}'})
    assert path.read_text() == '{"v": 2}'
    with pytest.raises(ValueError):
        write_latest({"../outside.json": "{}"})


@pytest.mark.parametrize("problem", ["modified", "missing", "extra"])
def test_payload_tampering_is_found_with_the_file_named(evidence_root, problem):
    row = sample_bag()
    file = TAMPERING[problem](row.folder())
    result = verify(row.folder())
    assert result["state"] == problem
    assert [(f["file"], f["problem"]) for f in result["files"]] == [(file, problem)]
    assert file in result["detail"]
    assert bagit_cli(row.folder()).returncode == 1  # bagit's own check agrees


def test_an_edited_bag_info_is_a_modified_tag_file(evidence_root):
    row = sample_bag()
    info = row.folder() / "bag-info.txt"
    info.write_text(info.read_text().replace("VX11-Run-Id: run-1", "VX11-Run-Id: run-2"))
    result = verify(row.folder())
    assert (result["state"], [f["file"] for f in result["files"]]) == ("modified", ["bag-info.txt"])


def test_tag_files_added_or_removed_are_found(evidence_root):
    row = sample_bag()
    (row.folder() / "notes.txt").write_text("planted next to the manifests")
    result = verify(row.folder())
    assert (result["state"], [f["file"] for f in result["files"]]) == ("extra", ["notes.txt"])
    (row.folder() / "notes.txt").unlink()
    (row.folder() / "tagmanifest-sha256.txt").unlink()  # bagit alone would now skip checking bag-info.txt
    result = verify(row.folder())
    assert (result["state"], [f["file"] for f in result["files"]]) == ("missing", ["tagmanifest-sha256.txt"])
    (row.folder() / "manifest-sha256.txt").unlink()
    assert verify(row.folder())["state"] == "missing"


def test_a_bag_remade_after_an_edit_is_caught_by_the_index(evidence_root):
    """bagit calls a bag re-made from scratch valid; the manifest hash indexed when it was written does not."""
    row = sample_bag()
    (row.folder() / "data" / "result.json").write_text('{"ok": "forged"}\n')
    bag = bagit.Bag(str(row.folder()))
    bag.save(manifests=True)
    assert verify(row.folder())["state"] == "valid"
    result = verify_indexed(row)
    assert result["state"] == "modified"
    assert [f["file"] for f in result["files"]] == ["manifest-sha256.txt", "tagmanifest-sha256.txt"]


def test_a_folder_that_is_no_bag(evidence_root):
    folder = evidence_root / "docs" / "audit" / "plain"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text("{}")
    assert verify(folder)["state"] == "not_a_bag"
    assert verify(evidence_root / "nowhere")["state"] == "missing"
