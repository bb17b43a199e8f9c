"""The reference integration: how a Booking becomes a Google Calendar event."""
from django.utils import timezone

from calendar_sync.conf import get_setting
from calendar_sync.sources import Event, EventSource

from .models import Booking


class BookingSource(EventSource):
    model = "bookings.Booking"
    watched_fields = ("status", "start", "end", "title", "workspace")
    event_id_field = "google_calendar_event_id"

    def get_queryset(self):
        return Booking.objects.select_related("workspace")

    def owner_id(self, obj):
        return obj.user_id

    def should_exist(self, obj):
        return obj.status == Booking.Status.CONFIRMED

    def event(self, obj):
        link = f"{get_setting('FRONTEND_URL').rstrip('/')}/bookings/{obj.pk}"
        workspace = obj.workspace
        return Event(
            summary=f"{obj.title} — {workspace.name}",
            start=obj.start,
            end=obj.end,
            time_zone=workspace.time_zone,
            location=", ".join(p for p in (workspace.name, workspace.address) if p),
            description=f"ManageHub booking at {workspace.name}.\nDetails: {link}",
        )

    def upcoming(self, user_id):
        return Booking.objects.filter(user_id=user_id, status=Booking.Status.CONFIRMED, end__gt=timezone.now())

    def modified(self, obj):
        return obj.updated_at
