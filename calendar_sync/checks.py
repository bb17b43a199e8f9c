"""System checks that name the setting to fix. Each provider checks its own settings."""
from django.conf import settings
from django.core import checks

from .conf import get_setting
from .exceptions import ConfigurationError
from .providers import provider_classes
from .sources import get_sources

DEV_DEFAULT_MARKER = "dev-only-insecure"


@checks.register()
def check_settings(app_configs, **kwargs):
    errors = []
    salts = settings.SALT_KEY if isinstance(getattr(settings, "SALT_KEY", None), (list, tuple)) else [getattr(settings, "SALT_KEY", None)]
    if not all(salts) or not salts:
        errors.append(checks.Error("SALT_KEY is not set: calendar tokens cannot be encrypted.", id="calendar_sync.E001"))
    if not settings.DEBUG:
        # With the development keys anyone can sign an OAuth state and derive the token key.
        for name, values in (("SECRET_KEY", [settings.SECRET_KEY]), ("SALT_KEY", salts)):
            if any(not v or DEV_DEFAULT_MARKER in str(v) or str(v).startswith("django-insecure") for v in values):
                errors.append(
                    checks.Error(
                        f"{name} is unset or the development default while DEBUG is off.",
                        hint=f"Set {name} in the environment to a long random value.",
                        id="calendar_sync.E005",
                    )
                )
    if not get_setting("FRONTEND_URL"):
        errors.append(
            checks.Warning('CALENDAR_SYNC["FRONTEND_URL"] is not set: the OAuth callback has nowhere to return.', id="calendar_sync.W001")
        )
    for cls in provider_classes():
        errors.extend(cls().check())
    try:
        for source in get_sources().values():
            source.get_model()
    except (ConfigurationError, LookupError) as exc:
        errors.append(checks.Error(f'CALENDAR_SYNC["SOURCES"]: {exc}', id="calendar_sync.E004"))
    return errors
