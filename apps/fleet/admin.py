from datetime import timedelta

from django.contrib import admin, messages
from django.utils import timezone
from django.utils.timesince import timesince

from vx11_site.display import ConflictWhenProtected, RecordAdmin, badge, svg_chart

from .models import HealthCheck, Module, Rollup, StateChange
from .probe import run_round


@admin.action(description="Probe now", permissions=["change"])  # fleet.change_module, as the API's probe
def probe_now(modeladmin, request, queryset):
    results, changes = run_round(list(queryset))
    failed = [r.slug for r in results if r.outcome == "fail"]
    level = messages.WARNING if failed else messages.SUCCESS
    text = f"Probed {len(results)} module(s); {len(changes)} state change(s)."
    if failed:
        text += f" Failing: {', '.join(sorted(failed))}."
    modeladmin.message_user(request, text, level)


# what the probe rounds write: shown, never edited
CURRENT_STATE = [
    "state",
    "state_since",
    "last_checked_at",
    "last_outcome",
    "last_status_code",
    "last_latency_ms",
    "last_status_value",
    "last_error",
    "uptime_24h",
    "uptime_7d",
    "uptime_30d",
]


@admin.register(Module)
class ModuleAdmin(ConflictWhenProtected, admin.ModelAdmin):
    list_display = [
        "slug",
        "status_badge",
        "latency",
        "uptime",
        "last_change",
        "core",
        "enabled",
        "simulated",
        "base_url",
        "last_error",
    ]
    list_display_links = ["slug"]
    list_filter = ["state", "core", "enabled", "simulated"]
    search_fields = ["slug", "name", "base_url", "role"]
    actions = [probe_now]
    readonly_fields = ["port", *CURRENT_STATE]
    fieldsets = [
        (None, {"fields": ["slug", "name", "role", "core", "enabled", "simulated", "owned_tables"]}),
        ("Address", {"fields": ["base_url", "health_path", "port"]}),
        ("Probe", {"fields": ["accepted_statuses", "timeout", "degraded_latency_ms", "down_after", "up_after"]}),
        (
            "Current state",
            {"fields": CURRENT_STATE},
        ),
    ]
    change_list_template = "admin/fleet/module/change_list.html"
    change_form_template = "admin/fleet/module/change_form.html"

    @admin.display(description="status", ordering="state")
    def status_badge(self, obj):
        return badge(obj.state, module=obj.slug, state=obj.state)

    @admin.display(description="last latency", ordering="last_latency_ms")
    def latency(self, obj):
        return "—" if obj.last_latency_ms is None else f"{obj.last_latency_ms:.1f} ms"

    @admin.display(description="uptime 24 h", ordering="uptime_24h")
    def uptime(self, obj):
        return "—" if obj.uptime_24h is None else f"{obj.uptime_24h:.2f} %"

    @admin.display(description="last change", ordering="state_since")
    def last_change(self, obj):
        return "—" if obj.state_since is None else f"{timesince(obj.state_since)} ago"

    def changelist_view(self, request, extra_context=None):
        from .models import MaintenanceWindow

        windows = MaintenanceWindow.active_at(timezone.now()).select_related("created_by").prefetch_related("modules")
        extra_context = {**(extra_context or {}), "fleet_summary": Module.fleet_summary(), "active_windows": windows}
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        module = self.get_object(request, object_id)
        if module is not None:
            since = timezone.now() - timedelta(hours=24)
            minutes = list(
                Rollup.objects.filter(module=module, period=Rollup.Period.MINUTE, bucket_start__gte=since).order_by(
                    "bucket_start"
                )
            )
            recent = list(HealthCheck.objects.filter(module=module).order_by("-checked_at")[:60])[::-1]
            extra_context["rollup_chart"] = svg_chart(
                {
                    "avg": [(r.bucket_start, r.latency_avg) for r in minutes],
                    "p95": [(r.bucket_start, r.latency_p95) for r in minutes],
                }
            )
            extra_context["recent_chart"] = svg_chart(
                {"latency": [(c.checked_at, c.latency_ms) for c in recent]}, title="latency of the latest checks"
            )
            extra_context["recent_failures"] = sum(c.outcome == "fail" for c in recent)
            extra_context["recent_count"] = len(recent)
            extra_context["state_changes"] = module.state_changes.order_by("-at")[:50]
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(StateChange)
class StateChangeAdmin(RecordAdmin):
    list_display = ["at", "module", "from_state", "to_state", "reason"]
    list_filter = ["to_state", "module"]
    date_hierarchy = "at"


# --- Notifications and maintenance windows ------------------------------------------------

from .models import Delivery, MaintenanceWindow, NotificationChannel  # noqa: E402


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "target", "scope", "signed", "enabled", "created"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "target"]
    filter_horizontal = ["modules"]
    fields = ["name", "kind", "target", "secret", "modules", "enabled"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("modules")

    @admin.display(description="modules")
    def scope(self, obj):
        slugs = [m.slug for m in obj.modules.all()]
        return ", ".join(slugs) if slugs else "all modules"

    @admin.display(description="signed", boolean=True)
    def signed(self, obj):
        return bool(obj.secret) if obj.kind == NotificationChannel.Kind.WEBHOOK else None


@admin.register(Delivery)
class DeliveryAdmin(RecordAdmin):
    list_display = [
        "created",
        "module",
        "change",
        "channel",
        "status",
        "attempts",
        "next_attempt_at",
        "sent_at",
        "last_error",
    ]
    list_filter = ["status", "channel", "state_change__module"]
    list_select_related = ["channel", "state_change__module"]
    date_hierarchy = "created"

    @admin.display(description="module", ordering="state_change__module__slug")
    def module(self, obj):
        return obj.state_change.slug

    @admin.display(description="change")
    def change(self, obj):
        return f"{obj.state_change.from_state} → {obj.state_change.to_state}"


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(admin.ModelAdmin):
    list_display = [
        "starts_at",
        "ends_at",
        "covered",
        "reason",
        "source",
        "mode",
        "closed_at",
        "active_now",
        "created_by",
    ]
    list_filter = ["source", "mode", "modules"]
    search_fields = ["reason"]
    filter_horizontal = ["modules"]
    fields = [
        "modules",
        "starts_at",
        "ends_at",
        "reason",
        "source",
        "mode",
        "closed_at",
        "expired_handled_at",
        "created_by",
        "created",
    ]
    readonly_fields = ["created_by", "created", "source", "expired_handled_at"]
    date_hierarchy = "starts_at"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("created_by").prefetch_related("modules")

    @admin.display(description="modules")
    def covered(self, obj):
        return ", ".join(m.slug for m in obj.modules.all())

    @admin.display(description="active now", boolean=True)
    def active_now(self, obj):
        return obj.is_active()

    def save_model(self, request, obj, form, change):
        if obj.created_by_id is None:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
