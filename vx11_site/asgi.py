"""HTTP goes to Django; WebSocket (/ws/{session_id}) to the operator app's consumer."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vx11_site.settings")
django_asgi = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from apps.fleet.watchdog import Watchdog  # noqa: E402
from apps.operator.routing import websocket_urlpatterns  # noqa: E402


async def http(scope, receive, send):
    # the scheduler watchdog runs in the serving process (why there: apps.fleet.watchdog); daphne has no
    # lifespan events, and starting it on import would start it in every process that imports this app
    Watchdog.ensure_running()
    await django_asgi(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http,
        # the session cookie lets a logged-in staff user (the live admin pages) in without a token
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
