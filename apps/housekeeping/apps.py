from django.apps import AppConfig


class HousekeepingConfig(AppConfig):
    name = "apps.housekeeping"
    verbose_name = "Housekeeping"
