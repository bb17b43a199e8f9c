"""ManageHub's rules for what a member does to a booking's event in their own calendar.

The calendar app only reports (`BookingSource.remote_deleted` / `remote_moved` / `responses_changed`);
the booking's fate is decided here, by the same services the API uses:

- the event deleted → the booking is cancelled (the room is freed, its copy removed) and the member
  gets an e-mail saying so;
- the event moved → the booking is rescheduled when the workspace is free then (the API's rules);
  otherwise the event goes back to the booking's time and an e-mail says why;
- guests answered → their answers are stored on the booking (no write to the calendar follows).

Each function answers a word for the member's activity (what was done). A booking already over is
left as it was: tidying old events away in a calendar cancels nothing.
"""

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from calendar_sync import api as calendar_sync

from . import services
from .models import Booking

logger = logging.getLogger(__name__)


def _link(booking):
    return f"{calendar_sync.get_setting('FRONTEND_URL').rstrip('/')}/bookings/{booking.pk}"


def _when(booking, start=None, end=None):
    return services.when(start or booking.start, end or booking.end, booking.workspace.time_zone)


def _tell(booking, subject, body):
    """One e-mail to the member (none when they have no address). A mail server problem is logged:
    what was done to the booking stands."""
    if not booking.user.email:
        return
    try:
        send_mail(subject, f"{body}\n\nDetails: {_link(booking)}", settings.DEFAULT_FROM_EMAIL, [booking.user.email])
    except Exception:  # noqa: BLE001 - any mail backend failure
        logger.exception("e-mail to the member of booking %s not sent", booking.pk)


def _settled(booking):
    """Why nothing is done: the booking is over or not confirmed (None when it is live)."""
    if booking.status != Booking.Status.CONFIRMED:
        return "unchanged"
    if booking.end <= timezone.now():
        return "past"
    return None


def deleted(booking):
    """The member deleted the booking's event: cancel the booking and tell them."""
    if settled := _settled(booking):
        return settled
    services.cancel_booking(booking)
    _tell(
        booking,
        f"Booking cancelled: {booking.title}",
        f"You deleted the event of your booking “{booking.title}” at {booking.workspace.name} "
        f"({_when(booking)}) from your calendar, so the booking is cancelled and the workspace is free again.",
    )
    return "cancelled"


def moved(booking, start, end):
    """The member moved the booking's event: reschedule the booking if the workspace is free then;
    otherwise put the event back at the booking's time and say why."""
    if settled := _settled(booking):
        return settled
    try:
        services.update_booking(booking, start=start, end=end)
    except services.BookingError as exc:
        calendar_sync.resync("booking", [booking], destination="member")
        _tell(
            booking,
            f"Booking not moved: {booking.title}",
            f"You moved the event of your booking “{booking.title}” at {booking.workspace.name} to "
            f"{_when(booking, start, end)}, but the booking cannot move there: {exc}\n"
            f"The event is back at the booking's time, {_when(booking)}.",
        )
        return "put_back"
    return "rescheduled"


def answered(booking, guests):
    """Store the guests' answers on the booking (only for its guests; a queryset update, so no
    calendar write follows)."""
    answers = {guest.email.lower(): guest.response for guest in guests}
    current = list(booking.guests or [])
    updated = [
        {**guest, "response": answers.get(str(guest.get("email", "")).lower(), guest.get("response"))}
        if isinstance(guest, dict)
        else guest
        for guest in current
    ]
    if updated == current:
        return "unchanged"
    Booking.objects.filter(pk=booking.pk).update(guests=updated)
    return "stored"
