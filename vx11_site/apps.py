from django.apps import AppConfig


class Vx11SiteConfig(AppConfig):
    """The frame as an app only so it can hold the `vx11` command and the portal health view."""

    name = "vx11_site"
    verbose_name = "VX11 portal"
