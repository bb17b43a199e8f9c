"""How an Appointment becomes an event in its owner's calendar (named in CALENDAR_SYNC["SOURCES"])."""

from django.utils import timezone

from calendar_sync.api import Event, EventSource


class AppointmentSource(EventSource):
    model = "appointments.Appointment"
    watched_fields = ("title", "start", "end", "cancelled")  # other saves cause no sync
    event_id_field = "calendar_event_id"

    def owner_id(self, obj):
        return obj.owner_id

    def should_exist(self, obj):
        return not obj.cancelled

    def event(self, obj, destination="member"):
        return Event(summary=obj.title, start=obj.start, end=obj.end)

    def upcoming(self, owner):  # synced when the member connects
        return self.get_model().objects.filter(owner_id=owner.id, cancelled=False, end__gt=timezone.now())
