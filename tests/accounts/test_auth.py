"""API auth: staff session, API keys as Bearer or X-API-Key, read-only keys, missing and wrong keys."""

import pytest
from django.test import Client

from apps.accounts.models import ApiKey

pytestmark = pytest.mark.django_db
NEW = {"slug": "probe-target", "name": "Probe target", "base_url": "http://127.0.0.1:9"}


def test_missing_credentials_is_401_with_a_message():
    r = Client().get("/api/modules")
    assert r.status_code == 401
    assert "Authorization: Bearer" in r.json()["detail"]


@pytest.mark.parametrize(
    "headers", [{"Authorization": "Bearer vx11_deadbeef_nope"}, {"X-API-Key": "garbage"}, {"Authorization": "Bearer "}]
)
def test_wrong_key_is_401(headers, operator_key):
    r = Client(headers=headers).get("/api/modules")
    assert r.status_code == 401


def test_key_with_right_prefix_but_wrong_secret_is_401(operator_key):
    prefix = operator_key.split("_")[1]
    r = Client(headers={"X-API-Key": f"vx11_{prefix}_{'x' * 43}"}).get("/api/modules")
    assert r.status_code == 401
    assert r.json()["detail"] == "invalid or revoked API key"


def test_key_works_as_bearer_and_as_x_api_key(operator_key):
    assert Client(headers={"Authorization": f"Bearer {operator_key}"}).get("/api/modules").status_code == 200
    assert Client(headers={"X-API-Key": operator_key}).get("/api/modules").status_code == 200
    assert ApiKey.objects.get(name="operator rw").last_used_at is not None


def test_read_only_key_reads_but_cannot_write(readonly_key):
    client = Client(headers={"X-API-Key": readonly_key})
    assert client.get("/api/modules/madre").status_code == 200
    for method, path, body in [
        ("post", "/api/modules", NEW),
        ("patch", "/api/modules/madre", {"name": "x"}),
        ("delete", "/api/modules/madre", None),
        ("post", "/api/modules/madre/probe", None),
        ("post", "/api/probe", None),
    ]:
        r = getattr(client, method)(path, body, content_type="application/json")
        assert r.status_code == 403, (method, path)
        assert "read-only" in r.json()["detail"]


def test_revoked_key_and_inactive_user_are_refused(operator_key):
    key = ApiKey.objects.get(name="operator rw")
    key.revoked = True
    key.save()
    assert Client(headers={"X-API-Key": operator_key}).get("/api/modules").status_code == 401
    key.revoked = False
    key.save()
    key.user.is_active = False
    key.user.save()
    assert Client(headers={"X-API-Key": operator_key}).get("/api/modules").status_code == 401


def test_plain_key_is_not_stored(operator_key):
    key = ApiKey.objects.get(name="operator rw")
    assert operator_key not in (key.key_hash, key.prefix)
    assert len(key.key_hash) == 64


def test_staff_session_works_and_non_staff_session_does_not(admin_user, django_user_model):
    staff = Client()
    staff.force_login(admin_user)
    assert staff.get("/api/modules").status_code == 200
    plain = django_user_model.objects.create_user("nobody", password="x-pass-12345")
    other = Client()
    other.force_login(plain)
    assert other.get("/api/modules").status_code == 401


def test_session_writes_need_csrf(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    r = client.post("/api/modules", NEW, content_type="application/json")
    assert r.status_code == 403
