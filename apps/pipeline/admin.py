"""The pipeline in the admin: the runs with their status and verdict, "Start a run", and a run's page: its seven
phases as a timeline (live while it goes, static/vx11/pipeline.js), its interventions, bag and mirror commit,
and "Cancel" while it is unfinished. Read-only: the runs are the portal's record."""

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from vx11_site import display
from vx11_site.display import RecordAdmin
from vx11_site.permissions import missing, require

from . import runner
from .models import Busy, PipelineRun
from .phases import PHASES

PERMISSION = "pipeline.run_pipeline"
# the run's and the phases' words as display.py's colour words (pipeline.js gets the resolved colours)
COLOUR_WORDS = {"ok": "passed", "findings": "retrying", "pending": "unknown", "interrupted": "expired"}
UNFINISHED = [str(status) for status in PipelineRun.UNFINISHED]


def colour(status: str) -> str:
    return display.STATUS_COLOURS.get(COLOUR_WORDS.get(status, status), display.NEUTRAL)


def badge(status: str, **data) -> str:
    return display.badge(status, css_class="vx11-pipeline-badge", colour=colour(status), **data)


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def timeline(run: PipelineRun) -> list[dict]:
    """The rows of the run page's timeline: each phase with its badge, duration, bar width and evidence links."""
    phases = list(run.phase_runs.all())
    longest = max((p.duration_seconds or 0 for p in phases), default=0) or 1
    rows = []
    for phase in phases:
        phase.run = run
        rows.append(
            {
                "phase": phase,
                "badge": badge(phase.status, phase=phase.number),
                "duration": seconds(phase.duration_seconds),
                "bar": round(100 * (phase.duration_seconds or 0) / longest, 1),
                "colour": colour(phase.status),
                "files": phase.evidence_files(),
            }
        )
    return rows


def duration_chart(last: int = 50) -> str:
    """The wall time of the latest ended runs, in all and of the runner phase (the long one), to compare over time."""
    runs = list(
        PipelineRun.objects.exclude(started_at=None).exclude(ended_at=None).prefetch_related("phase_runs")[:last]
    )[::-1]
    runner_seconds = [
        (run.started_at, next((p.duration_seconds for p in run.phase_runs.all() if p.number == 3), None))
        for run in runs
    ]
    return display.svg_chart(
        {"whole run": [(run.started_at, run.duration_seconds) for run in runs], "phase 3 runner": runner_seconds},
        unit="s",
        title=f"wall time of the latest {len(runs)} pipeline runs",
    )


class StartForm(forms.Form):
    phases = forms.TypedMultipleChoiceField(
        choices=[(p.number, f"{p.number}. {p.title}") for p in PHASES],
        coerce=int,
        initial=[p.number for p in PHASES],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="none ticked: all seven",
    )


@admin.register(PipelineRun)
class PipelineRunAdmin(RecordAdmin):
    list_display = (
        "id",
        "status_badge",
        "verdict_shown",
        "trigger",
        "actor",
        "started_at",
        "duration",
        "manual_interventions",
        "mirror_pushed",
    )
    list_filter = ("status", "trigger", "verdict", "mirror_pushed")
    search_fields = ("actor", "evidence_path", "mirror_commit")
    fields = (
        "status_badge",
        "verdict_shown",
        "trigger",
        "actor",
        "phases",
        "created_at",
        "started_at",
        "ended_at",
        "duration",
        "cancel_requested",
        "error",
        "manual_interventions",
        "interventions_view",
        "evidence_path",
        "mirror_view",
        "scorecard_link",
        "api_link",
    )
    readonly_fields = fields
    change_list_template = "admin/pipeline/pipelinerun/change_list.html"
    change_form_template = "admin/pipeline/pipelinerun/change_form.html"

    @admin.display(description="status", ordering="status")
    def status_badge(self, run):
        return badge(run.status, pipeline_run=run.id)

    @admin.display(description="verdict", ordering="verdict")
    def verdict_shown(self, run):
        return run.verdict or "NV"

    @admin.display(description="duration")
    def duration(self, run):
        return seconds(run.duration_seconds)

    @admin.display(description="human actions while it ran")
    def interventions_view(self, run):
        if not run.interventions:
            return "none"
        return format_html(
            "<ul style='margin:0'>{}</ul>",
            format_html_join(
                "",
                "<li>{} {} by {}: {}</li>",
                ((i.get("at", ""), i.get("kind", ""), i.get("user", ""), i.get("what", "")) for i in run.interventions),
            ),
        )

    @admin.display(description="mirror")
    def mirror_view(self, run):
        if not run.mirror_commit:
            return "—"
        return format_html(
            "<code>{}</code> ({})", run.mirror_commit, "pushed" if run.mirror_pushed else "not pushed yet"
        )

    @admin.display(description="scorecard")
    def scorecard_link(self, run):
        if not run.scorecard_id:
            return "—"
        url = reverse("admin:metrics_scorecard_page") + f"?id={run.scorecard_id}"
        return format_html('<a href="{}">scorecard #{}</a>', url, run.scorecard_id)

    @admin.display(description="API")
    def api_link(self, run):
        return format_html('<a href="{}">{}</a>', run.api_url, run.api_url)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("start/", view(self.start_view), name="pipeline_pipelinerun_start"),
            path("<int:run_id>/cancel/", view(self.cancel_view), name="pipeline_pipelinerun_cancel"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_run": missing(request.user, PERMISSION) is None,
            "running": PipelineRun.running(),
            "duration_chart": duration_chart(),
        }
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = PipelineRun.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        extra_context = extra_context or {}
        if run is not None:
            extra_context.update(
                {
                    "timeline": timeline(run),
                    "live": not run.finished,
                    "can_cancel": not run.finished and missing(request.user, PERMISSION) is None,
                    "pipeline_page": {
                        "run": run.id,
                        "api": run.api_url,
                        "unfinished": UNFINISHED,
                        "colours": {s: colour(s) for s in {*PipelineRun.Status.values, "pending", "skipped"}},
                        "folders": {p.number: p.folder for p in PHASES},
                    },
                }
            )
        return super().change_view(request, object_id, form_url, extra_context)

    def start_view(self, request):
        """ "Start a run": the form (GET), or queue a run for the workers and show its page (POST); while another run
        goes, a message names it."""
        require(request.user, "starting a pipeline run", PERMISSION)
        form = StartForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                run = runner.start("admin", user=request.user, phases=form.cleaned_data["phases"] or None)
            except Busy as busy:
                going = busy.running
                if going is None:
                    self.message_user(request, str(busy), messages.ERROR)
                else:
                    self.message_user(
                        request,
                        format_html(
                            'Not started: <a href="{}">run #{}</a> is {}; one pipeline run at a time.',
                            reverse("admin:pipeline_pipelinerun_change", args=[going.id]),
                            going.id,
                            going.status,
                        ),
                        messages.ERROR,
                    )
                return redirect("admin:pipeline_pipelinerun_changelist")
            runner.queue(run)
            self.message_user(request, f"pipeline run #{run.id} queued (phases {run.phases})", messages.SUCCESS)
            return redirect("admin:pipeline_pipelinerun_change", run.id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Start a pipeline run",
            "form": form,
            "running": PipelineRun.running(),
        }
        return TemplateResponse(request, "admin/pipeline/pipelinerun/start.html", context)

    def cancel_view(self, request, run_id):
        """A running run's "Cancel" (POST): the phase going on finishes, the rest are skipped."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        require(request.user, "cancelling a pipeline run", PERMISSION)
        run = get_object_or_404(PipelineRun, pk=run_id)
        try:
            runner.cancel(run, request.user)
        except ValueError as exc:
            self.message_user(request, f"Not cancelled: {exc}", messages.ERROR)
        else:
            self.message_user(request, f"pipeline run #{run.id}: cancel asked for ({run.status})", messages.SUCCESS)
        return redirect("admin:pipeline_pipelinerun_change", run.id)
