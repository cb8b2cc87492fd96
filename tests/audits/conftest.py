"""Audits against real targets in a temporary folder: the folder is the only allowed root, the evidence goes
to a root of the test's own, and the ownership rules are seeded as the migration seeds them (a transactional
test starts from an empty database)."""

import pytest

from apps.audits.ownership import seed_rules
from apps.fleet.models import Module
from apps.fleet.reference import reference_rows
from tests.helpers import confine_to, give


@pytest.fixture
def audit_env(db, settings, tmp_path):
    """settings for an audit confined to tmp_path/fleet; returns that folder."""
    fleet = confine_to(settings, tmp_path)
    settings.VX11_AUDIT_INTEGRITY_TIMEOUT = 60
    return fleet


@pytest.fixture
def owners(db):
    """The ten reference modules and the seeded ownership rules."""
    for row in reference_rows():
        Module.objects.update_or_create(slug=row["slug"], defaults=row)
    seed_rules()


@pytest.fixture
def auditor(db, django_user_model):
    """A user who may run audits (and nothing else)."""
    return give(django_user_model.objects.create_user("auditor", password="auditor-pass-123"), "audits.run_audit")


@pytest.fixture
def eager_celery(settings):
    """Queued audits run inline on commit (use in transactional tests)."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
