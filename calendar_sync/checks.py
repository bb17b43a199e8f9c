"""System checks that name the setting to fix."""
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks

from .conf import get_setting
from .exceptions import ConfigurationError
from .sources import get_sources

ENDPOINTS = ("GOOGLE_OAUTH_AUTH_URI", "GOOGLE_OAUTH_TOKEN_URI", "GOOGLE_OAUTH_REVOKE_URI", "GOOGLE_API_ROOT", "GOOGLE_REDIRECT_URI")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def is_loopback(url):
    return urlsplit(url).hostname in LOOPBACK


@checks.register()
def check_settings(app_configs, **kwargs):
    errors = []
    if not getattr(settings, "SALT_KEY", None):
        errors.append(checks.Error("SALT_KEY is not set: calendar tokens cannot be encrypted.", id="calendar_sync.E001"))
    for name in ("GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "GOOGLE_REDIRECT_URI", "FRONTEND_URL"):
        if not get_setting(name):
            errors.append(
                checks.Warning(
                    f'CALENDAR_SYNC["{name}"] is not set: members cannot connect a calendar.',
                    hint="Set the matching environment variable; see .env.example.",
                    id="calendar_sync.W001",
                )
            )
    for name in ENDPOINTS:
        url = get_setting(name)
        if not url:
            continue
        scheme = urlsplit(url).scheme
        if scheme == "https" or (scheme == "http" and settings.DEBUG and is_loopback(url)):
            continue
        errors.append(
            checks.Error(
                f'CALENDAR_SYNC["{name}"] = {url!r} must be an https URL.',
                hint="Plain http is accepted only for loopback hosts (127.0.0.1, localhost) with DEBUG on.",
                id="calendar_sync.E002",
            )
        )
    if not get_setting("GOOGLE_API_ROOT").endswith("/"):
        errors.append(checks.Error('CALENDAR_SYNC["GOOGLE_API_ROOT"] must end with "/".', id="calendar_sync.E003"))
    try:
        for key, source in get_sources().items():
            source.get_model()
    except (ConfigurationError, LookupError) as exc:
        errors.append(checks.Error(f'CALENDAR_SYNC["SOURCES"]: {exc}', id="calendar_sync.E004"))
    return errors
