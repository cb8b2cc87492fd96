from django.contrib import admin

from vx11_site.display import RecordAdmin

from .models import Event


@admin.register(Event)
class EventAdmin(RecordAdmin):
    list_display = ["id", "timestamp", "type", "session_id", "data"]
    list_filter = ["type"]
    search_fields = ["session_id"]
    date_hierarchy = "timestamp"
