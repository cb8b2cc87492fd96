"""/madre/...: madre's power paths (included once from vx11_site/urls.py)."""

from .api import madre_api

urlpatterns = madre_api.urls[0]
app_name = madre_api.urls[1]
