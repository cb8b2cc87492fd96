"""The v7 operator endpoints' world: VX11_TOKEN set, the upstream budget and the overview's staleness at their
test values, and a client that sends the token."""

import pytest
from django.test import Client

from apps.fleet.models import Module
from tests.helpers import TOKEN
from tests.operator.helpers import ScriptedModule


@pytest.fixture(autouse=True)
def token(settings):
    settings.VX11_TOKEN = TOKEN
    settings.VX11_UPSTREAM_TIMEOUT = 3.0
    settings.VX11_OVERVIEW_STALE_SECONDS = 60


@pytest.fixture
def client():
    """Overrides pytest-django's client: this one sends the right X-VX11-Token."""
    return Client(headers={"X-VX11-Token": TOKEN})


@pytest.fixture
def scripted_module(fleet):
    """`scripted_module(slug, {path: json_text})` points the registry's `slug` at a ScriptedModule."""
    servers = []

    def point(slug: str, answers: dict[str, str]) -> ScriptedModule:
        server = ScriptedModule(answers).start()
        servers.append(server)
        Module.objects.filter(slug=slug).update(base_url=server.base_url)
        return server

    yield point
    for server in servers:
        server.stop()
