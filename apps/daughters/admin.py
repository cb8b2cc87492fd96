import json
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from vx11_site.display import RecordAdmin, RecordInline, badge
from vx11_site.permissions import MissingPermission, missing

from .kinds import KINDS, validate_params
from .models import Daughter, DaughterAttempt, DaughterTask


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"
    SPANS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}

    def lookups(self, request, model_admin):
        return [("1h", "last hour"), ("24h", "last 24 hours"), ("7d", "last 7 days"), ("older", "older than 7 days")]

    def queryset(self, request, queryset):
        if self.value() == "older":
            return queryset.filter(created__lt=timezone.now() - self.SPANS["7d"])
        if self.value() in self.SPANS:
            return queryset.filter(created__gte=timezone.now() - self.SPANS[self.value()])
        return queryset


class SpawnForm(forms.ModelForm):
    """The admin's add page spawns: a kind, its params (JSON) and the task's settings."""

    user = None  # the admin sets the request's user (get_form), whose permissions the kind needs
    kind = forms.ChoiceField(choices=[])
    params = forms.JSONField(
        initial=dict,
        help_text='e.g. {"module": "hermes", "path": "/tools"} for http, '
        '{"command": "uptime"} for command, {"seconds": 2} for sleep',
    )
    name = forms.CharField(required=False, max_length=80)
    ttl_seconds = forms.IntegerField(min_value=1, max_value=86400, required=False, help_text="default 300")
    count = forms.IntegerField(min_value=1, max_value=1000, initial=1)

    class Meta:
        model = DaughterTask
        fields = ["kind", "params", "source", "description", "name", "ttl_seconds", "max_retries", "count"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [(k, k) for k in sorted(KINDS)]

    def clean(self):
        data = super().clean()
        if "kind" in data:
            try:
                DaughterTask.require_spawn_permission(self.user, data["kind"])
            except MissingPermission as exc:
                raise ValidationError({"kind": exc.message}) from None
        if "kind" in data and "params" in data:
            try:
                data["params"] = validate_params(data["kind"], data["params"])
            except ValidationError as exc:
                raise ValidationError(
                    (exc.message_dict.get("params") if hasattr(exc, "error_dict") else None) or exc.messages
                ) from None
        return data


class DaughterInline(RecordInline):
    model = Daughter
    show_change_link = True
    fields = [
        "name",
        "kind",
        "status_badge",
        "mutation_level",
        "started_at",
        "last_heartbeat_at",
        "ended_at",
        "error_last",
    ]

    @admin.display(description="status")
    def status_badge(self, obj):
        return badge(obj.status, "vx11-work", daughter=obj.pk)


@admin.action(description="Cancel the selected tasks (kill their live daughters)", permissions=["cancel"])
def cancel_tasks(modeladmin, request, queryset):
    killed = Daughter.kill(Daughter.objects.filter(task__in=queryset), user=request.user)
    modeladmin.message_user(request, f"Killed {killed} live daughter(s).", messages.SUCCESS)


@admin.register(DaughterTask)
class DaughterTaskAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "description",
        "source",
        "priority",
        "status_badge",
        "daughters_summary",
        "created",
        "updated",
    ]
    list_filter = ["status", "source", AgeFilter]
    search_fields = ["description", "intent_id"]
    actions = [cancel_tasks]
    readonly_fields = [
        "intent_id",
        "source",
        "priority",
        "task_type",
        "description",
        "max_retries",
        "status_badge",
        "plan_json",
        "created_by",
        "created",
        "updated",
        "attempts_table",
    ]
    exclude = ["plan"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = SpawnForm
        form = super().get_form(request, obj, **kwargs)
        form.user = request.user  # a class made for this request (modelform_factory)
        return form

    def has_add_permission(self, request):
        """Adding is spawning: daughters.spawn_daughter (the form checks what the chosen kind needs on top)."""
        return missing(request.user, "daughters.spawn_daughter") is None

    def has_cancel_permission(self, request) -> bool:
        return missing(request.user, "daughters.change_daughtertask") is None

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": SpawnForm.Meta.fields})]
        return [
            (
                None,
                {
                    "fields": [
                        ("status_badge", "source", "priority"),
                        "description",
                        ("max_retries", "task_type", "intent_id"),
                        ("created", "updated", "created_by"),
                    ]
                },
            ),
            ("Attempts of every daughter", {"fields": ["attempts_table"]}),
            ("Plan (as spawned)", {"fields": ["plan_json"], "classes": ["collapse"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_inlines(self, request, obj):
        return [DaughterInline] if obj else []

    def save_model(self, request, obj, form, change):
        """Adding is spawning (a task is never edited: has_change_permission)."""
        d = form.cleaned_data
        task = DaughterTask.spawn(
            d["kind"],
            d["params"],
            source=d["source"],
            description=d["description"],
            name=d["name"],
            ttl_seconds=d["ttl_seconds"],
            max_retries=d["max_retries"],
            count=d["count"],
            user=request.user,
        )
        obj.pk = task.pk  # the admin's "added" message and redirect point at the spawned task

    def save_related(self, request, form, formsets, change):
        pass  # the spawn made the daughters

    def has_change_permission(self, request, obj=None):
        return False if obj is not None else super().has_change_permission(request, obj)

    def get_queryset(self, request):
        """Per-status daughter counts in the list's one query (a task may have 1,000 daughters)."""
        counts = {
            f"n_{status}": Count("daughters", filter=Q(daughters__status=status)) for status in Daughter.Status.values
        }
        return super().get_queryset(request).annotate(**counts)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, "vx11-work", task=obj.pk)

    @admin.display(description="daughters")
    def daughters_summary(self, obj):
        counts = {status: getattr(obj, f"n_{status}", 0) for status in Daughter.Status.values}
        return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if n) or "-"

    @admin.display(description="plan")
    def plan_json(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.plan, indent=2))

    @admin.display(description="attempts")
    def attempts_table(self, obj):
        attempts = (
            DaughterAttempt.objects.filter(daughter__task=obj)
            .select_related("daughter")
            .order_by("daughter_id", "attempt_number")
        )
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            (
                (
                    a.daughter.name,
                    a.attempt_number,
                    badge(a.status),
                    a.worker,
                    f"{a.started_at:%Y-%m-%d %H:%M:%S}",
                    f"{a.ended_at:%H:%M:%S}" if a.ended_at else "-",
                    (a.error or a.output)[:800],
                )
                for a in attempts
            ),
        )
        return (
            format_html(
                "<table><tr><th>daughter</th><th>#</th><th>status</th><th>worker</th><th>started</th><th>ended</th>"
                "<th>output / error</th></tr>{}</table>",
                rows,
            )
            if attempts
            else "none yet"
        )


class AttemptInline(RecordInline):
    model = DaughterAttempt
    fields = ["attempt_number", "status", "worker", "started_at", "ended_at", "output", "error"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.action(description="Kill the selected daughters", permissions=["kill"])
def kill_daughters(modeladmin, request, queryset):
    modeladmin.message_user(
        request, f"Killed {Daughter.kill(queryset, user=request.user)} live daughter(s).", messages.SUCCESS
    )


@admin.register(Daughter)
class DaughterAdmin(RecordAdmin):
    list_display = [
        "id",
        "name",
        "task",
        "kind",
        "status_badge",
        "priority",
        "mutation_level",
        "started_at",
        "last_heartbeat_at",
        "ended_at",
    ]
    list_filter = ["status", "kind", "priority", AgeFilter]
    search_fields = ["name", "purpose", "spawn_uuid"]
    actions = [kill_daughters]
    inlines = [AttemptInline]
    list_select_related = ["task"]

    def has_kill_permission(self, request) -> bool:
        return missing(request.user, "daughters.change_daughter") is None

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, "vx11-work", daughter=obj.pk)
