"""The one place settings are read: `CALENDAR_SYNC = {...}` in the host's settings.

Read lazily on every call, so `override_settings(CALENDAR_SYNC=...)` works in tests.
"""
from django.conf import settings

DEFAULTS = {
    # OAuth client registered with Google (required to connect).
    "GOOGLE_CLIENT_ID": "",
    "GOOGLE_CLIENT_SECRET": "",
    # Must match an "Authorized redirect URI" of the Google client exactly.
    "GOOGLE_REDIRECT_URI": "",
    # Endpoints; overridable so tests (and integrators) can point at calendar_sync.testing.FakeGoogle.
    "GOOGLE_OAUTH_AUTH_URI": "https://accounts.google.com/o/oauth2/auth",
    "GOOGLE_OAUTH_TOKEN_URI": "https://oauth2.googleapis.com/token",
    "GOOGLE_OAUTH_REVOKE_URI": "https://oauth2.googleapis.com/revoke",
    "GOOGLE_API_ROOT": "https://www.googleapis.com/",
    "GOOGLE_SCOPES": [
        "https://www.googleapis.com/auth/calendar.events",
        "https://www.googleapis.com/auth/calendar.readonly",
    ],
    # Where the OAuth callback sends the browser back to, and the base of deep links.
    "FRONTEND_URL": "",
    # Seconds an OAuth state stays valid.
    "STATE_MAX_AGE": 600,
    # Refresh an access token this many seconds before it expires.
    "REFRESH_MARGIN": 300,
    # HTTP timeout (seconds) for every call to the provider.
    "HTTP_TIMEOUT": 15,
    # Per-member request budget at the provider (Google: 600/min by default).
    "RATE_LIMIT_PER_MINUTE": 600,
    # Length in seconds of the rate-limit window (60 for Google's per-minute quota).
    "RATE_LIMIT_WINDOW": 60,
    # Sub-requests per batch call (Google allows 50 for Calendar).
    "BATCH_SIZE": 50,
    # Task retries for transient errors: attempts and backoff (seconds, doubled, with jitter).
    "MAX_RETRIES": 8,
    "RETRY_BACKOFF": 2,
    "RETRY_BACKOFF_MAX": 600,
    # Sweeper: work pending longer than this (seconds) is re-enqueued, at most SWEEP_BATCH a run.
    "SWEEP_STALE_AFTER": 60,
    "SWEEP_BATCH": 500,
    # Watched models: {"key": "dotted.path.to.EventSource subclass"}.
    "SOURCES": {},
}


def get_setting(name):
    """Return CALENDAR_SYNC[name], falling back to the documented default."""
    if name not in DEFAULTS:
        raise KeyError(f"Unknown calendar_sync setting {name!r}")
    return getattr(settings, "CALENDAR_SYNC", {}).get(name, DEFAULTS[name])
