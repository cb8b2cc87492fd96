"""The scorecard in the admin: the scorecard page (every metric at a glance, live), the stored scorecards with
their metrics, the stored test runs, and "Compute now"."""

import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from vx11_site.display import RecordAdmin, RecordInline
from vx11_site.permissions import missing, require, username

from . import board
from .models import MetricSnapshot, Scorecard, TestRun
from .snapshot import take_snapshot

COMPUTE_PERMISSION = "metrics.add_scorecard"


def verdict_badge(verdict: str) -> str:
    return format_html(
        '<span class="vx11-verdict" data-verdict="{}" style="background:{};color:#fff;padding:2px 8px;'
        'border-radius:10px;font-weight:600">{}</span>',
        verdict,
        board.VERDICT_COLOURS.get(verdict, board.NEUTRAL),
        verdict,
    )


def status_badge(status: str) -> str:
    return format_html(
        '<span class="vx11-metric-status" data-status="{}" style="background:{};color:#fff;padding:2px 8px;'
        'border-radius:10px;font-weight:600">{}</span>',
        status,
        board.METRIC_COLOURS.get(status, board.NEUTRAL),
        status,
    )


def pretty(value) -> str:
    return format_html("<pre style='white-space:pre-wrap;margin:0'>{}</pre>", json.dumps(value, indent=2, default=str))


class MetricInline(RecordInline):
    model = MetricSnapshot
    fields = ("name", "value_shown", "status_shown", "calculation", "reason", "evidence_path")

    @admin.display(description="value")
    def value_shown(self, metric):
        return board.shown(metric.value)

    @admin.display(description="status")
    def status_shown(self, metric):
        return status_badge(metric.status)


@admin.register(Scorecard)
class ScorecardAdmin(RecordAdmin):
    list_display = ("id", "generated_at", "verdict_shown", "coverage_shown", "actor", "page_link")
    list_filter = ("verdict",)
    search_fields = ("actor", "evidence_path")
    date_hierarchy = "generated_at"
    inlines = [MetricInline]
    fields = (
        "generated_at",
        "verdict_shown",
        "actor",
        "page_link",
        "evidence_path",
        "percentages_sha256",
        "scorecard_sha256",
        "coverage_view",
        "decision_logic_view",
    )
    readonly_fields = fields
    change_list_template = "admin/metrics/scorecard/change_list.html"

    @admin.display(description="verdict", ordering="verdict")
    def verdict_shown(self, scorecard):
        return verdict_badge(scorecard.verdict)

    @admin.display(description="coverage")
    def coverage_shown(self, scorecard):
        coverage = scorecard.coverage or {}
        return ", ".join(f"{k}: {board.shown(v)}" for k, v in coverage.items() if isinstance(v, int | float)) or "-"

    @admin.display(description="scorecard page")
    def page_link(self, scorecard):
        return format_html('<a href="{}?id={}">open</a>', reverse("admin:metrics_scorecard_page"), scorecard.pk)

    @admin.display(description="coverage")
    def coverage_view(self, scorecard):
        return pretty(scorecard.coverage)

    @admin.display(description="decision logic")
    def decision_logic_view(self, scorecard):
        return pretty(scorecard.decision_logic)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("page/", view(self.page_view), name="metrics_scorecard_page"),
            path("compute/", view(self.compute_view), name="metrics_scorecard_compute"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = extra_context or {}
        extra_context["can_compute"] = missing(request.user, COMPUTE_PERMISSION) is None
        return super().changelist_view(request, extra_context)

    def page_view(self, request):
        """The scorecard page: the latest scorecard, or ?id=N for an older one."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        chosen = request.GET.get("id", "")
        if chosen and not chosen.isdigit():
            return TemplateResponse(
                request, "admin/metrics/scorecard/page.html", self._page_context(request, None, chosen), status=400
            )
        scorecard = get_object_or_404(Scorecard, pk=int(chosen)) if chosen else Scorecard.latest()
        return TemplateResponse(request, "admin/metrics/scorecard/page.html", self._page_context(request, scorecard))

    def _page_context(self, request, scorecard, bad_id: str = "") -> dict:
        return {
            **self.admin_site.each_context(request),
            **board.board(scorecard),
            "opts": self.model._meta,
            "title": "Scorecard",
            "bad_id": bad_id,
            "follow_latest": not request.GET.get("id"),
            "can_compute": missing(request.user, COMPUTE_PERMISSION) is None,
        }

    def compute_view(self, request):
        """ "Compute now": the confirmation (GET), or take a snapshot here and show the page (POST)."""
        require(request.user, "computing a scorecard", COMPUTE_PERMISSION)
        if request.method == "POST":
            scorecard = take_snapshot(actor=username(request.user))
            self.message_user(request, f"scorecard #{scorecard.pk} computed: {scorecard.verdict}", messages.SUCCESS)
            return redirect("admin:metrics_scorecard_page")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Compute the scorecard now",
        }
        return TemplateResponse(request, "admin/metrics/scorecard/compute.html", context)


@admin.register(TestRun)
class TestRunAdmin(RecordAdmin):
    list_display = ("id", "kind", "outcome", "passed", "failed", "errors", "skipped", "source", "created_at")
    list_filter = ("kind", "source")
    search_fields = ("evidence",)
    fields = ("kind", "outcome", "passed", "failed", "errors", "skipped", "source", "created_at", "evidence")
    readonly_fields = fields

    @admin.display(description="result")
    def outcome(self, run):
        return status_badge(MetricSnapshot.Status.OK if run.succeeded else MetricSnapshot.Status.FAIL)
