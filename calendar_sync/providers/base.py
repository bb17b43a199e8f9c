"""The provider interface: everything the app needs from a calendar service.

A provider is one module plus one entry in `providers.PROVIDERS`. It owns its settings
(with defaults), its system checks, the OAuth endpoints, scopes, error classification,
calendar listing and `apply()` with its own batching. Implementations translate their
service's errors into `calendar_sync.exceptions` at this boundary, so nothing above it ever
inspects an HTTP status or names a provider.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import requests
from django.conf import settings as django_settings
from django.core import checks

from ..conf import get_setting
from ..exceptions import AuthorizationLost, ConfigurationError, PermanentError, TransientError
from ..types import BusyBlock, Calendar, Changes, Conference, Event, Notification, Operation, Outcome, TokenSet

__all__ = [  # the value types stay importable from here, where the providers have always taken them
    "BaseProvider",
    "BusyBlock",
    "Calendar",
    "Changes",
    "Notification",
    "Operation",
    "Outcome",
    "TokenSet",
    "insecure_reason",
    "is_loopback",
    "retry_after",
]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def is_loopback(url: str) -> bool:
    try:
        return urlsplit(url).hostname in LOOPBACK
    except ValueError:
        return False


def insecure_reason(url: str, strict: bool = True) -> str | None:
    """Why `url` may not carry tokens, or None.

    https always; plain http only to a loopback host (a test or sandbox server on this
    machine), and with `strict` only while DEBUG is on. Connecting and the system checks are
    strict; calls made with an existing grant only refuse what would leave the machine.
    """
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if scheme == "https" or (scheme == "http" and is_loopback(url) and (django_settings.DEBUG or not strict)):
        return None
    return f"{url!r} must be an https URL (plain http only for loopback hosts with DEBUG on)"


def retry_after(value: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form), or None."""
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


class BaseProvider:
    """Subclass per service; list the subclass in `providers.PROVIDERS`."""

    #: Registry key, stored on connections and used in URLs (`auth/<name>`).
    name: ClassVar[str] = ""
    #: Shown to people ("Connect Google Calendar").
    label: ClassVar[str] = ""
    #: CALENDAR_SYNC keys this provider reads, with their defaults.
    settings: ClassVar[dict[str, Any]] = {}
    #: Keys that must be non-empty for members to connect.
    required_settings: ClassVar[tuple[str, ...]] = ()
    #: Keys holding URLs that carry tokens: https, or http to loopback in DEBUG.
    endpoint_settings: ClassVar[tuple[str, ...]] = ()
    #: Whether the service can revoke a grant; if not, disconnect only deletes locally.
    revocable: ClassVar[bool] = True
    #: Token-endpoint `error` codes (RFC 6749 §5.2) that mean the grant can no longer be used and
    #: only the member reconnecting can fix it: AuthorizationLost, so the connection needs_reauth.
    reauth_errors: ClassVar[frozenset[str]] = frozenset({"invalid_grant"})
    #: False for a credential that never expires (a CalDAV password, an ICS link): stored with no
    #: `expires_at`, used until the server refuses it; `refresh` then raises AuthorizationLost.
    refreshable: ClassVar[bool] = True
    #: Whether the service can tell us about changes (`watch`); if not, its calendars are only pulled.
    supports_push: ClassVar[bool] = True
    #: Whether events can be written (`apply`); a read-only source only counts for conflicts.
    writable: ClassVar[bool] = True
    #: Whether `apply` writes a series as one recurring event (an Event with `series`, and Operations
    #: with `occurrence` for its instances); if not, each occurrence of a series is an event of its own.
    supports_series: ClassVar[bool] = True
    #: Whether members connect through OAuth (`auth/<name>`); if not, through their own endpoint.
    oauth: ClassVar[bool] = True
    #: The service tells an event's attendees of every write its organizer makes, whatever we ask
    #: (Graph): the sync core then sends no write its guests need not hear of (`invitations`).
    notifies_every_write: ClassVar[bool] = False
    #: Whether `move` can take an event to another calendar of the account without re-inviting its
    #: guests (Google's events.move). If not, a calendar change deletes and creates them again.
    can_move: ClassVar[bool] = False
    #: Whether reads report our own events fully (version, guests' answers) and `event` reads one:
    #: then a member's write calendar is watched for what the member changes in it (`remote`).
    reports_changes: ClassVar[bool] = False
    #: The video meetings ("google_meet", "teams") the service can make where a calendar allows it;
    #: none: `capabilities` is never called.
    conferences: ClassVar[tuple[str, ...]] = ()
    #: What a member is told when their calendar can't make one (what kind of calendar could).
    conference_note: ClassVar[str] = ""
    #: Whether events written here can carry guests (attendees invited by the service).
    takes_guests: ClassVar[bool] = False

    # --- settings and checks -----------------------------------------------------------------
    def setting(self, key: str) -> Any:
        """CALENDAR_SYNC[key], or this provider's default for it (`settings`), or the app's."""
        return get_setting(key, self.settings)

    def is_configured(self) -> bool:
        return all(self.setting(key) for key in self.required_settings)

    def endpoint(self, key: str, strict: bool = False) -> str:
        """A URL setting, refused (503 not_configured) unless it may carry tokens (see insecure_reason)."""
        url = self.setting(key)
        reason = insecure_reason(url or "", strict)
        if not url or reason:
            raise ConfigurationError(f'CALENDAR_SYNC["{key}"]: {reason or "not set"}.', code="not_configured")
        return url

    def ready_to_connect(self) -> None:
        """Raise ConfigurationError (503 not_configured) naming what stops members connecting."""
        missing = [key for key in self.required_settings if not self.setting(key)]
        if missing:
            raise ConfigurationError(f"{self.label} is not configured ({', '.join(missing)}).", code="not_configured")
        for key in self.endpoint_settings:
            self.endpoint(key, strict=True)

    def check(self) -> list[checks.CheckMessage]:
        """System-check messages naming the setting to fix."""
        messages: list[checks.CheckMessage] = []
        for key in self.required_settings:
            if not self.setting(key):
                messages.append(
                    checks.Warning(
                        f'CALENDAR_SYNC["{key}"] is not set: members cannot connect {self.label}.',
                        hint=f'Set CALENDAR_SYNC["{key}"] in your settings (leave the provider unconfigured if you do not use it).',
                        id="calendar_sync.W001",
                    )
                )
        for key in self.endpoint_settings:
            url = self.setting(key)
            reason = url and insecure_reason(url, strict=False)  # a loopback fake is fine in any test run
            if reason:
                messages.append(checks.Error(f'CALENDAR_SYNC["{key}"] = {reason}.', id="calendar_sync.E002"))
        return messages

    def deploy_check(self) -> list[checks.CheckMessage]:
        """`check --deploy`: plain http to a loopback host only with DEBUG on (connecting refuses it otherwise)."""
        messages: list[checks.CheckMessage] = []
        for key in self.endpoint_settings:
            url = self.setting(key)
            if url and not insecure_reason(url, strict=False) and insecure_reason(url):
                messages.append(
                    checks.Error(f'CALENDAR_SYNC["{key}"] = {insecure_reason(url)}.', id="calendar_sync.E002")
                )
        return messages

    # --- OAuth (authorization code with PKCE S256) --------------------------------------------
    @property
    def scopes(self) -> tuple[str, ...]:
        """Scopes asked for at consent."""
        raise NotImplementedError

    def missing_scopes(self, granted: list[str]) -> set[str]:
        """Scopes the app needs that the grant lacks (empty set: good to go)."""
        return set(self.scopes) - set(granted)

    def authorization_url(self, *, state: str, code_challenge: str) -> str:
        raise NotImplementedError

    def exchange_code(self, *, code: str, code_verifier: str) -> TokenSet:
        """Return a TokenSet; raise CalendarSyncError (code = reason) on refusal."""
        raise NotImplementedError

    def refresh(self, refresh_token: str) -> TokenSet:
        """Return a new TokenSet (with a rotated refresh token if any); AuthorizationLost when the grant is gone."""
        raise NotImplementedError

    def revoke(self, token: str) -> None:
        """Revoke at the provider; AuthorizationLost if it was already invalid."""
        raise NotImplementedError

    def account(self, access_token: str) -> str:
        """Who or what a stored credential reaches, for people to see ("" when the service does not say).
        Never the secret itself."""
        return ""

    # --- Calendars and events ----------------------------------------------------------------
    def list_calendars(self, access_token: str) -> list[Calendar]:
        """Calendars the member can write to."""
        raise NotImplementedError

    def apply(self, access_token: str, calendar_id: str, operations: list[Operation]) -> list[Outcome]:
        """Apply Operations idempotently; return one Outcome per operation, in order.

        An upsert creates the event or, when it already exists (even cancelled), brings it
        back to the desired state; deleting a missing event succeeds. Several operations
        may travel in one batch request. Every HTTP request to the calendar API goes through
        `providers.http.sent(parts)` (the quota governor; a batch counts its parts) and its answer
        through `providers.http.answered` (a Retry-After marks the connection).
        """
        raise NotImplementedError

    def move(self, access_token: str, calendar_id: str, destination: str, operations: list[Operation]) -> list[Outcome]:
        """Move each operation's event (`remote_id`, else `key`) from `calendar_id` to `destination`, telling
        nobody; one Outcome per operation, in order. Only where `can_move`."""
        raise NotImplementedError

    # --- video meetings ----------------------------------------------------------------------
    def capabilities(self, access_token: str, calendar_id: str) -> list[str]:
        """Of `conferences`, the meetings `calendar_id` allows now (read when connecting and when the
        calendar changes)."""
        return []

    def read_conference(self, access_token: str, calendar_id: str, operation: Operation) -> Conference | None:
        """The event's meeting as the service shows it now (a pending one read again); None when unknown."""
        return None

    @staticmethod
    def event_text(event: Event) -> str:
        """The event's description, with the join link of a meeting made in another copy."""
        if not event.join_url:
            return event.description
        return f"{event.description}\n\nJoin the video meeting: {event.join_url}".lstrip()

    # --- reading calendars (never on the confirm path) --------------------------------------
    def busy(self, access_token: str, calendar_id: str, start: dt.datetime, end: dt.datetime) -> list[BusyBlock]:
        """Busy spans overlapping [start, end): confirmed events that block time (not free/transparent,
        not cancelled), with `ours` set for events this app wrote (extended property)."""
        raise NotImplementedError

    def changes(
        self, access_token: str, calendar_id: str, cursor: str | None, start: dt.datetime, end: dt.datetime
    ) -> Changes:
        """Incremental read since `cursor`; a full read of [start, end) when cursor is None or expired (410)."""
        raise NotImplementedError

    def event(self, access_token: str, calendar_id: str, remote_id: str) -> BusyBlock | None:
        """One event as it is now (with `version` and `guests`), or None when it is gone (deleted or
        cancelled). A read that fails raises: only a definite answer says an event is gone."""
        raise NotImplementedError

    # --- push notifications (Google channel / Graph subscription) -----------------------------
    def watch(self, access_token: str, calendar_id: str, address: str, secret: str) -> tuple[str, str, dt.datetime]:
        """Ask the service to POST to `address` when events of `calendar_id` change, carrying `secret`
        (Google's channel token, Graph's clientState). Returns (channel or subscription id, the
        service's resource id ("" when it has none), aware expiry)."""
        raise NotImplementedError

    def unwatch(self, access_token: str, channel_id: str, resource_id: str) -> None:
        """Stop a channel or subscription made by `watch`; one already gone (404/410) is success."""
        raise NotImplementedError

    def parse_notification(
        self, headers: Mapping[str, str], query: Mapping[str, str], body: Callable[[], bytes]
    ) -> Notification:
        """Read one POST to this provider's webhook: its headers, query string and (read on demand)
        body. Says which channels it names and with what secret; the webhook verifies them.
        Raises PermanentError (code "invalid") for a request no notification of this service looks like."""
        raise NotImplementedError

    # --- shared HTTP helpers for the token endpoint (RFC 6749) ------------------------------
    def authorize_url(self, base: str, params: dict[str, str]) -> str:
        return f"{base}{'&' if '?' in base else '?'}{urlencode(params)}"

    def token_request(self, url_key: str, data: dict[str, str]) -> dict[str, Any]:
        """POST a grant to the token endpoint; classify the answer once for every provider."""
        url = self.endpoint(url_key)
        try:
            response = requests.post(
                url, data=data, headers={"Accept": "application/json"}, timeout=get_setting("HTTP_TIMEOUT")
            )
        except requests.RequestException as exc:
            raise TransientError(
                f"{self.label} token endpoint unreachable: {type(exc).__name__}", code="provider_unreachable"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if response.status_code == 200 and body.get("access_token"):
            return body
        error = str(body.get("error") or "")
        if error in self.reauth_errors:
            raise AuthorizationLost(f"{self.label} says the grant is no longer valid ({error}).", code=error)
        if (
            response.status_code >= 500
            or response.status_code == 429
            or error in ("temporarily_unavailable", "server_error")
        ):
            raise TransientError(
                f"{self.label} token endpoint answered {response.status_code}.",
                status=response.status_code,
                code="provider_unreachable",
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        raise PermanentError(
            f"{self.label} refused the token request: {error or response.status_code}",
            status=response.status_code,
            code=error[:64] or "token_refused",
        )

    @staticmethod
    def token_set(body: dict[str, Any], refresh_token: str | None = None) -> TokenSet:
        """A TokenSet from a token-endpoint answer; keeps `refresh_token` when none is returned."""
        try:
            lifetime = int(body.get("expires_in") or 0)
        except (TypeError, ValueError):
            lifetime = 0
        scope = body.get("scope") or ""
        return TokenSet(
            access_token=str(body["access_token"]),
            refresh_token=body.get("refresh_token") or refresh_token,
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lifetime) if lifetime else None,
            scopes=scope.split() if isinstance(scope, str) else [str(s) for s in scope],
        )
