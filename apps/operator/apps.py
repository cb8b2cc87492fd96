from django.apps import AppConfig


class OperatorConfig(AppConfig):
    name = "apps.operator"
    verbose_name = "Operator backend v7"
