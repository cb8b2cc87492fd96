from django.apps import AppConfig


class AuditsConfig(AppConfig):
    name = "apps.audits"
    verbose_name = "Audits"
