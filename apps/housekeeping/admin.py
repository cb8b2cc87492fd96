"""Housekeeping runs in the admin: read-only rows (what moved, refused, protected, the evidence bag), buttons to run
a dry run or apply (change list) and to restore an applied run (its page). Every button is a POST through the
admin's CSRF check and calls apps.housekeeping.runner, which checks the permission as the API and the CLI do."""

from pathlib import Path

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html, format_html_join

from vx11_site.display import RecordAdmin, badge

from . import runner
from .attic import RestoreRefused
from .guard import ExcludesError, load_excludes
from .models import HousekeepingRun


def paths_table(rows: list[dict], columns: list[str]):
    if not rows:
        return "—"
    head = format_html_join("", "<th>{}</th>", ((c,) for c in columns))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((row.get(c, ""),) for c in columns)),) for row in rows),
    )
    return format_html('<table style="width:100%"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', head, body)


@admin.register(HousekeepingRun)
class HousekeepingRunAdmin(RecordAdmin):
    change_list_template = "admin/housekeeping/housekeepingrun/change_list.html"
    change_form_template = "admin/housekeeping/housekeepingrun/change_form.html"
    list_display = [
        "id",
        "started_at",
        "actor",
        "via",
        "operation",
        "mode",
        "status_badge",
        "moved",
        "refused_count",
        "attic_stamp",
        "restored_at",
    ]
    list_filter = ["status", "applied", "operation", "via"]
    search_fields = ["actor", "attic_stamp", "message"]
    date_hierarchy = "started_at"
    fields = [
        "operation",
        "status",
        "applied",
        "started_at",
        "finished_at",
        "actor",
        "via",
        "root",
        "excludes_source",
        "message",
        "attic_stamp",
        "bytes_moved",
        "moves_table",
        "refused_table",
        "protected_table",
        "evidence_path",
        "restored_at",
        "restored_by",
        "restore_result",
    ]
    readonly_fields = fields

    @admin.display(description="mode")
    def mode(self, obj):
        return "applied" if obj.applied else "dry run"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, housekeeping_run=obj.pk)

    @admin.display(description="moved / planned")
    def moved(self, obj):
        return sum(1 for m in obj.moves if m.get("moved", True) is not False)

    @admin.display(description="refused")
    def refused_count(self, obj):
        return len(obj.refused) + len(obj.protected)

    @admin.display(description="moves (moved, or planned by a dry run)")
    def moves_table(self, obj):
        return paths_table(obj.moves, ["path", "stored", "size", "category", "reason", "moved"])

    @admin.display(description="refused by the guards")
    def refused_table(self, obj):
        return paths_table(obj.refused, ["path", "category", "reason"])

    @admin.display(description="protected (the run aborted)")
    def protected_table(self, obj):
        return paths_table(obj.protected, ["path", "category", "protected_by"])

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("run/", view(self.run_view), name="housekeeping_housekeepingrun_run"),
            path("<int:run_id>/restore/", view(self.restore_view), name="housekeeping_housekeepingrun_restore"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        user = request.user
        extra_context = {
            **(extra_context or {}),
            "can_run": user.has_perm("housekeeping.add_housekeepingrun"),
            "can_apply": user.has_perm("housekeeping.apply_housekeeping"),
        }
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        row = self.get_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "can_restore": row is not None
            and row.restorable
            and request.user.has_perm("housekeeping.restore_housekeeping"),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def run_view(self, request):
        """GET: what a run works on (the managed root, the protected-paths list) with the buttons; POST (the
        change list's and this page's "Dry run", "Apply", "Archive forensic/"): a run, then its page."""
        if request.method == "GET":
            return self.run_page(request)
        if request.method != "POST":
            return HttpResponseNotAllowed(["GET", "POST"])
        if request.POST.get("operation") == "archive_forensic":
            row = runner.archive_forensic(request.user, via="admin")
        else:
            row = runner.run(request.user, apply=request.POST.get("apply") == "1", via="admin")
        level = messages.SUCCESS if row.exit_code == 0 else messages.WARNING
        self.message_user(request, f"Housekeeping #{row.pk}: {row.message}", level)
        return redirect("admin:housekeeping_housekeepingrun_change", row.pk)

    def run_page(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        root = Path(settings.VX11_ROOT)
        try:
            excludes = load_excludes(root.resolve()) if root.is_dir() else None
            problem = "" if excludes else f"the managed root {root} is missing: a run would end in an error"
        except ExcludesError as exc:
            excludes, problem = None, f"{exc}: a run would move nothing"
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Run housekeeping",
            "root": root,
            "excludes": excludes,
            "problem": problem,
            "can_run": request.user.has_perm("housekeeping.add_housekeepingrun"),
            "can_apply": request.user.has_perm("housekeeping.apply_housekeeping"),
            "recent": HousekeepingRun.objects.all()[:10],
        }
        return TemplateResponse(request, "admin/housekeeping/housekeepingrun/run.html", context)

    def restore_view(self, request, run_id):
        """A run page's "Restore" button (POST): everything it moved goes back, or nothing does."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        row = get_object_or_404(HousekeepingRun, pk=run_id)
        if not row.restorable:
            self.message_user(request, f"Housekeeping #{row.pk} has nothing to restore.", messages.ERROR)
            return redirect("admin:housekeeping_housekeepingrun_change", row.pk)
        try:
            result = runner.restore(request.user, row.attic_stamp, via="admin")
        except RestoreRefused as exc:
            self.message_user(request, f"Restore refused, nothing moved: {exc}", messages.ERROR)
            return redirect("admin:housekeeping_housekeepingrun_change", row.pk)
        level = messages.SUCCESS if not result["mismatches"] else messages.WARNING
        differs = f"; {len(result['mismatches'])} differ from the manifest" if result["mismatches"] else ""
        self.message_user(
            request,
            f"Restored {len(result['restored'])} path(s) from attic/{row.attic_stamp}/; "
            f"{result['files_verified']} file(s) match the manifest{differs}.",
            level,
        )
        return redirect("admin:housekeeping_housekeepingrun_change", row.pk)
