from django.urls import path

from . import views

app_name = "operator"

urlpatterns = [
    path("operator/vx11/overview", views.vx11_overview, name="vx11-overview"),
    path("operator/shub/dashboard", views.shub_dashboard, name="shub-dashboard"),
    path("operator/resources", views.resources, name="resources"),
    path("operator/console", views.console, name="operator-console"),
]
