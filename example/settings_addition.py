# calendar_sync: added to the settings.py of `django-admin startproject`.
import os

from calendar_sync.beat import beat_schedule

INSTALLED_APPS += ["rest_framework", "calendar_sync", "appointments"]

# With SECRET_KEY it derives the key that encrypts calendar tokens (a list rotates: the first encrypts).
SALT_KEY = os.environ.get("SALT_KEY", "dev-only-insecure-salt")

CALENDAR_SYNC = {
    # Google's OAuth client; Microsoft's keys are MICROSOFT_CLIENT_ID, _CLIENT_SECRET and _REDIRECT_URI.
    "GOOGLE_CLIENT_ID": os.environ.get("GOOGLE_CLIENT_ID", ""),
    "GOOGLE_CLIENT_SECRET": os.environ.get("GOOGLE_CLIENT_SECRET", ""),
    "GOOGLE_REDIRECT_URI": os.environ.get(
        "GOOGLE_REDIRECT_URI", "http://127.0.0.1:8000/api/calendar-sync/auth/google/callback"
    ),
    # Where the OAuth callback sends the member back to.
    "FRONTEND_URL": os.environ.get("FRONTEND_URL", "http://127.0.0.1:8000/"),
    "SOURCES": {"appointment": "appointments.calendar.AppointmentSource"},
    # No Celery here: syncs run in the process that saved, after its commit. With a worker, drop this line (see celery.py).
    "SYNC_MODE": "inline",
}

# With a Celery worker and beat (celery.py): every periodic task the app needs, from the app itself.
CELERY_BEAT_SCHEDULE = beat_schedule()
