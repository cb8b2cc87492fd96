"""Flows against the demo fleet: the canonical flows as the data migration loaded them, the ten
modules pointed at `sim`, and short step timeouts so a hanging module costs half a second."""

import pytest

from apps.flows.models import Flow
from tests.flows.helpers import STEP_TIMEOUT


@pytest.fixture
def flows(fleet, settings):
    settings.VX11_FLOW_HTTP_TIMEOUT = STEP_TIMEOUT
    settings.VX11_FLOW_DB_POLL_SECONDS = 0.05
    Flow.load_canonical()  # a transactional test starts from an empty database
    return {flow.name: flow for flow in Flow.objects.all()}


@pytest.fixture
def eager_celery(settings):
    """Celery tasks (daughters, queued flow runs) run inline on the test database, as in tests/daughters.
    Use it in transactional tests: tasks are sent on commit."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.VX11_DAUGHTER_HEARTBEAT_SECONDS = 0.05


@pytest.fixture
def editor(api, django_user_model):
    """The operator's API client, its user granted flows.add_flow and flows.change_flow (writing a definition
    needs them)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.get(username="operator")
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="flows", codename__in=["add_flow", "change_flow"])
    )
    return api
