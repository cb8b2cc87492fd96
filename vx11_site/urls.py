from django.contrib import admin
from django.urls import include, path

from .api import api
from .views import portal_health

admin.site.site_header = "VX11 Ops Portal"
admin.site.site_title = "VX11 Ops Portal"
admin.site.index_title = "Fleet control"

urlpatterns = [
    path("health", portal_health, name="portal-health"),
    path("api/", api.urls),
    path("admin/", admin.site.urls),
    path("madre/", include("apps.power.urls", namespace="madre-power")),
    path("", include("apps.operator.urls")),
]
