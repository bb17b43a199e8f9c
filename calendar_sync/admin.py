"""Operators manage connections and sync work here; tokens are never loaded, shown or editable."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth import get_permission_codename
from django.db.models import Q
from django.utils import timezone

from . import flows, tasks, tokens
from .exceptions import CalendarSyncError
from .fields import reaches_secret
from .models import AccessLog, CalendarToken, SyncRecord
from .owners import Owner, label


class SecretSafeAdmin(admin.ModelAdmin):
    """No filter, search or ordering through the URL may reach a secret column (an oracle on ciphertext)."""

    def lookup_allowed(self, lookup, value, request=None):
        if reaches_secret(self.model, lookup):
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_ordering(self, request):
        return [o for o in super().get_ordering(request) if not reaches_secret(self.model, o.lstrip("-"))]


class ConnectionActionForm(ActionForm):
    calendar_id = forms.CharField(
        required=False, max_length=1024, label="Calendar id", help_text="for “Change calendar”"
    )


class PausedFilter(admin.SimpleListFilter):
    """Connections whose writes wait for the provider's usage limit (`paused_until` still ahead)."""

    title = "writes paused"
    parameter_name = "paused"

    def lookups(self, request, model_admin):
        return (("yes", "Paused"), ("no", "Not paused"))

    def queryset(self, request, queryset):
        paused = Q(paused_until__gt=timezone.now())
        if self.value() == "yes":
            return queryset.filter(paused)
        if self.value() == "no":
            return queryset.exclude(paused)
        return queryset


@admin.register(CalendarToken)
class CalendarTokenAdmin(SecretSafeAdmin):
    list_display = (
        "owner",
        "provider",
        "account",
        "calendar_id",
        "write",
        "conflicts",
        "status",
        "writes_paused_until",
        "connected_by",
        "expires_at",
        "last_error",
        "updated_at",
    )
    list_filter = ("owner_kind", "provider", "status", "write", "conflicts", PausedFilter)
    search_fields = ("user__username", "user__email", "owner_id", "account", "calendar_id")
    fields = (
        "owner_kind",
        "owner_id",
        "user",
        "connected_by",
        "provider",
        "account",
        "calendar_id",
        "write",
        "conflicts",
        "status",
        "scopes",
        "capabilities",
        "expires_at",
        "paused_until",
        "last_error",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields
    actions = ("refresh_now", "disconnect", "change_calendar", "resync")
    action_form = ConnectionActionForm

    def get_queryset(self, request):
        return super().get_queryset(request).defer(*CalendarToken.SECRET_FIELDS).select_related("user", "connected_by")

    @admin.display(description="writes paused until", ordering="paused_until")
    def writes_paused_until(self, token):
        """Until when writes wait for the provider's usage limit; empty when they don't."""
        return token.paused_until if token.writes_paused else None

    @admin.display(description="owner", ordering="owner_kind")
    def owner(self, token):
        return str(token.user) if token.user_id else label(Owner(token.owner_kind, token.owner_id))

    def has_add_permission(self, request):
        return False  # connections are made by members through OAuth

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Refresh access token now", permissions=["manage"])
    def refresh_now(self, request, queryset):
        done = 0
        for token in queryset:
            try:
                tokens.access_token(token, force=True)
                done += 1
            except CalendarSyncError as exc:
                self.message_user(request, f"{token}: {exc.code}: {exc}", messages.ERROR)
        self.message_user(request, f"Refreshed {done} connection(s).")

    @admin.action(description="Revoke and disconnect", permissions=["delete"])
    def disconnect(self, request, queryset):
        for token in queryset:
            try:
                reason = AccessLog.Reason.STAFF_REQUEST  # a str at runtime (TextChoices)
                owner = Owner(token.owner_kind, token.owner_id)
                result = flows.disconnect(owner, reason, pk=token.pk)  # type: ignore[arg-type]  # TextChoices member (no django-stubs)
            except CalendarSyncError as exc:
                self.message_user(request, f"{token}: {exc.code}", messages.ERROR)
                continue
            level = messages.SUCCESS if result.revoked else messages.WARNING
            self.message_user(
                request,
                f"{token}: disconnected" + ("" if result.revoked else f" (not revoked: {result.reason})"),
                level,
            )

    def has_manage_permission(self, request):
        """Refreshing, changing the calendar and resyncing change connections: they need the change permission
        (checked here: the admin's own change permission is off, as nothing is edited in a form)."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    @admin.action(description="Change calendar to the id given below", permissions=["manage"])
    def change_calendar(self, request, queryset):
        calendar_id = request.POST.get("calendar_id", "").strip()
        if not calendar_id:
            self.message_user(request, "Give the calendar id to change to.", messages.ERROR)
            return
        for token in queryset:
            if not token.write:
                self.message_user(request, f"{token}: not where bookings go; nothing to move.", messages.ERROR)
                continue
            try:
                reason = AccessLog.Reason.STAFF_REQUEST  # a str at runtime (TextChoices)
                owner = Owner(token.owner_kind, token.owner_id)
                tasks.schedule(
                    flows.change_calendar(owner, calendar_id, reason)  # type: ignore[arg-type]  # TextChoices member (no django-stubs)
                )
            except flows.UnknownCalendar:
                self.message_user(
                    request, f"{token}: {calendar_id!r} is not one of its writable calendars.", messages.ERROR
                )
            except CalendarSyncError as exc:
                self.message_user(request, f"{token}: {exc.code}", messages.ERROR)
            else:
                self.message_user(request, f"{token}: events go to {calendar_id} now; moving the existing ones.")

    @admin.action(description="Resync (push every upcoming event again)", permissions=["manage"])
    def resync(self, request, queryset):
        for token in queryset:
            tasks.schedule(flows.resync(Owner(token.owner_kind, token.owner_id)))
        self.message_user(request, f"Queued a full resync for {len(queryset)} connection(s).")


@admin.register(SyncRecord)
class SyncRecordAdmin(SecretSafeAdmin):
    list_display = (
        "source",
        "object_id",
        "destination",
        "owner_kind",
        "owner_id",
        "state",
        "attempts",
        "last_error",
        "synced_at",
        "updated_at",
    )
    list_filter = ("state", "source", "destination")
    search_fields = ("object_id", "owner_id", "last_error")
    readonly_fields = [f.name for f in SyncRecord._meta.fields]
    actions = ("resync",)

    def has_add_permission(self, request):
        return False

    @admin.action(description="Resync selected", permissions=["change"])
    def resync(self, request, queryset):
        work = flows.resync_records(queryset)
        tasks.schedule(work)
        self.message_user(request, f"Queued {len(work)} sync(s).")


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
