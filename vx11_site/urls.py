from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from apps.metrics.prometheus import metrics_view

from .api import api, no_such_endpoint
from .views import favicon, portal_health

admin.site.site_header = "VX11 Ops Portal"
admin.site.site_title = "VX11 Ops Portal"
admin.site.index_title = "Fleet control"
# the admin header's "View site": the portal's home, which is the admin itself
admin.site.site_url = "/"

urlpatterns = [
    # not permanent: browsers would cache a 301 and keep skipping a home page added later
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False), name="home"),
    path("favicon.ico", favicon, name="favicon"),
    path("health", portal_health, name="portal-health"),
    path("metrics", metrics_view, name="prometheus-metrics"),  # Prometheus text format, VX11_METRICS_KEY
    path("api/", api.urls),
    path("admin/", admin.site.urls),
    path("madre/", include("apps.power.urls", namespace="madre-power")),
    re_path(r"^(?:api|madre)(?:/|$)", no_such_endpoint),  # after every API route: an unknown path gets JSON too
    path("", include("apps.operator.urls")),
]
