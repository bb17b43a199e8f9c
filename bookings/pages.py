"""Server-rendered pages: the member's Integrations → Calendar page (JavaScript over the REST API)."""
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.csrf import ensure_csrf_cookie


@login_required
@ensure_csrf_cookie
def calendar_integration(request):
    return render(request, "bookings/integrations_calendar.html", {"sandbox": settings.CALENDAR_SYNC_SANDBOX})


def booking_link(request, pk):
    """Deep link from a calendar event back to the booking, on the page above."""
    return redirect(f"/integrations/calendar#booking-{pk}")
