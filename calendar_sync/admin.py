"""Operators manage connections and sync work here; tokens are never loaded, shown or editable."""
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import FieldDoesNotExist
from django.db.models.constants import LOOKUP_SEP

from . import oauth, tasks
from .exceptions import CalendarSyncError
from .fields import SecretField
from .models import AccessLog, CalendarToken, SyncRecord
from .owners import Owner, label


def touches_secret(model, lookup):
    """True when a lookup path (`user__calendar_token__refresh_token__regex`) reaches a SecretField."""
    for part in lookup.split(LOOKUP_SEP):
        try:
            field = model._meta.get_field(part)
        except FieldDoesNotExist:
            return False
        if isinstance(field, SecretField):
            return True
        if not field.is_relation or field.related_model is None:
            return False
        model = field.related_model
    return False


class SecretSafeAdmin(admin.ModelAdmin):
    """No filter, search or ordering through the URL may reach a secret column (an oracle on ciphertext)."""

    def lookup_allowed(self, lookup, value, request=None):
        if touches_secret(self.model, lookup):
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_ordering(self, request):
        return [o for o in super().get_ordering(request) if not touches_secret(self.model, o.lstrip("-"))]


@admin.register(CalendarToken)
class CalendarTokenAdmin(SecretSafeAdmin):
    list_display = ("owner", "provider", "calendar_id", "status", "connected_by", "expires_at", "last_error", "updated_at")
    list_filter = ("owner_kind", "provider", "status")
    search_fields = ("user__username", "user__email", "owner_id", "calendar_id")
    fields = ("owner_kind", "owner_id", "user", "connected_by", "provider", "calendar_id", "status", "scopes", "expires_at", "last_error", "created_at", "updated_at")
    readonly_fields = fields
    actions = ("refresh_now", "disconnect")

    def get_queryset(self, request):
        return super().get_queryset(request).defer(*CalendarToken.SECRET_FIELDS).select_related("user", "connected_by")

    @admin.display(description="owner", ordering="owner_kind")
    def owner(self, token):
        return str(token.user) if token.user_id else label(Owner(token.owner_kind, token.owner_id))

    def has_add_permission(self, request):
        return False  # connections are made by members through OAuth

    def has_change_permission(self, request, obj=None):
        return False

    def has_refresh_permission(self, request):
        """Refreshing writes the connection: the change permission (the form stays read-only)."""
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('change', self.opts)}")

    @admin.action(description="Refresh access token now", permissions=["refresh"])
    def refresh_now(self, request, queryset):
        done = 0
        for token in queryset:
            try:
                oauth.access_token(token, force=True)
                done += 1
            except CalendarSyncError as exc:
                self.message_user(request, f"{token}: {exc.code}: {exc}", messages.ERROR)
        self.message_user(request, f"Refreshed {done} connection(s).")

    @admin.action(description="Revoke and disconnect", permissions=["delete"])
    def disconnect(self, request, queryset):
        for token in queryset:
            revoked, reason = oauth.disconnect(token)
            level = messages.SUCCESS if revoked else messages.WARNING
            self.message_user(request, f"{token}: disconnected" + ("" if revoked else f" (not revoked: {reason})"), level)


@admin.register(SyncRecord)
class SyncRecordAdmin(SecretSafeAdmin):
    list_display = ("source", "object_id", "destination", "owner_kind", "owner_id", "state", "attempts", "last_error", "synced_at", "updated_at")
    list_filter = ("state", "source", "destination")
    search_fields = ("object_id", "owner_id", "last_error")
    readonly_fields = [f.name for f in SyncRecord._meta.fields]
    actions = ("resync",)

    def has_add_permission(self, request):
        return False

    @admin.action(description="Resync selected", permissions=["change"])
    def resync(self, request, queryset):
        count = tasks.resync(queryset)
        self.message_user(request, f"Queued {count} sync(s).")



@admin.register(AccessLog)
class AccessLogAdmin(SecretSafeAdmin):
    """Read-only trail of every use of a stored token."""

    list_display = ("created_at", "user", "owner", "provider", "operation", "reason", "outcome", "object_ref", "count")
    list_filter = ("provider", "operation", "reason", "outcome")
    search_fields = ("user__username", "object_ref")
    date_hierarchy = "created_at"
    list_select_related = ("user",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
