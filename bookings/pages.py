"""Server-rendered pages (JavaScript over the REST API): the member's Integrations → Calendar page,
and staff's Integrations → Room calendars page."""
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.csrf import ensure_csrf_cookie


@login_required
@ensure_csrf_cookie
def calendar_integration(request):
    return render(request, "bookings/integrations_calendar.html", {"sandbox": settings.CALENDAR_SYNC_SANDBOX})


@login_required  # signed out: the site's sign-in page
@staff_member_required  # signed in but not staff: the admin sign-in page ("not authorized to access this page")
@ensure_csrf_cookie
def rooms_integration(request):
    """Staff connect a shared calendar per workspace (a room calendar) that gets every booking of that room."""
    return render(request, "bookings/integrations_rooms.html", {"sandbox": settings.CALENDAR_SYNC_SANDBOX})


def booking_link(request, pk):
    """Deep link from a calendar event back to the booking, on the page above."""
    return redirect(f"/integrations/calendar#booking-{pk}")
