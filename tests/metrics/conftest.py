"""The metrics' world: evidence, the managed tree and the audit target in the test's own folder."""

import pytest

from tests.helpers import confine_to


@pytest.fixture
def metrics_env(db, settings, tmp_path):
    """Settings for snapshots confined to tmp_path; returns the evidence root."""
    confine_to(settings, tmp_path)
    settings.VX11_METRIC_MAX_AGE_SECONDS = {}
    return settings.VX11_EVIDENCE_ROOT
