from django.contrib import admin, messages
from django.contrib.auth import get_user_model

from vx11_site.permissions import missing

from .models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "read_only", "revoked", "created_at", "last_used_at"]
    list_filter = ["read_only", "revoked"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    fields = ["user", "name", "read_only", "revoked", "prefix", "created_at", "last_used_at"]

    # A key acts as its user, with all of that user's permissions: a key of someone else (issuing one, or
    # making theirs read-write again) needs auth.change_user, which can grant any permission anyway.
    OTHERS = "auth.change_user"

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user" and missing(request.user, self.OTHERS):
            kwargs["queryset"] = get_user_model().objects.filter(pk=request.user.pk)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.user_id != request.user.pk and missing(request.user, self.OTHERS):
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, plain = ApiKey.issue(obj.user, obj.name, obj.read_only)
        obj.pk, obj.prefix, obj.key_hash = key.pk, key.prefix, key.key_hash
        obj._state.adding = False
        messages.warning(request, f"The new key is {plain} — copy it now, it is not shown again.")
