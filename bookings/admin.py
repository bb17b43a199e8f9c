from django.contrib import admin
from django.contrib.admin.views.main import ChangeList

from calendar_sync import api as calendar_sync

from . import services
from .models import Booking, Series, Workspace


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
    # `series`: occurrences come from a series' rule, never attached by hand. Guests and the video link
    # are the member's (validated by the API, invitations sent from their calendar): shown, not edited.
    readonly_fields = (
        "series",
        "guests",
        "conference",
        "conference_info",
        "google_calendar_event_id",
        "sync_state",
        "sync_error",
        "created_at",
        "updated_at",
    )
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


class OccurrenceInline(admin.TabularInline):
    """A series' bookings, as they are: each changes (or is cancelled) on its own page."""

    model = Booking
    fields = ("start", "end", "status", "title", "series_start")
    readonly_fields = fields
    ordering = ("start",)
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False  # occurrences come from the rule


@admin.register(Series)
class SeriesAdmin(admin.ModelAdmin):
    list_display = ("title", "user", "workspace", "rule", "local_start", "start")
    list_filter = ("workspace",)
    search_fields = ("title", "user__username")
    list_select_related = ("user", "workspace")
    fields = ("title", "user", "workspace", "rule", "time_zone", "start", "local_start", "duration", "created_at")
    readonly_fields = ("user", "workspace", "rule", "time_zone", "start", "local_start", "duration", "created_at")
    inlines = (OccurrenceInline,)

    def has_add_permission(self, request):
        return False  # a series is made through the API, where its rule is checked and expanded

    def save_model(self, request, obj, form, change):
        """A new title reaches every future occurrence, as through the API."""
        if "title" in form.changed_data:
            services.update_series(obj, title=obj.title)
