"""The API lists and reads bags for any key, verifies with evidence.verify_evidence and re-seals with
evidence.reseal_evidence; the admin's actions do the same, and a flagged bag shows in red."""

import shutil

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from apps.accounts.models import ApiKey
from apps.evidence.models import Evidence
from tests.evidence.helpers import TAMPERING, sample_bag

pytestmark = pytest.mark.django_db
RED = "#cf222e"


@pytest.fixture
def auditor(django_user_model, grant):
    user = django_user_model.objects.create_user("auditor", is_staff=True)
    return grant(user, "evidence.verify_evidence", "evidence.view_evidence")


def key_client(user, read_only=False) -> Client:
    return Client(headers={"Authorization": f"Bearer {ApiKey.issue(user, 'k', read_only=read_only)[1]}"})


def test_read_only_keys_list_and_read(evidence_root, readonly_key):
    rows = [sample_bag(), sample_bag("housekeeping")]
    ro = Client(headers={"Authorization": f"Bearer {readonly_key}"})
    listed = ro.get("/api/evidence").json()
    assert listed["count"] == 2
    assert {item["path"] for item in listed["items"]} == {r.path for r in rows}
    one = ro.get(f"/api/evidence/{rows[0].pk}").json()
    assert (one["path"], one["state"], one["kind"], one["run_id"]) == (rows[0].path, "unverified", "audit", "run-1")
    assert ro.get("/api/evidence?state=valid").json()["count"] == 0
    assert ro.get("/api/evidence/999999").status_code == 404
    assert ro.get("/api/evidence?state=bogus").status_code == 422
    assert ro.post(f"/api/evidence/{rows[0].pk}/verify").status_code == 403  # a read-only key never writes


@pytest.mark.parametrize("problem", ["modified", "missing", "extra"])
def test_verify_names_the_file(evidence_root, auditor, plain_key, problem):
    row = sample_bag()
    file = TAMPERING[problem](row.folder())
    plain = Client(headers={"Authorization": f"Bearer {plain_key}"})
    refused = plain.post(f"/api/evidence/{row.pk}/verify")
    assert (refused.status_code, refused.json()["detail"]) == (
        403,
        "verifying evidence needs the permission evidence.verify_evidence; user 'plain' does not have it",
    )
    assert Evidence.objects.get(pk=row.pk).state == "unverified"

    answer = key_client(auditor).post(f"/api/evidence/{row.pk}/verify")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["result"], body["files"][0]["file"], body["files"][0]["problem"]) == (problem, file, problem)
    assert body["evidence"]["state"] == problem
    assert key_client(auditor).get("/api/evidence?state=" + problem).json()["count"] == 1


def test_reseal_through_the_api(evidence_root, auditor, grant):
    row = sample_bag()
    TAMPERING["modified"](row.folder())
    client = key_client(auditor)
    client.post(f"/api/evidence/{row.pk}/verify")
    assert (
        client.post(f"/api/evidence/{row.pk}/reseal", {"note": "x"}, content_type="application/json").status_code == 403
    )
    grant(auditor, "evidence.reseal_evidence")
    assert client.post(f"/api/evidence/{row.pk}/reseal", {}, content_type="application/json").status_code == 422
    answer = client.post(
        f"/api/evidence/{row.pk}/reseal", {"note": "rewritten on purpose"}, content_type="application/json"
    )
    assert answer.status_code == 200
    assert (answer.json()["result"], answer.json()["evidence"]["resealed_by"]) == ("valid", "auditor")
    assert client.post(f"/api/evidence/{row.pk}/verify").json()["result"] == "valid"

    gone = sample_bag()
    shutil.rmtree(gone.folder())
    answer = client.post(f"/api/evidence/{gone.pk}/reseal", {"note": "n"}, content_type="application/json")
    assert answer.status_code == 409
    assert "no longer a bag" in answer.json()["detail"]


def test_admin_actions_and_red_badge(evidence_root, auditor, admin_user):
    good, bad = sample_bag(), sample_bag()
    TAMPERING["missing"](bad.folder())
    browser = Client()
    browser.force_login(auditor)
    page = browser.post(
        "/admin/evidence/evidence/",
        {"action": "verify_bags", "_selected_action": [good.pk, bad.pk]},
        follow=True,
    )
    assert page.status_code == 200
    text = page.content.decode()
    assert f"Missing: {bad.name} (data/logs/run.log)" in text  # the admin capitalises messages
    assert RED in text  # the flagged row's badge
    assert Evidence.objects.get(pk=bad.pk).state == "missing"
    assert Evidence.objects.get(pk=good.pk).state == "valid"

    # without the re-seal permission the action is not even offered; the superuser may
    assert "reseal_bags" not in browser.get("/admin/evidence/evidence/").content.decode()
    detail = browser.get(f"/admin/evidence/evidence/{bad.pk}/change/").content.decode()
    assert "data/logs/run.log" in detail and RED in detail
    admin = Client()
    admin.force_login(admin_user)
    admin.post("/admin/evidence/evidence/", {"action": "reseal_bags", "_selected_action": [bad.pk]}, follow=True)
    assert Evidence.objects.get(pk=bad.pk).state == "valid"


def test_admin_verify_needs_the_permission(evidence_root, django_user_model):
    row = sample_bag()
    viewer = django_user_model.objects.create_user("viewer2", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_evidence"))
    browser = Client()
    browser.force_login(viewer)
    page = browser.post("/admin/evidence/evidence/", {"action": "verify_bags", "_selected_action": [row.pk]})
    assert Evidence.objects.get(pk=row.pk).state == "unverified"  # Django refuses an action the user may not run
    assert page.status_code in (200, 302)
