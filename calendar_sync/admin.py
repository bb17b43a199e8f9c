"""Operators manage connections and sync work here; tokens are never loaded, shown or editable."""
from django.contrib import admin, messages

from . import oauth, tasks
from .exceptions import CalendarSyncError
from .models import CalendarToken, SyncRecord


@admin.register(CalendarToken)
class CalendarTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "provider", "calendar_id", "status", "expires_at", "last_error", "updated_at")
    list_filter = ("provider", "status")
    search_fields = ("user__username", "user__email", "calendar_id")
    fields = ("user", "provider", "calendar_id", "status", "scopes", "expires_at", "last_error", "created_at", "updated_at")
    readonly_fields = fields
    actions = ("refresh_now", "disconnect")

    def get_queryset(self, request):
        return super().get_queryset(request).defer(*CalendarToken.SECRET_FIELDS).select_related("user")

    def has_add_permission(self, request):
        return False  # connections are made by members through OAuth

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Refresh access token now")
    def refresh_now(self, request, queryset):
        done = 0
        for token in queryset:
            try:
                oauth.access_token(token, force=True)
                done += 1
            except CalendarSyncError as exc:
                self.message_user(request, f"{token.user}: {exc.code}: {exc}", messages.ERROR)
        self.message_user(request, f"Refreshed {done} connection(s).")

    @admin.action(description="Revoke and disconnect")
    def disconnect(self, request, queryset):
        for token in queryset:
            revoked, reason = oauth.disconnect(token)
            level = messages.SUCCESS if revoked else messages.WARNING
            self.message_user(request, f"{token.user}: disconnected" + ("" if revoked else f" (not revoked: {reason})"), level)


@admin.register(SyncRecord)
class SyncRecordAdmin(admin.ModelAdmin):
    list_display = ("source", "object_id", "user", "state", "attempts", "last_error", "synced_at", "updated_at")
    list_filter = ("state", "source")
    search_fields = ("object_id", "user__username", "last_error")
    readonly_fields = [f.name for f in SyncRecord._meta.fields]
    actions = ("resync",)

    def has_add_permission(self, request):
        return False

    @admin.action(description="Resync selected")
    def resync(self, request, queryset):
        count = tasks.resync(queryset)
        self.message_user(request, f"Queued {count} sync(s).")

