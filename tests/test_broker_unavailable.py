"""A Celery publish that fails where no view expected it (kombu's OperationalError: the broker refused the
connection) is a 503 with Retry-After and a clear message, never a 500."""

import json

import pytest
from django.test import RequestFactory
from kombu.exceptions import OperationalError

from tests.helpers import celery_sends_to, free_port
from vx11_site.api import BROKER_RETRY_AFTER, on_broker_unreachable


def test_an_unreachable_broker_is_a_503_with_retry_after():
    from vx11_site.celery import app

    with celery_sends_to(f"redis://127.0.0.1:{free_port()}/0", "nowhere"), pytest.raises(OperationalError) as refused:
        app.send_task("celery.accumulate", args=(1,))  # a real refused connection, as any view's publish would meet
    response = on_broker_unreachable(RequestFactory().post("/api/anything"), refused.value)
    assert response.status_code == 503
    assert response["Retry-After"] == str(BROKER_RETRY_AFTER)
    detail = f"the task queue (Celery broker) is unreachable; try again in {BROKER_RETRY_AFTER} s"
    assert json.loads(response.content) == {"detail": detail}
