"""The admin's login form locks out after VX11_LOGIN_FAILURE_LIMIT failures (django-axes): that username from
that address only, for VX11_LOGIN_COOLOFF_MINUTES, answered with a 429 page in the admin's look and Retry-After."""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from axes.models import AccessAttempt
from django.test import AsyncClient, Client

LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    """Each try hashes a password; the default hasher's thousands of rounds per try are not under test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def log_in(client, password: str, username: str = "admin"):
    return client.post(LOGIN, {"username": username, "password": password})


def from_address(address: str) -> Client:
    return Client(REMOTE_ADDR=address)


def test_failures_lock_that_username_from_that_address(admin_user, settings):
    client = from_address("10.1.1.1")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        r = log_in(client, "wrong")
        assert r.status_code == 200
        assert b"Please enter the correct username and password" in r.content
    r = log_in(client, "wrong")
    assert r.status_code == 429
    page = r.content.decode()
    assert "Login locked" in page
    assert "<strong>admin</strong>" in page
    assert "locked for 15 minutes" in page
    assert "axes_reset_username admin" in page
    assert r["Retry-After"] == "900"

    assert log_in(client, "admin-pass-123").status_code == 429  # the right password too, meanwhile
    assert "_auth_user_id" not in client.session
    assert (
        log_in(from_address("10.1.1.2"), "admin-pass-123").status_code == 302
    )  # the admin elsewhere is not locked out
    assert log_in(client, "wrong", username="someone-else").status_code == 200  # nor another name from here


def test_the_lock_ends_after_the_cool_off(admin_user, settings):
    client = from_address("10.1.1.1")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, "wrong")
    assert log_in(client, "admin-pass-123").status_code == 429
    attempt = AccessAttempt.objects.get(username="admin", ip_address="10.1.1.1")
    attempt.attempt_time -= settings.AXES_COOLOFF_TIME + timedelta(seconds=1)  # the cool-off passes
    attempt.save()
    r = log_in(client, "admin-pass-123")
    assert r.status_code == 302
    assert r["Location"] == "/admin/"


def test_a_success_resets_the_count(admin_user, settings):
    client = from_address("10.1.1.1")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(client, "wrong")
    assert log_in(client, "admin-pass-123").status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in(client, "wrong").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_lockout_page_under_asgi(admin_user, settings):
    """daphne runs the middleware asynchronously, where django-axes calls the lockout page with other arguments."""
    client = AsyncClient(REMOTE_ADDR="10.1.1.3")
    post = async_to_sync(client.post)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        r = post(LOGIN, {"username": "admin", "password": "wrong"})
    assert r.status_code == 429
    assert r["Retry-After"] == "900"
    assert "<strong>admin</strong>" in r.content.decode()
