from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


class Vx11SiteConfig(AppConfig):
    """The frame as an app so it can hold the `vx11` command, the portal health view and the beat schedules."""

    name = "vx11_site"
    verbose_name = "VX11 portal"

    def ready(self) -> None:
        from . import outbound, schedules

        outbound.rules()  # a bad VX11_OUTBOUND_ALLOW/DENY entry stops the start-up, not the first request
        # Django sends post_migrate once per app that has models, with that app as sender; this app has none.
        # django_celery_beat holds the schedule tables, so it is always installed and its signal comes once per
        # migrate or flush: the schedules are stored then.
        post_migrate.connect(
            schedules.on_post_migrate,
            sender=apps.get_app_config("django_celery_beat"),
            dispatch_uid="vx11_site.schedules",
        )
