from django.apps import AppConfig


class Vx11SiteConfig(AppConfig):
    """The frame as an app only so it can hold the `vx11` command and the portal health view."""

    name = "vx11_site"
    verbose_name = "VX11 portal"

    def ready(self) -> None:
        from . import outbound

        outbound.rules()  # a bad VX11_OUTBOUND_ALLOW/DENY entry stops the start-up, not the first request
