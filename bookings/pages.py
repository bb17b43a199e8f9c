"""Server-rendered pages (JavaScript over the REST API): the member's Integrations → Calendar page,
and staff's Integrations → Room calendars page.

The member's bookings list is rendered here, with plain forms for Confirm and a confirmation step for
Cancel, so it says the same thing and works the same way with JavaScript off."""

import datetime as dt
import zoneinfo

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_http_methods, require_POST

from calendar_sync import api as calendar_sync

from . import services
from .models import Booking, Workspace

#: What the "In your calendar" column says, by state (see `_in_calendar`).
IN_CALENDAR = {
    "synced": "✓ In your calendar",
    "pending": "Syncing…",
    "removing": "Removing from your calendar…",
    "removed": "Not in your calendar",
    "failed": "Failed",
    "not_connected": "Not connected",
    "needs_reauth": "Reconnect needed",
    "unconfirmed": "Added once confirmed",
}


def _in_calendar(booking, state, connection):
    """The booking's real place in the member's calendar, from its member sync state (or None) and
    the member's connection: only a confirmed booking whose event exists, over a live connection,
    is "in your calendar" (a cancelled one, or any after a disconnect, never is)."""
    if not connection["connected"]:
        return "not_connected"
    if connection["status"] != "active":
        return "needs_reauth"
    sync = state["state"] if state else None
    if sync in ("failed", "not_connected"):
        return sync
    if booking.status == Booking.Status.CONFIRMED:
        return "synced" if sync == "synced" and state["event_id"] else "pending"
    if sync == "pending" and state["event_id"]:
        return "removing"
    return "unconfirmed" if booking.status == Booking.Status.PENDING else "removed"


def _rows(user, errors):
    bookings = list(
        Booking.objects.filter(user=user, end__gt=timezone.now()).select_related("workspace").order_by("start", "pk")
    )
    states = calendar_sync.sync_states("booking", bookings)
    connection = calendar_sync.connection(calendar_sync.Owner.member(user))
    rows = []
    for booking in bookings:
        state = (states.get(str(booking.pk)) or {}).get("member")
        key = _in_calendar(booking, state, connection)
        error = state["last_error"] if state and key == "failed" else ""
        rows.append(
            {
                "booking": booking,
                "when": services.when(booking.start, booking.end, booking.workspace.time_zone),
                "sync_state": key,
                "in_calendar": IN_CALENDAR[key] + (f" — {error}" if error else ""),
                "error": errors.get(str(booking.pk)),  # what went wrong with the last action on it
            }
        )
    return rows


#: How a connection's provider is named on its card (a provider this host does not know shows its key).
PROVIDER_LABELS = {
    "google": "Google Calendar",
    "microsoft": "Outlook Calendar",
    "caldav": "CalDAV calendar",
    "ics": "ICS link",
}
#: The longest week window the page's script asks bookings for (a week, with room for a time change).
WEEK_MAX_DAYS = 8


def _connections(user):
    """The member's connections for their cards (never a secret: `calendar_sync.api.connections` has none)."""
    rows = calendar_sync.connections(calendar_sync.Owner.member(user))
    return [{**row, "label": PROVIDER_LABELS.get(row["provider"], row["provider"])} for row in rows]


def _week(request):
    """The member's bookings (not cancelled) overlapping [start, end), as JSON for the week view."""
    try:  # a well-formed but impossible time (month 13, an offset past year 1 or 9999) is a ValueError/OverflowError
        start, end = (parse_datetime(request.GET.get(k) or "") for k in ("start", "end"))
        if not start or not end or timezone.is_naive(start) or timezone.is_naive(end):
            raise ValueError
        start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return JsonResponse({"code": "invalid", "detail": "start and end: ISO 8601 times with an offset."}, status=400)
    if not dt.timedelta(0) < end - start <= dt.timedelta(days=WEEK_MAX_DAYS):
        return JsonResponse(
            {"code": "invalid", "detail": f"end: after start, within {WEEK_MAX_DAYS} days."}, status=400
        )
    bookings = (
        Booking.objects.filter(user=request.user, start__lt=end, end__gt=start)
        .exclude(status=Booking.Status.CANCELLED)
        .select_related("workspace")
        .order_by("start", "pk")
    )
    return JsonResponse(
        {
            "bookings": [
                {
                    "id": str(b.pk),
                    "title": b.title,
                    "workspace": b.workspace.name,
                    "start": b.start.isoformat(),
                    "end": b.end.isoformat(),
                    "status": b.status,
                }
                for b in bookings
            ]
        }
    )


PARTS = {  # pieces of the page alone, for its script to refresh them
    "bookings": lambda request: render(request, "bookings/_bookings.html", {"rows": _rows(request.user, {})}),
    "connections": lambda request: render(
        request, "bookings/_connections.html", {"connections": _connections(request.user)}
    ),
    "week": _week,
}


@login_required
@ensure_csrf_cookie
def calendar_integration(request):
    part = PARTS.get(request.GET.get("part", ""))
    if part:
        return part(request)
    row_errors, notes = {}, []
    for message in messages.get_messages(request):
        if message.extra_tags.startswith("booking-"):
            row_errors[message.extra_tags.removeprefix("booking-")] = message.message
        else:
            notes.append(message)
    context = {
        "sandbox": settings.CALENDAR_SYNC_SANDBOX,
        "rows": _rows(request.user, row_errors),
        "notes": notes,
        "connections": _connections(request.user),
        "workspaces": Workspace.objects.order_by("name"),
    }
    return render(request, "bookings/integrations_calendar.html", context)


class BookingForm(forms.Form):
    """The page's booking form. `zone` is the browser's time zone, set by the page's script."""

    workspace = forms.ModelChoiceField(Workspace.objects.all())
    title = forms.CharField(max_length=200)
    date = forms.DateField()
    start = forms.TimeField()
    end = forms.TimeField()
    zone = forms.CharField(required=False, max_length=64)


@login_required
@require_POST
def new_booking(request):
    """The booking form without JavaScript (with it, the page posts to the bookings API instead): the
    times are read in the browser's zone when the script named it, else in the workspace's."""
    form = BookingForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Not booked: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect(f"{reverse('calendar-integration')}#book")
    data = form.cleaned_data
    zone = data["zone"] if data["zone"] in zoneinfo.available_timezones() else data["workspace"].time_zone
    start, end = (dt.datetime.combine(data["date"], data[k], zoneinfo.ZoneInfo(zone)) for k in ("start", "end"))
    try:
        booking = services.create_booking(
            user=request.user, workspace=data["workspace"], title=data["title"], start=start, end=end
        )
    except services.BookingError as exc:
        messages.error(request, f"Not booked: {exc}")
        return redirect(f"{reverse('calendar-integration')}#book")
    messages.success(request, f"Booked “{booking.title}” ({zone} time): confirm it below.")
    return _back_to(booking)


def _back_to(booking):
    return redirect(f"{reverse('calendar-integration')}#booking-{booking.pk}")


@login_required
@require_POST
def confirm_booking(request, pk):
    booking = get_object_or_404(Booking, pk=pk, user=request.user)
    try:
        services.confirm_booking(booking)
    except services.BookingError as exc:  # shown next to its row
        messages.error(request, str(exc), extra_tags=f"booking-{booking.pk}")
    return _back_to(booking)


@login_required
@require_http_methods(["GET", "POST"])
def cancel_booking(request, pk):
    """GET asks "are you sure?" (a page of its own: it works without JavaScript); POST cancels."""
    booking = get_object_or_404(Booking.objects.select_related("workspace"), pk=pk, user=request.user)
    if request.method == "GET":
        when = services.when(booking.start, booking.end, booking.workspace.time_zone)
        return render(request, "bookings/cancel_booking.html", {"booking": booking, "when": when})
    services.cancel_booking(booking)
    messages.success(request, f"Cancelled “{booking.title}”.")
    return _back_to(booking)


@login_required  # signed out: the site's sign-in page
@staff_member_required  # signed in but not staff: the admin sign-in page ("not authorized to access this page")
@ensure_csrf_cookie
def rooms_integration(request):
    """Staff connect a shared calendar per workspace (a room calendar) that gets every booking of that room."""
    return render(request, "bookings/integrations_rooms.html", {"sandbox": settings.CALENDAR_SYNC_SANDBOX})


def booking_link(request, pk):
    """Deep link from a calendar event back to the booking, on the page above."""
    return redirect(f"/integrations/calendar#booking-{pk}")
