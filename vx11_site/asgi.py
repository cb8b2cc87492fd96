"""HTTP goes to Django; WebSocket (/ws/{session_id}) to the operator app's consumer."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vx11_site.settings")
django_asgi = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from apps.operator.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi,
        # the session cookie lets a logged-in staff user (the live admin pages) in without a token
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
