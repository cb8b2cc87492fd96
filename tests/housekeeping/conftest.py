"""The housekeeping world: a demo VX11 tree in tmp_path as VX11_ROOT, evidence in tmp_path, and users.

- `tree`: apps.simfleet.target_tree's demo checkout (no git: the git tests are in tests/audits), made at a fixed
  `now` (tree.now), VX11_ROOT pointing at it; VX11_CLEANUP_EXCLUDES empty (the tree's own list applies).
- `keeper`: a user holding every housekeeping permission; `runner_only`: may run dry runs, nothing else.
"""

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from apps.simfleet.target_tree import create_target_tree
from tests.helpers import give
from tests.housekeeping.helpers import ALL_PERMISSIONS

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def evidence_root(settings, tmp_path):
    settings.VX11_EVIDENCE_ROOT = tmp_path / "evidence"
    return settings.VX11_EVIDENCE_ROOT


@pytest.fixture
def tree(settings, tmp_path, evidence_root):
    root = tmp_path / "vx11"
    made = create_target_tree(root, now=NOW, git=False)
    settings.VX11_ROOT = root.resolve()
    settings.VX11_CLEANUP_EXCLUDES = ""
    return SimpleNamespace(root=root.resolve(), now=NOW, made=made)


@pytest.fixture
def keeper(db, django_user_model):
    user = django_user_model.objects.create_user("keeper", password=None, is_staff=True)
    return give(user, *ALL_PERMISSIONS)


@pytest.fixture
def runner_only(db, django_user_model):
    user = django_user_model.objects.create_user("dryrunner", password=None, is_staff=True)
    return give(user, "housekeeping.add_housekeepingrun")
