from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django_celery_beat.models import PeriodicTask

from vx11_site import display
from vx11_site.display import RecordAdmin, svg_chart
from vx11_site.permissions import MissingPermission, missing, require

from .models import ContractCoherence, Flow, FlowRun, Step, StepResult
from .spec import check_references, check_spec


def badge(status: str) -> str:
    return display.badge(status, status=status)


def history_strip(flow: Flow, limit: int = 20) -> str:
    """The latest runs as small squares, oldest left; each links to its run page."""
    runs = flow.history(limit)
    if not runs:
        return "—"
    return format_html_join(
        "",
        '<a href="{}" title="#{} {} {}" '
        'style="display:inline-block;width:10px;height:14px;margin-right:2px;background:{}"></a>',
        (
            (
                reverse("admin:flows_flowrun_change", args=[r.id]),
                r.id,
                r.status,
                r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                display.STATUS_COLOURS.get(r.status, display.NEUTRAL),
            )
            for r in runs
        ),
    )


class FlowFileForm(forms.Form):
    file = forms.FileField(
        help_text="a YAML or JSON definition: name, title, description, enabled, steps (the shape of definition.yaml)"
    )
    replace = forms.BooleanField(required=False, help_text="overwrite the flow of the same name, steps and all")


class StepFormSet(BaseInlineFormSet):
    """Validates the whole flow as one definition (check_spec), so a bad step is refused at save
    with a message naming it, exactly as the loader and the API refuse it."""

    def clean(self):
        super().clean()
        if any(self.errors):
            return
        forms = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        forms.sort(key=lambda f: f.cleaned_data.get("position") or 0)
        positions = [f.cleaned_data.get("position") for f in forms]
        if positions != list(range(1, len(forms) + 1)):
            got = ", ".join(map(str, positions)) or "none"
            raise ValidationError(f"steps must be numbered 1 to {len(forms)} without gaps or repeats (got {got})")
        spec = {"name": self.instance.name or "new", "steps": [f.instance.to_spec() for f in forms]}
        try:
            clean = check_spec(spec)
            check_references(clean["steps"], clean["name"])
        except ValidationError as exc:
            raise ValidationError(exc.messages) from None
        for form, step in zip(forms, clean["steps"], strict=True):  # store the normalised form of each step
            for field, value in Step.fields_from(step).items():
                setattr(form.instance, field, value)


class StepInline(admin.StackedInline):
    model = Step
    formset = StepFormSet
    extra = 0
    ordering = ["position"]
    fieldsets = [
        (None, {"fields": [("position", "name", "kind")]}),
        (
            "HTTP call",
            {
                "fields": [
                    ("module", "method", "path"),
                    ("timeout", "expect_status", "max_latency_ms"),
                    "headers",
                    "body",
                    "checks",
                ]
            },
        ),
        ("Database / spawn", {"fields": ["db", "spawn"]}),
        ("Captures for later steps", {"fields": ["capture"]}),
    ]


def run_link(run: FlowRun) -> str:
    return format_html(
        '<a href="{}">{} #{}</a>', reverse("admin:flows_flowrun_change", args=[run.id]), run.flow.name, run.id
    )


@admin.action(description="Run selected flows now (queued)", permissions=["run"])
def run_now(modeladmin, request, queryset):
    """Queues one run per flow for a Celery worker, so the request never waits for a flow."""
    runs = [flow.queue(trigger="admin", user=request.user) for flow in queryset]
    modeladmin.message_user(
        request,
        format_html("Queued {} run(s): {}.", len(runs), format_html_join(", ", "{}", ((run_link(r),) for r in runs))),
        messages.SUCCESS,
    )


@admin.register(Flow)
class FlowAdmin(admin.ModelAdmin):
    list_display = ["name", "title", "enabled", "last_result", "history", "last_run_at", "step_count"]
    list_display_links = ["name", "title"]
    list_filter = ["enabled"]
    search_fields = ["name", "title", "description"]
    fields = ["name", "title", "description", "enabled"]
    inlines = [StepInline]
    actions = [run_now]
    change_form_template = "admin/flows/flow/change_form.html"
    change_list_template = "admin/flows/flow/change_list.html"

    def has_run_permission(self, request) -> bool:
        return missing(request.user, "flows.run_flow") is None

    def get_queryset(self, request):
        """Step counts and recent runs attached (Flow.summarised): the list costs the same few queries for 3 flows
        or 100."""
        return Flow.summarised(super().get_queryset(request))

    @admin.display(description="last result")
    def last_result(self, obj):
        last = obj.last_run()
        return badge(last.status) if last else "never run"

    @admin.display(description="history (oldest → newest)")
    def history(self, obj):
        return history_strip(obj)

    @admin.display(description="last run")
    def last_run_at(self, obj):
        last = obj.last_run()
        return last.started_at if last else "—"

    @admin.display(description="steps")
    def step_count(self, obj):
        return obj.step_count()

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:flow_id>/run/", view(self.run_view), name="flows_flow_run"),
            path("<int:flow_id>/definition.yaml", view(self.definition_view), name="flows_flow_definition"),
            path("load/", view(self.load_view), name="flows_flow_load"),
            *super().get_urls(),
        ]

    def load_view(self, request):
        """ "Load from file": a YAML or JSON definition (as `vx11 flow load`); replacing an existing flow is
        asked for explicitly and needs the change permission. A bad file stores nothing and says why."""
        require(request.user, "loading a flow", "flows.add_flow")
        form = FlowFileForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            replace = form.cleaned_data["replace"]
            refused = replace and missing(request.user, "flows.change_flow")
            if refused:
                form.add_error("replace", MissingPermission("replacing a flow", refused, request.user).message)
            else:
                try:
                    flow = Flow.load_upload(form.cleaned_data["file"], replace=replace)
                except ValidationError as exc:
                    form.add_error("file", exc.messages)
                else:
                    self.log_addition(
                        request,
                        flow,
                        [{"added": {"name": "definition file", "object": form.cleaned_data["file"].name}}],
                    )
                    self.message_user(
                        request,
                        f"Flow {flow.name} loaded from {form.cleaned_data['file'].name} ({flow.step_count()} steps).",
                        messages.SUCCESS,
                    )
                    return redirect("admin:flows_flow_change", flow.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "title": "Load a flow from a file",
        }
        return TemplateResponse(request, "admin/flows/flow/load.html", context)

    def definition_view(self, request, flow_id):
        """The flow's definition as YAML, to edit and load again (here or with `vx11 flow load --replace`)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        flow = get_object_or_404(Flow, id=flow_id)
        response = HttpResponse(flow.to_yaml(), content_type="application/yaml; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="flow_{flow.name}.yaml"'
        return response

    def run_view(self, request, flow_id):
        """The change page's "Run now" button (POST): queue a run for a worker, then show the run's page
        (it reloads itself until the run ends)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        require(request.user, "running a flow", "flows.run_flow")
        flow = get_object_or_404(Flow, id=flow_id)
        run = flow.queue(trigger="admin", user=request.user)
        self.message_user(
            request,
            format_html("Flow {} queued as run {}; this page shows it as it goes.", flow.name, run_link(run)),
            messages.SUCCESS,
        )
        return redirect("admin:flows_flowrun_change", run.id)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        flow = self.get_object(request, object_id)
        if flow is not None:
            extra_context["can_run"] = self.has_run_permission(request)
            extra_context["history_strip"] = history_strip(flow, 50)
            extra_context["recent_runs"] = flow.runs.all()[:20]
            finished = list(flow.runs.exclude(duration_ms=None)[:100])[::-1]
            extra_context["duration_chart"] = svg_chart(
                {"run duration": [(r.started_at, r.duration_ms) for r in finished]},
                title=f"duration of flow {flow.name}'s latest runs",
            )
            extra_context["schedule"] = PeriodicTask.objects.filter(
                task="apps.flows.tasks.run_flow", kwargs__contains=f'"{flow.name}"'
            ).first()
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(FlowRun)
class FlowRunAdmin(RecordAdmin):
    list_display = ["id", "flow", "status_badge", "started_at", "duration", "trigger", "failed_step", "reason"]
    list_filter = ["status", "flow", "trigger"]
    list_select_related = ["flow"]
    date_hierarchy = "started_at"
    fields = [
        "flow",
        "status",
        "trigger",
        "triggered_by",
        "started_at",
        "finished_at",
        "duration_ms",
        "failed_step",
        "reason",
        "captured",
    ]
    readonly_fields = fields
    change_form_template = "admin/flows/flowrun/change_form.html"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status)

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, obj):
        return "—" if obj.duration_ms is None else f"{obj.duration_ms:.0f} ms"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        run = self.get_object(request, object_id)
        if run is not None:
            extra_context["step_results"] = [(r, badge(r.status)) for r in StepResult.objects.filter(run=run)]
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(ContractCoherence)
class ContractCoherenceAdmin(RecordAdmin):
    list_display = ["computed_at", "pct", "passed", "total", "detail"]
    date_hierarchy = "computed_at"
    change_list_template = "admin/flows/contractcoherence/change_list.html"

    def changelist_view(self, request, extra_context=None):
        rows = list(ContractCoherence.objects.exclude(pct=None).order_by("-computed_at")[:500])[::-1]
        chart = svg_chart(
            {"contract_coherence_pct": [(r.computed_at, r.pct) for r in rows]},
            unit="%",
            title="contract coherence over time",
        )
        return super().changelist_view(request, {**(extra_context or {}), "coherence_chart": chart})
