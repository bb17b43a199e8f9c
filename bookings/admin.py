from django.contrib import admin
from django.contrib.admin.views.main import ChangeList

from calendar_sync import tasks
from calendar_sync.models import SyncRecord

from .models import Booking, Workspace


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ("name", "address", "time_zone")
    search_fields = ("name", "address")


class BookingChangeList(ChangeList):
    """Fetches the sync records of the listed page in one query."""

    def get_results(self, request):
        super().get_results(request)
        ids = [str(b.pk) for b in self.result_list]
        records = {r.object_id: r for r in SyncRecord.objects.filter(source="booking", object_id__in=ids)}
        for booking in self.result_list:
            booking._sync_record = records.get(str(booking.pk))


@admin.register(Booking)
class BookingAdmin(admin.ModelAdmin):
    list_display = ("title", "user", "workspace", "start", "end", "status", "sync_state", "sync_error")
    list_filter = ("status", "workspace")
    search_fields = ("title", "user__username")
    readonly_fields = ("google_calendar_event_id", "sync_state", "sync_error", "created_at", "updated_at")
    list_select_related = ("user", "workspace")
    actions = ("resync",)

    def get_changelist(self, request, **kwargs):
        return BookingChangeList

    @staticmethod
    def _record(obj):
        if not hasattr(obj, "_sync_record"):  # the change page: one object, one query
            obj._sync_record = SyncRecord.objects.filter(source="booking", object_id=str(obj.pk)).first()
        return obj._sync_record

    @admin.display(description="calendar sync")
    def sync_state(self, obj):
        record = self._record(obj)
        return record.get_state_display() if record else "—"

    @admin.display(description="sync error")
    def sync_error(self, obj):
        record = self._record(obj)
        return (record and record.last_error) or "—"

    @admin.action(description="Resync selected bookings to calendars")
    def resync(self, request, queryset):
        count = tasks.resync_objects("booking", list(queryset))
        self.message_user(request, f"Queued {count} calendar sync(s).")
