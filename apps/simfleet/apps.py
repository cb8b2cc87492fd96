from django.apps import AppConfig


class SimfleetConfig(AppConfig):
    name = "apps.simfleet"
    verbose_name = "Demo fleet (simulator)"
