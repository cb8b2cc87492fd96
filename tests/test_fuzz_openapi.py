"""Fuzzing: schemathesis over both OpenAPI documents (/api/ and madre's /madre/power/), with a
full-rights key and a read-only key, against the Django app in this process (its WSGI handler).

Fails on any 5xx, any status code or content type the document does not declare for the operation,
and any body that does not match the declared schema. VX11_FUZZ_EXAMPLES (default 8) bounds the
generated examples per operation and key (schemathesis adds its boundary cases for the full key);
the run is derandomized, so CI sees the same cases each time.
"""

import os
from collections import Counter

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings

from apps.accounts.models import ApiKey

APP = WSGIHandler()
EXAMPLES = int(os.environ.get("VX11_FUZZ_EXAMPLES", "8"))
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]
FUZZ = hypothesis_settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
SEEN: Counter = Counter()


@pytest.fixture
def keys(fleet, django_user_model, settings, tmp_path):
    """A superuser's read-write key and a read-only one, on the sim fleet."""
    settings.VX11_EVIDENCE_ROOT = tmp_path  # refused power writes still write evidence folders
    settings.VX11_ROOT = tmp_path / "vx11_root"  # housekeeping's writes move files: never in the demo's tree
    # no worker runs here: a generated ?wait=3600 would wait the whole bound for a result that never comes
    settings.VX11_METRICS_WAIT_MAX_SECONDS = 1
    settings.VX11_AUDIT_WAIT_MAX_SECONDS = 1
    # as django.test.Client does: a request must not close the test's connection (and its transaction)
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    root = django_user_model.objects.create_superuser("fuzz-root", "root@example.com", password=None)
    viewer = django_user_model.objects.create_user("fuzz-viewer", password=None)
    yield {"full": ApiKey.issue(root, "fuzz rw")[1], "read-only": ApiKey.issue(viewer, "fuzz ro", read_only=True)[1]}
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


portal = schemathesis.openapi.from_wsgi("/api/openapi.json", APP)
madre = schemathesis.openapi.from_wsgi("/madre/power/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def tally():
    yield
    print(f"\nfuzzed {sum(SEEN.values())} cases; statuses: {dict(sorted(SEEN.items()))}")


def call_and_check(case, key: str):
    with transaction.atomic():  # each case sees the same world: what one stored is gone for the next
        response = case.call(headers={"Authorization": f"Bearer {key}"})
        transaction.set_rollback(True)
    SEEN[response.status_code] += 1
    case.validate_response(response, checks=CHECKS)


@schemathesis.pytest.parametrize(portal=portal, madre=madre)
@FUZZ
def test_full_rights_key(case, keys):
    call_and_check(case, keys["full"])


@schemathesis.pytest.parametrize(portal=portal, madre=madre)
@hypothesis_settings(FUZZ, phases=[Phase.generate])
def test_read_only_key(case, keys):
    """Generated examples only, not schemathesis' boundary cases: a read-only key reads as the full one does,
    and its writes are refused before their input is looked at."""
    call_and_check(case, keys["read-only"])
