from django.contrib import admin
from django.contrib.admin.views.main import ChangeList

from calendar_sync import api as calendar_sync

from .models import Booking, Workspace


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ("name", "address", "time_zone")
    search_fields = ("name", "address")


class BookingChangeList(ChangeList):
    """Fetches the sync states of the listed page in one query."""

    def get_results(self, request):
        super().get_results(request)
        states = calendar_sync.sync_states("booking", self.result_list)
        for booking in self.result_list:
            booking._sync_states = states[str(booking.pk)]


def _summary(states, key):
    """One line over every destination: "member: Synced · workspace: Not connected"."""
    parts = [
        f"{role}: {str(state[key]).replace('_', ' ').capitalize()}"
        for role, state in sorted(states.items())
        if state[key]
    ]
    return " · ".join(parts) or "—"


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
    def _states(obj):
        if not hasattr(obj, "_sync_states"):  # the change page: one object, one query
            obj._sync_states = calendar_sync.sync_states("booking", [obj])[str(obj.pk)]
        return obj._sync_states

    @admin.display(description="calendar sync")
    def sync_state(self, obj):
        return _summary(self._states(obj), "state")

    @admin.display(description="sync error")
    def sync_error(self, obj):
        return _summary(self._states(obj), "last_error")

    @admin.action(description="Resync selected bookings to calendars", permissions=["change"])
    def resync(self, request, queryset):
        count = calendar_sync.resync("booking", queryset)
        self.message_user(request, f"Queued {count} calendar sync(s).")
