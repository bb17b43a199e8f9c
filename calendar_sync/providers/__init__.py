"""Calendar providers, listed explicitly (no discovery)."""
from django.utils.module_loading import import_string

from ..exceptions import ConfigurationError

PROVIDERS = {"google": "calendar_sync.providers.google.GoogleProvider"}


def get_provider(name):
    try:
        return import_string(PROVIDERS[name])()
    except KeyError:
        raise ConfigurationError(f"Unknown calendar provider {name!r}") from None
