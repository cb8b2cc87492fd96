from django.apps import AppConfig


class PowerConfig(AppConfig):
    name = "apps.power"
    verbose_name = "Power"
