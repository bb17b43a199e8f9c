"""The reference integration: how a Booking becomes an event in its member's calendar and its room's."""

from dataclasses import replace
from datetime import datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from django.urls import reverse
from django.utils import timezone

from calendar_sync import api
from calendar_sync.api import Event, EventSource, Owner, SeriesInfo, get_setting

from . import recurrence, remote
from .models import Booking

WORKSPACE = "workspace"


def _first_start(series):
    """DTSTART: the first occurrence's date at the series' time of day now (a new time of day moves
    the whole rule, as the occurrences' original starts moved with it)."""
    zone = ZoneInfo(series.time_zone)
    first = series.start.astimezone(zone)
    if first.time().replace(tzinfo=None) == series.local_start:
        return series.start
    return recurrence.localize(datetime.combine(first.date(), series.local_start), zone)


def guest_emails(booking):
    """The addresses of a booking's guests (entries that are not {"email": ...} are left out)."""
    guests = booking.guests if isinstance(booking.guests, list) else []
    return tuple(str(g["email"]) for g in guests if isinstance(g, dict) and g.get("email"))


class BookingSource(EventSource):
    model = "bookings.Booking"
    watched_fields = ("status", "start", "end", "title", "workspace", "guests", "conference")
    event_id_field = "google_calendar_event_id"

    def get_queryset(self):
        return Booking.objects.select_related("workspace", "user", "series")

    def owner_id(self, obj):
        return obj.user_id

    def destinations(self, obj):
        """The member's own calendar, and the room calendar of the booked workspace."""
        return {"member": ("user", obj.user_id), WORKSPACE: (WORKSPACE, obj.workspace_id)}

    def should_exist(self, obj):
        return obj.status == Booking.Status.CONFIRMED

    def event(self, obj, destination="member"):
        workspace = obj.workspace
        location = ", ".join(p for p in (workspace.name, workspace.address) if p)
        frontend = get_setting("FRONTEND_URL").rstrip("/")
        member_makes = self._member_makes_conference(obj)
        join_url = (obj.conference_info or {}).get("join_url") or ""
        if destination == WORKSPACE:  # the room's calendar: who booked it (unless turned off), a staff link
            scheme, host = urlsplit(frontend)[:2]
            origin = f"{scheme}://{host}" if frontend else ""
            who = obj.user.get_full_name() or obj.user.get_username()
            return Event(
                summary=f"{obj.title} — {who}" if get_setting("SHARED_SHOW_OWNER") else obj.title,
                start=obj.start,
                end=obj.end,
                time_zone=workspace.time_zone,
                location=location,
                description=f"ManageHub booking of {workspace.name}.\nStaff: {origin}{reverse('admin:bookings_booking_change', args=[obj.pk])}",
                # One meeting per booking: the member's copy makes it; the room's only when the member can't.
                conference="none" if member_makes else obj.conference,
                join_url=join_url if member_makes else "",
            )
        return Event(
            summary=f"{obj.title} — {workspace.name}",
            start=obj.start,
            end=obj.end,
            time_zone=workspace.time_zone,
            location=location,
            description=f"ManageHub booking at {workspace.name}.\nDetails: {frontend}/bookings/{obj.pk}",
            attendees=guest_emails(obj),  # the member's copy only: the room's would invite them twice
            # A meeting the room's copy made already stays the one: the member's copy carries its link.
            conference=Booking.Conference.NONE if self._room_made_conference(obj) else obj.conference,
            join_url="" if member_makes else join_url,  # a link the room's copy made
        )

    @staticmethod
    def _room_made_conference(obj):
        """Whether the room's copy made the booking's meeting (before the member had a calendar that can)."""
        info = obj.conference_info or {}
        return info.get("maker") == WORKSPACE and info.get("status") in ("pending", "ready")

    @staticmethod
    def _member_makes_conference(obj):
        """Whether the member's own calendar makes the booking's meeting (then the room's copy carries its link)."""
        wanted = obj.conference or Booking.Conference.NONE
        if BookingSource._room_made_conference(obj):
            return False  # one meeting per booking: not a second one once the member connects
        return wanted == Booking.Conference.NONE or api.offers_conference(Owner("user", str(obj.user_id)), wanted)

    def conference_changed(self, obj, destination, conference):
        """Keep the meeting on the booking; the other copy then carries its link. A failure in one copy
        never replaces a link the other copy made."""
        info = {"type": conference.type, "join_url": conference.join_url, "status": conference.status}
        if conference.reason:
            info["reason"] = conference.reason
        current = Booking.objects.filter(pk=obj.pk).values_list("conference_info", flat=True).first() or {}
        if conference.status in ("failed", "none") and current.get("join_url") and current.get("maker") != destination:
            return
        info["maker"] = destination
        Booking.objects.filter(pk=obj.pk).update(conference_info=info)
        obj.conference_info = info
        if info["join_url"] != current.get("join_url", ""):
            others = [role for role in self.destinations(obj) if role != destination]
            api.sync_again(self.key, obj, others)

    def series(self, obj):
        """A booking made by a series is one occurrence of it: its calendars hold one recurring event."""
        series = obj.series
        if series is None or obj.series_start is None:
            return None
        return SeriesInfo(
            key=str(series.pk),
            rule=series.rule,
            time_zone=series.time_zone,
            start=(start := _first_start(series)),
            end=start + series.duration,
            original_start=obj.series_start,
        )

    def series_event(self, obj, destination="member"):
        """The series' own event: its title (a retitled series retitles it), its room, a link to it."""
        series, workspace = obj.series, obj.workspace
        event = self.event(obj, destination)
        if series is None:
            return event
        if destination == WORKSPACE:
            who = obj.user.get_full_name() or obj.user.get_username()
            summary = f"{series.title} — {who}" if get_setting("SHARED_SHOW_OWNER") else series.title
            text = f"ManageHub series of bookings of {workspace.name}."
        else:
            summary = f"{series.title} — {workspace.name}"
            frontend = get_setting("FRONTEND_URL").rstrip("/")
            text = f"ManageHub series of bookings at {workspace.name}.\nDetails: {frontend}/bookings/series/{series.pk}"
        info = self.series(obj)
        return replace(
            event, summary=summary, description=text, start=info.start, end=info.end, time_zone=info.time_zone
        )

    def series_members(self, obj):
        """Every occurrence of the booking's series (cancelled ones too)."""
        return self.get_queryset().filter(series_id=obj.series_id).order_by("series_start")

    # What the member did to the event in their own calendar: the rules are in `bookings.remote`.
    # A room calendar's copy is the workspace's, not the member's word: nothing follows from it.
    def remote_deleted(self, obj, destination):
        return remote.deleted(obj) if destination == "member" else None

    def remote_moved(self, obj, destination, start, end):
        return remote.moved(obj, start, end) if destination == "member" else None

    def responses_changed(self, obj, destination, guests):
        return remote.answered(obj, guests) if destination == "member" else None

    def upcoming(self, owner):
        bookings = Booking.objects.filter(status=Booking.Status.CONFIRMED, end__gt=timezone.now())
        if owner.kind == "user":
            return bookings.filter(user_id=owner.id)
        if owner.kind == WORKSPACE:
            return bookings.filter(workspace_id=owner.id)
        return bookings.none()

    def modified(self, obj):
        return obj.updated_at
