"""Calendar providers, listed explicitly (no discovery): one module and one entry each."""

from functools import cache

from django.utils.module_loading import import_string

from ..exceptions import ConfigurationError

PROVIDERS = {
    "google": "calendar_sync.providers.google.GoogleProvider",
    "microsoft": "calendar_sync.providers.microsoft.MicrosoftProvider",
    "caldav": "calendar_sync.providers.caldav.CalDAVProvider",
    "ics": "calendar_sync.providers.ics.IcsProvider",
}


@cache
def _class(name):
    return import_string(PROVIDERS[name])


def provider_classes():
    return [_class(name) for name in PROVIDERS]


def get_provider(name):
    """The provider instance for a registry key; ConfigurationError for anything else."""
    if name not in PROVIDERS:
        raise ConfigurationError(f"Unknown calendar provider {name!r}")
    return _class(name)()


def configured_providers():
    """Providers whose client credentials are set, in registry order."""
    return [cls() for cls in provider_classes() if cls().is_configured()]
