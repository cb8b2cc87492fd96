from django.apps import AppConfig


class DaughtersConfig(AppConfig):
    name = "apps.daughters"
    verbose_name = "Daughters"
