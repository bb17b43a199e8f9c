"""One error hierarchy; provider errors are classified once, where they are raised."""

from django.core.exceptions import ImproperlyConfigured


class CalendarSyncError(Exception):
    """Base of every error the app raises about talking to a calendar provider.

    `code` is a short machine-readable reason (shown in APIs and redirects); `status`
    is the provider's HTTP status when there was one. Never carries a token.
    """

    code = "error"

    def __init__(self, message="", *, code=None, status=None):
        super().__init__(message)
        self.code = code or self.code
        self.status = status


class TransientError(CalendarSyncError):
    """Network trouble, 5xx, 429 or a rate-limit 403: retry later (after `retry_after`)."""

    code = "transient"

    def __init__(self, message="", *, retry_after=None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class UsageLimited(TransientError):
    """The account hit the provider's usage limit for writes (Google's "Calendar usage limits exceeded"),
    not the API quota: it can't write for hours, so writes to that connection pause for
    USAGE_LIMIT_PAUSE instead of being retried (a retry storm only prolongs the limit)."""

    code = "usage_limited"


class AuthorizationLost(CalendarSyncError):
    """The grant is gone (invalid_grant, 401 after refresh): the member must reconnect."""

    code = "authorization_lost"


class PermanentError(CalendarSyncError):
    """The provider refused the request for good (bad request, calendar gone, forbidden)."""

    code = "permanent"


class NotConnected(CalendarSyncError):
    """There is no connection to use (nothing to refresh, read or write)."""

    code = "not_connected"


class ConfigurationError(CalendarSyncError, ImproperlyConfigured):
    """A setting is missing or wrong (including a key that cannot decrypt stored tokens)."""

    code = "configuration"


class Undecryptable(ConfigurationError):
    """A stored secret no configured key can decrypt (a key rotated without keeping the old one).

    The message tells the operator what to do; members are never shown it."""

    code = "undecryptable"
