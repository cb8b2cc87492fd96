from django.urls import re_path

from .consumers import EventConsumer

websocket_urlpatterns = [
    re_path(r"^ws/(?P<session_id>[^/]+)/?$", EventConsumer.as_asgi()),
]
