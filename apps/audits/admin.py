import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from vx11_site import display
from vx11_site.display import RecordAdmin, RecordInline
from vx11_site.permissions import missing, require

from .models import AuditRun, Finding, MapTable, OwnershipRule

STATUS_COLOURS = {"ok": "passed", "findings": "retrying", "error": "failed"}  # a colour word of display.badge
UNOWNED = "#cf222e"


def badge(status: str) -> str:
    return display.badge(status, status=status) if status not in STATUS_COLOURS else _coloured(status)


def _coloured(status: str) -> str:
    colour = display.STATUS_COLOURS.get(STATUS_COLOURS[status], display.NEUTRAL)
    return format_html(
        '<span class="vx11-badge" data-status="{}" style="background:{};color:#fff;padding:2px 8px;'
        'border-radius:10px;font-weight:600">{}</span>',
        status,
        colour,
        status,
    )


def pretty(value) -> str:
    return format_html(
        "<pre style='white-space:pre-wrap;max-height:40em;overflow:auto'>{}</pre>",
        json.dumps(value, indent=2, default=str),
    )


class RunForm(forms.Form):
    kind = forms.ChoiceField(choices=AuditRun.Kind.choices, initial=AuditRun.Kind.ALL)
    approx = forms.BooleanField(required=False, help_text="estimate row counts instead of COUNT(*)")


class FindingInline(RecordInline):
    model = Finding
    fields = ("severity_badge", "check_name", "table", "message", "count", "first_lines")

    @admin.display(description="severity")
    def severity_badge(self, finding):
        return badge({"error": "error", "warning": "findings"}.get(finding.severity, finding.severity))

    @admin.display(description="SQLite's own lines (first 100)")
    def first_lines(self, finding):
        if not finding.lines:
            return "-"
        return format_html("<pre style='max-height:12em;overflow:auto;margin:0'>{}</pre>", "\n".join(finding.lines))


@admin.register(AuditRun)
class AuditRunAdmin(RecordAdmin):
    list_display = (
        "id",
        "kind",
        "status_badge",
        "progress",
        "target",
        "trigger",
        "actor",
        "created_at",
        "findings_count",
        "map_link",
    )
    list_filter = ("kind", "status", "trigger")
    search_fields = ("target", "evidence_path")
    inlines = [FindingInline]
    fields = (
        "kind",
        "status_badge",
        "progress",
        "step",
        "target",
        "approx",
        "trigger",
        "actor",
        "created_at",
        "started_at",
        "ended_at",
        "error",
        "evidence_path",
        "map_link",
        "diff_view",
        "result_view",
    )
    readonly_fields = fields
    change_list_template = "admin/audits/auditrun/change_list.html"

    @admin.display(description="status", ordering="status")
    def status_badge(self, run):
        return badge(run.status)

    def get_queryset(self, request):
        # the list's findings column, counted in the list's own query rather than one query per row
        real = ~Q(findings__severity=Finding.Severity.INFO)
        return super().get_queryset(request).annotate(real_findings=Count("findings", filter=real))

    @admin.display(description="findings", ordering="real_findings")
    def findings_count(self, run):
        return run.real_findings

    @admin.display(description="DB map")
    def map_link(self, run):
        if not run.map_tables.exists():
            return "-"
        url = reverse("admin:audits_maptable_changelist") + f"?run__id__exact={run.id}"
        return format_html('<a href="{}">{} tables</a>', url, run.map_tables.count())

    @admin.display(description="changes since the previous map")
    def diff_view(self, run):
        diff = run.diff or {}
        if not diff:
            return "-"
        if diff.get("previous_run") is None:
            return diff.get("note", "first map")
        changed = format_html_join(
            "",
            "<li>{}: {} → {}</li>",
            ((c["table"], c["from"] or "unowned", c["to"] or "unowned") for c in diff["owner_changed"]),
        )
        return format_html(
            "against run #{}<br>added: {}<br>dropped: {}<br>owner changed:<ul>{}</ul>",
            diff["previous_run"],
            ", ".join(diff["added"]) or "none",
            ", ".join(diff["dropped"]) or "none",
            changed or format_html("<li>none</li>"),
        )

    @admin.display(description="result")
    def result_view(self, run):
        return pretty(run.result)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [path("run/", view(self.run_view), name="audits_auditrun_run"), *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra_context = extra_context or {}
        extra_context["can_run"] = missing(request.user, "audits.run_audit") is None
        extra_context["run_form"] = RunForm()
        return super().changelist_view(request, extra_context)

    def run_view(self, request):
        """ "Run an audit": the form (GET), or queue a run for a worker and show its page (POST)."""
        require(request.user, "running an audit", "audits.run_audit")
        form = RunForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            kind, approx = form.cleaned_data["kind"], form.cleaned_data["approx"]
            run = AuditRun.queue(kind, approx=approx, trigger="admin", user=request.user)
            self.message_user(request, f"audit {run.kind} queued as run #{run.id}", messages.SUCCESS)
            return redirect("admin:audits_auditrun_change", run.id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Run an audit",
            "form": form,
            "target": settings.VX11_TARGET_DB,
        }
        return TemplateResponse(request, "admin/audits/auditrun/run.html", context)


class OwnedFilter(admin.SimpleListFilter):
    title = "owner"
    parameter_name = "owned"

    def lookups(self, request, model_admin):
        return [("yes", "owned"), ("no", "unowned")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(module="")
        if self.value() == "no":
            return queryset.filter(module="")
        return queryset


@admin.register(MapTable)
class MapTableAdmin(RecordAdmin):
    """The DB map as a sortable table; without a run chosen, the latest map."""

    list_display = (
        "name",
        "owner",
        "status",
        "rows_shown",
        "owner_source",
        "columns_count",
        "foreign_keys_shown",
        "run",
    )
    list_filter = ("status", OwnedFilter, "module")
    search_fields = ("name", "module")
    list_per_page = 200
    fields = (
        "run",
        "name",
        "owner",
        "status",
        "rows_shown",
        "owner_source",
        "columns_view",
        "foreign_keys_view",
        "indexes_view",
    )
    readonly_fields = fields

    def changelist_view(self, request, extra_context=None):
        if "run__id__exact" not in request.GET:
            latest = (
                AuditRun.objects.filter(map_tables__isnull=False).order_by("-id").values_list("id", flat=True).first()
            )
            if latest is not None:
                query = request.GET.copy()
                query["run__id__exact"] = str(latest)
                return redirect(f"{request.path}?{query.urlencode()}")
        return super().changelist_view(request, extra_context)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("run")

    @admin.display(description="module", ordering="module")
    def owner(self, table):
        if table.module:
            return table.module
        return format_html('<strong style="color:{}" class="vx11-unowned">UNOWNED</strong>', UNOWNED)

    @admin.display(description="rows", ordering="rows")
    def rows_shown(self, table):
        if table.rows is None:
            return "NV"
        return f"~{table.rows} (approximate)" if table.rows_approx else str(table.rows)

    @admin.display(description="columns")
    def columns_count(self, table):
        return len(table.columns)

    @admin.display(description="foreign keys")
    def foreign_keys_shown(self, table):
        return ", ".join(f"{fk['from']} → {fk['table']}.{fk['to']}" for fk in table.foreign_keys) or "-"

    @admin.display(description="columns (cid, name, type, notnull, dflt_value, pk)")
    def columns_view(self, table):
        return pretty(table.columns)

    @admin.display(description="foreign keys")
    def foreign_keys_view(self, table):
        return pretty(table.foreign_keys)

    @admin.display(description="indexes")
    def indexes_view(self, table):
        return pretty(table.indexes)

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(OwnershipRule)
class OwnershipRuleAdmin(admin.ModelAdmin):
    list_display = ("pattern", "module", "note", "created_at")
    list_filter = ("module",)
    search_fields = ("pattern", "note", "module__slug")
    fields = ("pattern", "module", "note")
