import pytest


@pytest.fixture
def evidence_root(settings, tmp_path):
    settings.VX11_EVIDENCE_ROOT = tmp_path / "evidence"
    return settings.VX11_EVIDENCE_ROOT
