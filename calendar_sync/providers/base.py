"""The provider interface: everything the app needs from a calendar service.

Implementations translate their service's errors into `calendar_sync.exceptions` at this
boundary, so nothing above it ever inspects an HTTP status.
"""
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    scopes: list = field(default_factory=list)

    def __repr__(self):
        return f"<TokenSet expires_at={self.expires_at} scopes={self.scopes}>"


@dataclass(frozen=True)
class Calendar:
    id: str
    summary: str
    primary: bool
    access_role: str


@dataclass(frozen=True)
class Operation:
    """Make event `event_id` exist with `event` (an Event; plus `object_ref`), or be gone (event=None)."""

    event_id: str
    event: object = None
    object_ref: str = ""
    known_to_exist: bool = False

    @property
    def is_delete(self):
        return self.event is None


class BaseProvider:
    name = ""
    #: Scopes that must be granted for the app to work.
    required_scopes = ()

    def authorization_url(self, *, state, code_verifier):
        raise NotImplementedError

    def exchange_code(self, *, code, code_verifier):
        """Return a TokenSet; raise CalendarSyncError (code = reason) on refusal."""
        raise NotImplementedError

    def refresh(self, refresh_token):
        """Return a new TokenSet; AuthorizationLost when the grant is gone."""
        raise NotImplementedError

    def revoke(self, token):
        """Revoke at the provider; AuthorizationLost if it was already invalid."""
        raise NotImplementedError

    def list_calendars(self, access_token):
        """Calendars the member can write to."""
        raise NotImplementedError

    def apply(self, access_token, calendar_id, operations):
        """Apply Operations idempotently; return one exception-or-None per operation, in order.

        Upserts create the event under its deterministic id or, when it already exists
        (even cancelled), patch it back to the desired state. Deleting a missing event
        succeeds. Several operations may travel in one batch request.
        """
        raise NotImplementedError
