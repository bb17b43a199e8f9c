"""The booking lifecycle, pending -> confirmed -> cancelled, with its rules in one place.

Each service runs in a transaction and locks the workspace row while checking overlaps, so
two confirmations racing for one slot cannot both succeed.
"""

from datetime import timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from calendar_sync import api as calendar_sync

from .models import Booking, Workspace


class BookingError(Exception):
    """A rule of the lifecycle was broken. `field` names the input at fault, if any."""

    def __init__(self, message, field=None, code="invalid"):
        super().__init__(message)
        self.field, self.code = field, code


def _check_times(start, end):
    if start is None or end is None:
        raise BookingError("Start and end are required.", field="start")
    if end <= start:
        raise BookingError("End must be after start.", field="end")


def _check_bounds(start, end):
    """A booking lies within the horizon (room calendars are read that far ahead) and lasts at most
    BOOKING_MAX_HOURS (no one holds a room for everyone else)."""
    hours = settings.BOOKING_MAX_HOURS
    if end - start > timedelta(hours=hours):
        raise BookingError(f"A booking may last at most {hours} hours.", field="end")
    days = settings.BOOKING_HORIZON_DAYS
    horizon = timezone.now() + timedelta(days=days)
    if end > horizon:
        raise BookingError(
            f"Bookings can be made at most {days} days ahead.", field="start" if start >= horizon else "end"
        )


def when(start, end, time_zone):
    """A span as people read it: in the workspace's zone, minutes not seconds, the zone named
    ("Tue 1 Dec 2026, 09:00–11:00 (Europe/Lisbon)"; the end's date too when it is another day)."""
    zone = ZoneInfo(time_zone)
    start, end = start.astimezone(zone), end.astimezone(zone)
    day = f"{start:%a} {start.day} {start:%b %Y}"
    until = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%a} {end.day} {end:%b %Y}, {end:%H:%M}"
    return f"{day}, {start:%H:%M}–{until} ({time_zone})"


def _check_free(booking):
    clash = (
        Booking.objects.filter(
            workspace_id=booking.workspace_id,
            status=Booking.Status.CONFIRMED,
            start__lt=booking.end,
            end__gt=booking.start,
        )
        .exclude(pk=booking.pk)
        .order_by("start")
        .values_list("start", "end")
        .first()
    )
    if clash:
        workspace = booking.workspace  # its name and zone, for the message
        raise BookingError(
            f"{workspace.name} is already booked on {when(*clash, workspace.time_zone)}.", field="start", code="overlap"
        )
    # Bookings made straight in the room's calendar (read in the background, never here).
    for block in calendar_sync.external_busy(
        calendar_sync.Owner("workspace", booking.workspace_id), booking.start, booking.end
    )[:1]:
        workspace = booking.workspace
        raise BookingError(
            f"{workspace.name} is booked in its room calendar on {when(block.start, block.end, workspace.time_zone)}.",
            field="start",
            code="overlap",
        )


def _lock(booking_id):
    booking = Booking.objects.select_for_update().get(pk=booking_id)
    Workspace.objects.select_for_update().get(pk=booking.workspace_id)
    return booking


def create_booking(*, user, workspace, title, start, end):
    _check_times(start, end)
    _check_bounds(start, end)
    return Booking.objects.create(user=user, workspace=workspace, title=title, start=start, end=end)


@transaction.atomic
def confirm_booking(booking):
    booking = _lock(booking.pk)
    if booking.status == Booking.Status.CANCELLED:
        raise BookingError("A cancelled booking cannot be confirmed.", code="invalid_transition")
    if booking.status == Booking.Status.CONFIRMED:
        return booking
    _check_free(booking)
    booking.status = Booking.Status.CONFIRMED
    booking.save(update_fields=["status", "updated_at"])
    return booking


@transaction.atomic
def cancel_booking(booking):
    booking = _lock(booking.pk)
    if booking.status != Booking.Status.CANCELLED:
        booking.status = Booking.Status.CANCELLED
        booking.save(update_fields=["status", "updated_at"])
    return booking


@transaction.atomic
def update_booking(booking, *, title=None, start=None, end=None):
    """Retitle and/or reschedule. A cancelled booking cannot change."""
    booking = _lock(booking.pk)
    if booking.status == Booking.Status.CANCELLED:
        raise BookingError("A cancelled booking cannot be changed.", code="invalid_transition")
    booking.title = booking.title if title is None else title
    booking.start = booking.start if start is None else start
    booking.end = booking.end if end is None else end
    _check_times(booking.start, booking.end)
    if start is not None or end is not None:
        _check_bounds(booking.start, booking.end)
    if booking.status == Booking.Status.CONFIRMED:
        _check_free(booking)
    booking.save(update_fields=["title", "start", "end", "updated_at"])
    return booking
