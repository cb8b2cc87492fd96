"""Bad API keys are throttled per client address: beyond VX11_API_KEY_FAILURES_PER_MIN in a minute, every key
that address sends - even a good one - gets 429 with Retry-After until its minute ends. The count is in the
database (BadKeyWindow), shared by the portal API, madre's power API and the operator endpoints' X-VX11-Token."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.models import BadKeyWindow
from apps.power.models import PowerAction

pytestmark = pytest.mark.django_db
BAD = {"Authorization": "Bearer vx11_deadbeef_nope"}


@pytest.fixture
def limit(settings):
    settings.VX11_API_KEY_FAILURES_PER_MIN = 3
    return 3


def from_address(address: str, **headers) -> Client:
    return Client(headers=headers, REMOTE_ADDR=address)


def test_beyond_the_limit_even_a_good_key_waits(limit, operator_key):
    guesser = from_address("10.0.0.7", **BAD)
    for _ in range(limit):
        assert guesser.get("/api/modules").status_code == 401
    good_from_there = from_address("10.0.0.7", Authorization=f"Bearer {operator_key}")
    r = good_from_there.get("/api/modules")
    assert r.status_code == 429
    assert r.json()["detail"].startswith("too many invalid API keys from 10.0.0.7; retry in ")
    assert 1 <= int(r["Retry-After"]) <= 60
    assert guesser.get("/api/modules").status_code == 429  # and the guesses stop being checked
    assert BadKeyWindow.objects.get(address="10.0.0.7").failures == limit  # refused unchecked: not counted either

    assert from_address("10.0.0.8", Authorization=f"Bearer {operator_key}").get("/api/modules").status_code == 200
    assert from_address("10.0.0.7").get("/api/modules").status_code == 401  # no key: the session auth's usual answer


def test_the_minute_ends_and_a_new_one_starts(limit, operator_key):
    guesser = from_address("10.0.0.7", **BAD)
    for _ in range(limit):
        guesser.get("/api/modules")
    assert guesser.get("/api/modules").status_code == 429
    BadKeyWindow.objects.update(window_start=timezone.now() - timedelta(seconds=61))  # a minute passes

    assert from_address("10.0.0.7", Authorization=f"Bearer {operator_key}").get("/api/modules").status_code == 200
    assert guesser.get("/api/modules").status_code == 401
    assert list(BadKeyWindow.objects.values_list("address", "failures")) == [("10.0.0.7", 1)]  # the ended minute went


def test_wait_and_note_follow_now():
    start = timezone.now()
    for _ in range(10):
        BadKeyWindow.note("192.0.2.1", now=start)
    assert BadKeyWindow.wait("192.0.2.1", now=start + timedelta(seconds=20)) == 40
    assert BadKeyWindow.wait("192.0.2.1", now=start + timedelta(seconds=59.5)) == 1
    assert BadKeyWindow.wait("192.0.2.1", now=start + timedelta(seconds=60)) == 0
    assert BadKeyWindow.wait("192.0.2.2", now=start) == 0
    BadKeyWindow.note("192.0.2.2", now=start + timedelta(seconds=61))  # starting a minute clears the ended ones
    assert list(BadKeyWindow.objects.values_list("address", flat=True)) == ["192.0.2.2"]


def test_madre_power_api_throttles_and_audits_the_refusal(limit, settings, tmp_path):
    settings.VX11_EVIDENCE_ROOT = tmp_path / "evidence"
    guesser = from_address("10.0.0.9", **BAD)
    for _ in range(limit):
        assert (
            guesser.post(
                "/madre/power/service/start", {"service": "switch"}, content_type="application/json"
            ).status_code
            == 401
        )
    r = guesser.post("/madre/power/service/start", {"service": "switch"}, content_type="application/json")
    assert r.status_code == 429
    assert 1 <= int(r["Retry-After"]) <= 60
    assert "too many invalid API keys" in r.json()["detail"]
    assert from_address("10.0.0.9", **BAD).get("/api/power/status").status_code == 429
    throttled = PowerAction.objects.get(http_status=429)
    assert (throttled.actor, throttled.plan["remote_addr"], throttled.result) == ("anonymous", "10.0.0.9", "refused")


def test_operator_token_guesses_share_the_count(limit, settings):
    settings.VX11_TOKEN = "the-real-token"
    from_address("10.0.0.5", **BAD).get("/api/modules")
    for _ in range(limit - 1):
        assert from_address("10.0.0.5", **{"X-VX11-Token": "guess"}).get("/operator/vx11/overview").status_code == 403
    r = from_address("10.0.0.5", **{"X-VX11-Token": "the-real-token"}).get("/operator/vx11/overview")
    assert (r.status_code, r.json()) == (429, {"error": "too_many_bad_tokens", "status_code": 429})
    assert 1 <= int(r["Retry-After"]) <= 60
