"""Evidence bags in the admin: listed with their state (red once tampered), re-hashed or re-sealed by action."""

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from vx11_site.display import RecordAdmin, badge
from vx11_site.permissions import require

from .models import Evidence


@admin.action(description="Verify (re-hash) selected bags", permissions=["verify"])
def verify_bags(modeladmin, request, queryset):
    require(request.user, "verifying evidence", "evidence.verify_evidence")
    found: dict[str, list[str]] = {}
    for row in queryset:
        result = row.verify()
        if row.flagged:
            files = ", ".join(f["file"] for f in row.findings) or result["detail"]
            found.setdefault(row.state, []).append(f"{row.name} ({files})")
    if not found:
        modeladmin.message_user(request, f"{queryset.count()} bag(s) verified: all valid.", messages.SUCCESS)
        return
    for state, bags in found.items():
        modeladmin.message_user(request, f"{state}: {'; '.join(bags)}", messages.ERROR)


@admin.action(description="Re-seal selected bags (accept them as they are now)", permissions=["reseal"])
def reseal_bags(modeladmin, request, queryset):
    require(request.user, "re-sealing evidence", "evidence.reseal_evidence")
    done = []
    for row in queryset:
        try:
            row.reseal(request.user, "re-sealed in the admin")
        except (OSError, ValueError) as exc:
            modeladmin.message_user(request, f"{row.name}: not re-sealed: {exc}", messages.ERROR)
            continue
        done.append(row.name)
    if done:
        modeladmin.message_user(request, f"Re-sealed: {', '.join(done)}.", messages.SUCCESS)


@admin.register(Evidence)
class EvidenceAdmin(RecordAdmin):
    list_display = ["path", "kind", "run_id", "state_badge", "last_result", "created_at", "verified_at"]
    list_filter = ["state", "kind"]
    search_fields = ["path", "run_id"]
    date_hierarchy = "created_at"
    actions = [verify_bags, reseal_bags]
    readonly_fields = [
        "path",
        "kind",
        "run_id",
        "state_badge",
        "last_result",
        "created_at",
        "verified_at",
        "detail",
        "finding_list",
        "payload_oxum",
        "manifest_sha256",
        "tagmanifest_sha256",
        "resealed_by",
        "resealed_at",
        "reseal_note",
        "folder",
    ]
    exclude = ["state", "findings"]

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj):
        return badge(obj.state)

    @admin.display(description="findings")
    def finding_list(self, obj):
        if not obj.findings:
            return "—"
        rows = ((f["problem"], f["file"], f.get("why", "")) for f in obj.findings)
        return format_html("<ul>{}</ul>", format_html_join("", "<li><b>{}</b> <code>{}</code> {}</li>", rows))

    @admin.display(description="folder on disk")
    def folder(self, obj):
        return format_html("<code>{}</code>", obj.folder())

    def has_delete_permission(self, request, obj=None):
        return False  # a row leaves with its bag (rotation, power's prune); deleting it would hide a flagged bag

    def has_verify_permission(self, request):
        return request.user.has_perm("evidence.verify_evidence")

    def has_reseal_permission(self, request):
        return request.user.has_perm("evidence.reseal_evidence")
