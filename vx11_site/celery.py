"""The Celery app. Schedules live in django-celery-beat's tables, editable in the admin."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vx11_site.settings")

app = Celery("vx11_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
