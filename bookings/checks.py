"""The booking horizon must stay within what room calendars are read: every bookable time covered."""

from django.conf import settings
from django.core import checks

from calendar_sync.api import get_setting


@checks.register()
def check_pull_window(app_configs, **kwargs):
    window, horizon = get_setting("PULL_WINDOW_DAYS"), settings.BOOKING_HORIZON_DAYS
    if window > horizon:
        return []
    return [
        checks.Error(
            f'CALENDAR_SYNC["PULL_WINDOW_DAYS"] ({window}) must exceed BOOKING_HORIZON_DAYS ({horizon}): '
            "bookings beyond the window would never meet the events made in room calendars.",
            hint="Leave PULL_WINDOW_DAYS unset in CALENDAR_SYNC (it follows the horizon), or make it at least the horizon plus one day.",
            id="bookings.E001",
        )
    ]
