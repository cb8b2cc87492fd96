from django.contrib import admin
from django.utils.html import format_html

from .models import PowerAction, ServiceControl, WindowStop


@admin.register(ServiceControl)
class ServiceControlAdmin(admin.ModelAdmin):
    list_display = ["module", "backend", "target", "stop_grace_sec", "pid", "pid_started_at", "busy_with"]
    list_filter = ["backend"]
    search_fields = ["module__slug", "compose_service", "systemd_unit"]
    list_select_related = ["module"]
    fields = ["module", "backend", "command", "compose_service", "systemd_unit", "stop_grace_sec", "pid", "pid_started_at", "busy_since", "busy_with"]
    readonly_fields = ["pid", "pid_started_at", "busy_since", "busy_with"]

    @admin.display(description="runs")
    def target(self, obj):
        return " ".join(obj.argv("start"))


@admin.register(PowerAction)
class PowerActionAdmin(admin.ModelAdmin):
    list_display = ["at", "actor", "action", "service", "applied", "result", "http_status", "message", "duration_ms", "parent"]
    list_filter = ["result", "action", "applied", "service"]
    search_fields = ["service", "actor", "message"]
    date_hierarchy = "at"
    readonly_fields = ["evidence"]

    @admin.display(description="evidence folder")
    def evidence(self, obj):
        return format_html("<code>{}</code>", obj.evidence_path or "—")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WindowStop)
class WindowStopAdmin(admin.ModelAdmin):
    """The stops of expired ttl windows: pending ones are tried again by the checker, given-up ones need a person."""

    list_display = ["window", "module", "state", "attempts", "retry_at", "last_action"]
    list_filter = ["state"]
    list_select_related = ["window", "module", "last_action"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
