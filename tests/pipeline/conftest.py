"""The pipeline's world. `pipeline_env`: runs against the simulated fleet with the demo's audit target and managed
tree, evidence and the mirror (a bare remote) in the test's own folder. `faces_env`: the same folders without the
fleet, target or tree, for the API, admin and CLI tests that make their runs through the models."""

import pytest
from django.test import Client

from apps.accounts.models import ApiKey
from apps.simfleet.target_db import create_target_db
from apps.simfleet.target_tree import create_target_tree
from tests.helpers import confine_to, give, point_fleet_at
from tests.pipeline.helpers import bare_remote

DEMO_ROWS = 2000


def confine(settings, tmp_path):
    confine_to(settings, tmp_path)
    settings.VX11_METRIC_MAX_AGE_SECONDS = {}
    settings.VX11_MIRROR_REPO = tmp_path / "mirror-clone"
    settings.VX11_MIRROR_REMOTE = ""
    settings.VX11_PIPELINE_TESTS = []


@pytest.fixture
def pipeline_env(db, sim, settings, tmp_path):
    """Everything a run touches, in tmp_path (returned): the fleet pointed at the simulator, the demo's target
    and tree, the evidence root, and a bare remote for the mirror."""
    confine(settings, tmp_path)
    point_fleet_at(sim)
    create_target_db(settings.VX11_TARGET_DB, DEMO_ROWS)
    create_target_tree(settings.VX11_ROOT)
    settings.VX11_MIRROR_REMOTE = str(bare_remote(tmp_path / "mirror.git"))
    return tmp_path


@pytest.fixture
def faces_env(db, settings, tmp_path):
    """Folders of the test's own for what the faces' tests write (bags, staged evidence); returns the evidence
    root."""
    confine(settings, tmp_path)
    return settings.VX11_EVIDENCE_ROOT


@pytest.fixture
def pipeliner(db, django_user_model):
    """A staff user who may start and cancel pipeline runs (and see them in the admin)."""
    user = django_user_model.objects.create_user("pipeliner", is_staff=True)  # no password: it acts by key
    return give(user, "pipeline.run_pipeline", "pipeline.view_pipelinerun")


@pytest.fixture
def pipeline_api(pipeliner):
    return Client(headers={"Authorization": f"Bearer {ApiKey.issue(pipeliner, 'pipeline rw')[1]}"})
