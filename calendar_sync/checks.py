"""System checks that name the setting to fix. Each provider checks its own settings.

The regular checks are about the app and pass in any project's test run (Django's runner turns
DEBUG off and runs them). What only matters in production — the strength of the host's keys, plain
http to a loopback fake with DEBUG off — is a deploy check (`manage.py check --deploy`).
"""

from django.conf import settings
from django.core import checks
from django.core.exceptions import FieldDoesNotExist
from django.db import models

from . import quotas
from .conf import get_setting
from .exceptions import ConfigurationError
from .providers import provider_classes
from .sources import get_sources

DEV_DEFAULT_MARKER = "dev-only-insecure"
#: Shortest event-id field that holds every provider's ids (ours for Google are 32 characters; Graph's about 150).
EVENT_ID_MIN_LENGTH = 255
SYNC_MODES = ("celery", "inline")


def _salts():
    salt = getattr(settings, "SALT_KEY", None)
    return list(salt) if isinstance(salt, (list, tuple)) else [salt]


@checks.register()
def check_settings(app_configs, **kwargs):
    errors = []
    salts = _salts()
    if not all(salts) or not salts:
        errors.append(
            checks.Error("SALT_KEY is not set: calendar tokens cannot be encrypted.", id="calendar_sync.E001")
        )
    if not get_setting("FRONTEND_URL"):
        errors.append(
            checks.Warning(
                'CALENDAR_SYNC["FRONTEND_URL"] is not set: the OAuth callback has nowhere to return.',
                id="calendar_sync.W001",
            )
        )
    if get_setting("SYNC_MODE") not in SYNC_MODES:
        errors.append(
            checks.Error(f'CALENDAR_SYNC["SYNC_MODE"] must be one of {", ".join(SYNC_MODES)}.', id="calendar_sync.E007")
        )
    errors.extend(checks.Error(problem, id="calendar_sync.E008") for problem in quotas.problems())
    providers = [cls() for cls in provider_classes()]
    offered = any(p.is_configured() for p in providers if p.oauth)  # CalDAV and ICS need no settings: always on
    for provider in providers:
        messages = provider.check()
        if offered and not any(provider.setting(key) for key in provider.required_settings):
            messages = [
                m for m in messages if m.id != "calendar_sync.W001"
            ]  # not offered on purpose: nothing to warn about
        errors.extend(messages)
    try:
        for source in get_sources().values():
            source.get_model()
            errors.extend(check_event_id_field(source))
    except (ConfigurationError, LookupError) as exc:
        errors.append(checks.Error(f'CALENDAR_SYNC["SOURCES"]: {exc}', id="calendar_sync.E004"))
    return errors


def check_event_id_field(source):
    """E006: the source's event_id_field must be a text field long enough for any provider's event id."""
    if not source.event_id_field:
        return []
    model = source.get_model()
    name = f"{model._meta.label}.{source.event_id_field}"
    try:
        field = model._meta.get_field(source.event_id_field)
    except FieldDoesNotExist:
        problem = "no such field"
    else:
        if not isinstance(field, (models.CharField, models.TextField)) or not field.concrete:
            problem = f"a {type(field).__name__}, not a CharField or TextField"
        elif field.max_length is not None and field.max_length < EVENT_ID_MIN_LENGTH:
            problem = f"max_length {field.max_length} is shorter than an event id may be ({EVENT_ID_MIN_LENGTH})"
        else:
            return []
    return [
        checks.Error(
            f"{type(source).__name__}.event_id_field = {name!r} cannot hold a calendar event id: {problem}.",
            hint=f'Use a CharField(max_length={EVENT_ID_MIN_LENGTH} or more, blank=True, default="") or a nullable one, or leave event_id_field unset.',
            obj=model,
            id="calendar_sync.E006",
        )
    ]


@checks.register(checks.Tags.security, deploy=True)
def check_deploy(app_configs, **kwargs):
    """Production only: development keys, and endpoints that may carry tokens over plain http."""
    errors = []
    if not settings.DEBUG:
        # With the development keys anyone can sign an OAuth state and derive the token key.
        for name, values in (("SECRET_KEY", [settings.SECRET_KEY]), ("SALT_KEY", _salts())):
            if any(not v or DEV_DEFAULT_MARKER in str(v) or str(v).startswith("django-insecure") for v in values):
                errors.append(
                    checks.Error(
                        f"{name} is unset or the development default while DEBUG is off.",
                        hint=f"Set {name} to a long random value.",
                        id="calendar_sync.E005",
                    )
                )
    for cls in provider_classes():
        errors.extend(cls().deploy_check())
    return errors
