"""The metrics' world: evidence, the managed tree and the audit target in the test's own folder."""

import pytest


@pytest.fixture
def metrics_env(db, settings, tmp_path):
    """Settings for snapshots confined to tmp_path; returns the evidence root."""
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    settings.VX11_AUDIT_ALLOWED_ROOTS = [fleet]
    settings.VX11_TARGET_DB = str(fleet / "vx11.db")
    settings.VX11_EVIDENCE_ROOT = tmp_path / "evidence"
    settings.VX11_ROOT = tmp_path / "vx11_root"
    settings.VX11_METRIC_MAX_AGE_SECONDS = {}
    return settings.VX11_EVIDENCE_ROOT
