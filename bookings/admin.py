from django.contrib import admin
from django.db.models import CharField, OuterRef, Subquery
from django.db.models.functions import Cast

from calendar_sync import tasks
from calendar_sync.models import SyncRecord

from .models import Booking, Workspace


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ("name", "address", "time_zone")
    search_fields = ("name", "address")


@admin.register(Booking)
class BookingAdmin(admin.ModelAdmin):
    list_display = ("title", "user", "workspace", "start", "end", "status", "sync_state", "sync_error")
    list_filter = ("status", "workspace")
    search_fields = ("title", "user__username")
    readonly_fields = ("google_calendar_event_id", "sync_state", "sync_error", "created_at", "updated_at")
    list_select_related = ("user", "workspace")
    actions = ("resync",)

    def get_queryset(self, request):
        record = SyncRecord.objects.filter(source="booking", object_id=Cast(OuterRef("pk"), CharField()))
        return super().get_queryset(request).annotate(
            _sync_state=Subquery(record.values("state")[:1]), _sync_error=Subquery(record.values("last_error")[:1])
        )

    @admin.display(description="calendar sync")
    def sync_state(self, obj):
        return SyncRecord.State(obj._sync_state).label if getattr(obj, "_sync_state", None) else "—"

    @admin.display(description="sync error")
    def sync_error(self, obj):
        return getattr(obj, "_sync_error", None) or "—"

    @admin.action(description="Resync selected bookings to calendars")
    def resync(self, request, queryset):
        count = tasks.resync_objects("booking", list(queryset))
        self.message_user(request, f"Queued {count} calendar sync(s).")
