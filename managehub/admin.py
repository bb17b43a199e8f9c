"""The admin site: no URL an operator can send reaches a credential.

Django allows admin lookups on a model's own fields and on primary keys across a relation, so a
staff user who may only view users could filter `?password__startswith=` or
`?auth_token_set__digest__regex=^ab` and read a secret a bit per request. Every ModelAdmin
registered on this site (any app's, the host's included) refuses lookups, filters, search,
ordering and sortable columns whose path reaches a credential: a refused lookup is Django's own
DisallowedModelAdminLookup, a 400.
"""

from django.conf import settings
from django.contrib import admin
from django.db.models import F

from calendar_sync.fields import is_secret, reaches_secret

#: This project's credential columns, as "app_label.model.field". calendar_sync's own (encrypted
#: OAuth tokens, PKCE verifiers, feed secrets, the feed's secret hash, and any later one such as a
#: CalDAV password) count without being listed (`calendar_sync.fields.is_secret`).
CREDENTIAL_FIELDS = frozenset(
    {
        f"{settings.AUTH_USER_MODEL}.password".lower(),
        "knox.authtoken.digest",  # the hash of an API token (its primary key)
        "knox.authtoken.token_key",  # an API token's first characters, in clear
        "authtoken.token.key",  # DRF's clear-text API tokens, should that app ever be installed
    }
)


def is_credential(field):
    model = getattr(field, "model", None)
    return is_secret(field) or (model is not None and f"{model._meta.label_lower}.{field.name}" in CREDENTIAL_FIELDS)


def reaches_credential(model, path):
    """True when a lookup, filter, search or ordering path reaches a credential (the app's walker,
    with this project's credential columns added)."""
    return reaches_secret(model, path, is_credential)


def _paths(order):
    """The field paths an ordering reads: a name (`-digest`), F(), OrderBy or any expression."""
    if isinstance(order, str):
        yield order.lstrip("-")
    elif isinstance(order, F):
        yield order.name
    elif hasattr(order, "get_source_expressions"):
        for source in order.get_source_expressions():
            yield from _paths(source)


class CredentialGuard:
    """Mixed into every ModelAdmin on AdminSite (see the module docstring)."""

    def _reaches(self, order):
        return any(reaches_credential(self.model, path) for path in _paths(order))

    def lookup_allowed(self, lookup, value, request=None):
        return not reaches_credential(self.model, lookup) and super().lookup_allowed(lookup, value, request)

    def get_list_filter(self, request):
        return [
            item
            for item in super().get_list_filter(request)
            if not self._reaches(item[0] if isinstance(item, (list, tuple)) else item)
        ]

    def get_search_fields(self, request):
        return [item for item in super().get_search_fields(request) if not self._reaches(item.lstrip("^=@"))]

    def get_ordering(self, request):
        return [item for item in super().get_ordering(request) if not self._reaches(item)]

    def get_list_display(self, request):
        """Columns showing or sorting (`?o=`) by a credential are left out."""
        return [item for item in super().get_list_display(request) if not self._reaches(self._column_order(item))]

    def _column_order(self, item):
        if isinstance(item, str) and reaches_credential(self.model, item):
            return item
        attr = item if callable(item) else getattr(self, item, None) or getattr(self.model, item, None)
        attr = attr.fget if isinstance(attr, property) else attr
        return getattr(attr, "admin_order_field", None)


class AdminSite(admin.AdminSite):
    """Django's admin site; every ModelAdmin registered on it gets CredentialGuard."""

    def register(self, model_or_iterable, admin_class=None, **options):
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, CredentialGuard):
            names = {
                "__module__": admin_class.__module__,
                "__qualname__": admin_class.__qualname__,
                "__doc__": admin_class.__doc__,
            }
            admin_class = type(admin_class.__name__, (CredentialGuard, admin_class), names)
        super().register(model_or_iterable, admin_class, **options)


def drop_token_admin():
    """knox registers an admin that lists token digests and edits them. API tokens belong to their
    member (sign-in makes one, expiry ends it), so no operator screen shows them; deactivating an
    account stops its tokens at once."""
    from knox.models import get_token_model

    model = get_token_model()
    if admin.site.is_registered(model):
        admin.site.unregister(model)
