from datetime import datetime

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxValueValidator
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html

from apps.fleet.models import Module
from vx11_site.display import ConflictWhenProtected, RecordAdmin, badge

from . import manager
from .models import ACTIONS, PowerAction, ServiceControl, WindowStop


class ServiceForm(forms.Form):
    service = forms.SlugField(max_length=64)
    action = forms.ChoiceField(choices=[(a, a) for a in ACTIONS])
    apply = forms.BooleanField(required=False)


class ModeForm(forms.Form):
    mode = forms.ChoiceField(choices=[(m, m) for m in manager.MODES])
    apply = forms.BooleanField(required=False)


class WindowForm(forms.Form):
    services = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple)
    ttl_sec = forms.IntegerField(min_value=1, initial=600, label="TTL (seconds)")
    mode = forms.ChoiceField(
        choices=[("ttl", "ttl: stop the services when it expires"), ("hold", "hold: leave them as they are")],
        initial="ttl",
    )
    reason = forms.CharField(max_length=500, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["services"].choices = [
            (slug, slug) for slug in Module.objects.filter(enabled=True).values_list("slug", flat=True)
        ]
        self.fields["ttl_sec"].validators.append(MaxValueValidator(settings.VX11_POWER_WINDOW_MAX_TTL))


def form_errors(form) -> str:
    return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())


def report(request, row: PowerAction) -> None:
    """The audited row, told as a message: green when done or planned, red when refused or failed."""
    text = f"{row.action} {row.service}: {row.message}"
    if not row.applied and row.result == PowerAction.Result.OK and isinstance(row.plan.get("steps"), list):
        steps = "; ".join(s if isinstance(s, str) else f"{s['action']} {s['service']}" for s in row.plan["steps"])
        text = f"Plan for {row.action} {row.service}: {steps}. Nothing was done; press Apply to carry it out."
    level = messages.SUCCESS if row.result == PowerAction.Result.OK else messages.ERROR
    audit = f"audited as action #{row.id}" if row.id else "not audited: too many refusals this minute, see the log"
    messages.add_message(request, level, f"{text} ({audit})")


@admin.register(ServiceControl)
class ServiceControlAdmin(ConflictWhenProtected, admin.ModelAdmin):
    change_list_template = "admin/power/servicecontrol/change_list.html"
    list_display = ["module", "backend", "target", "stop_grace_sec", "pid", "pid_started_at", "busy_with"]
    list_filter = ["backend"]
    search_fields = ["module__slug", "compose_service", "systemd_unit"]
    list_select_related = ["module"]
    fields = [
        "module",
        "backend",
        "command",
        "compose_service",
        "systemd_unit",
        "stop_grace_sec",
        "pid",
        "pid_started_at",
        "busy_since",
        "busy_with",
    ]
    readonly_fields = ["pid", "pid_started_at", "busy_since", "busy_with"]

    @admin.display(description="runs")
    def target(self, obj):
        return " ".join(obj.argv("start"))

    def get_deleted_objects(self, objs, request):
        """A control whose process runs is not deleted, as its module is not (models.protect_running): the pid
        would be lost."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        running = [f"{control._meta.verbose_name} {control}: {control.in_use}" for control in objs if control.running()]
        return deleted, counts, perms_needed, [*protected, *running]

    def get_urls(self):
        return [
            path("console/", self.admin_site.admin_view(self.console_view), name="power_console"),
            *super().get_urls(),
        ]

    def console_view(self, request):
        """The power console: every module's state and backend with plan/start/stop/restart, the modes and
        the power window. Every button goes through manager.perform & co, so the guards, the rate limit and
        the audit row are the API's; a refusal is shown as the API would answer it."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            self.console_post(request)
            return redirect("admin:power_console")
        status = manager.power_status()
        for service in status["services"]:
            service["badge"] = badge(service["state"], module=service["service"], state=service["state"])
            service["never_stop"] = service["service"] in manager.NEVER_STOP
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Power console",
            "status": status,
            "can_control": request.user.has_perm("power.control_services"),
            "mode_form": ModeForm(),
            "window_form": WindowForm(),
            "actions": PowerAction.objects.filter(parent=None)[:20],
            "modes": manager.MODES,
            "window_ends": datetime.fromisoformat(status["window"]["expires_at"]) if status["window"] else None,
        }
        return TemplateResponse(request, "admin/power/console.html", context)

    def console_post(self, request) -> None:
        op = request.POST.get("op")
        if op == "service":
            form = ServiceForm(request.POST)
            if form.is_valid():
                return report(
                    request,
                    manager.perform(
                        request.user,
                        form.cleaned_data["service"],
                        form.cleaned_data["action"],
                        form.cleaned_data["apply"],
                    ),
                )
        elif op == "mode":
            form = ModeForm(request.POST)
            if form.is_valid():
                return report(
                    request, manager.perform_mode(request.user, form.cleaned_data["mode"], form.cleaned_data["apply"])
                )
        elif op == "window_open":
            form = WindowForm(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                opened = manager.open_window(
                    request.user, data["services"], data["ttl_sec"], data["mode"], data["reason"]
                )
                return report(request, opened.action)
        elif op == "window_close":
            return report(request, manager.close_window(request.user).action)
        else:
            return messages.error(request, f"unknown operation {op!r}")
        # refused before any guard ran: audited as the API audits a body that fails validation
        asked = {k: v for k, v in request.POST.lists() if k != "csrfmiddlewaretoken"}
        action = request.POST.get("action", "") if op == "service" else op
        service = request.POST.get("service") or request.POST.get("mode") or ",".join(request.POST.getlist("services"))
        row = manager.refuse_request(
            request.user,
            action,
            service,
            {"refused_by": "validation", "via": "admin console", "form": asked},
            422,
            f"nothing done: {form_errors(form)}",
        )
        report(request, row)


@admin.register(PowerAction)
class PowerActionAdmin(RecordAdmin):
    list_display = [
        "at",
        "actor",
        "action",
        "service",
        "applied",
        "result",
        "http_status",
        "message",
        "duration_ms",
        "parent",
    ]
    list_filter = ["result", "action", "applied", "service"]
    search_fields = ["service", "actor", "message"]
    date_hierarchy = "at"
    readonly_fields = ["evidence"]

    @admin.display(description="evidence folder")
    def evidence(self, obj):
        return format_html("<code>{}</code>", obj.evidence_path or "—")


@admin.register(WindowStop)
class WindowStopAdmin(RecordAdmin):
    """What power windows started and its stops: pending ones are tried again by the checker, given-up ones need a
    person, kept ones (hold windows; madre, tentaculo_link) stay running."""

    list_display = ["window", "module", "started_at", "state", "attempts", "retry_at", "last_action"]
    list_filter = ["state"]
    list_select_related = ["window", "module", "last_action"]
