"""The Celery app. Schedules live in django-celery-beat's tables, editable in the admin."""

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

# the embedded broker (vx11_site.broker), resolved lazily by kombu in every process that uses this app
TRANSPORT_ALIASES["vx11sqla"] = "vx11_site.broker:Transport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vx11_site.settings")

app = Celery("vx11_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
