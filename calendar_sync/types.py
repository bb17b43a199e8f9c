"""The value types every layer passes around, below everything: this module imports nothing of ours.

What a host's `EventSource` returns (`Event`), what the sync hands a provider (`Operation`) and gets
back (`Outcome`), what a provider reads (`Calendar`, `BusyBlock`, `Changes`, `TokenSet`), and what a
flow returns for an entry point to enqueue (`Task`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    """Provider-neutral description of the event one object should have."""

    summary: str
    start: dt.datetime
    end: dt.datetime
    time_zone: str = "UTC"
    location: str = ""
    description: str = ""
    #: Guests' e-mail addresses: attendees of this copy (the member's; a room's copy carries none).
    attendees: tuple[str, ...] = ()
    #: The video link wanted: "none", "auto" (what the calendar can make), "google_meet" or "teams".
    conference: str = "none"
    #: A join link made in another copy (the member's), carried in this one's text; "" when none.
    join_url: str = ""
    #: Set when the object is one occurrence of a recurring series (`EventSource.series`).
    series: SeriesInfo | None = None


@dataclass(frozen=True)
class SeriesInfo:
    """The series an occurrence belongs to: one recurring event per destination (design decision 22).

    `key` is the same for every occurrence; `rule` an RFC 5545 RRULE (without the "RRULE:" prefix);
    `start`/`end` the series' first occurrence (DTSTART/DTEND), expanded in `time_zone`;
    `original_start` this occurrence's start as the rule makes it (its RECURRENCE-ID).
    """

    key: str
    rule: str
    time_zone: str
    start: dt.datetime
    end: dt.datetime
    original_start: dt.datetime


@dataclass(frozen=True)
class Guest:
    """A guest of a member's event and their answer as the provider last reported it:
    one of "needsAction", "accepted", "declined", "tentative"."""

    email: str
    response: str = "needsAction"


@dataclass(frozen=True)
class Conference:
    """The video meeting of an event: `type` "google_meet" or "teams" ("" when none), its join link,
    and `status` "none", "pending", "ready" or "failed" (with `reason`)."""

    type: str = ""
    join_url: str = ""
    status: str = "none"
    reason: str = ""


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    expires_at: dt.datetime | None
    scopes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<TokenSet expires_at={self.expires_at} scopes={self.scopes}>"


@dataclass(frozen=True)
class Calendar:
    id: str
    summary: str
    primary: bool
    access_role: str
    owner: str = ""  # the account it belongs to (an e-mail address), where the provider says


@dataclass(frozen=True)
class Operation:
    """Make the event for `key` match `event`, or be gone (event=None).

    `key` is deterministic per (source, object): Google uses it as the event id, Graph as
    the create's `transactionId`; both store it in an extended property so our events are
    always recognisable. `remote_id` is the provider's id of the event when we know it;
    `known_to_exist` says an event may exist even when its id is unknown (a lost response).
    `notify` says whether the event's guests should hear of this write (an invitation, update or
    cancellation): the sync core decides it (design decision 21); a provider that can choose
    (Google's `sendUpdates`) follows it.
    """

    key: str
    event: Event | None = None
    object_ref: str = ""
    remote_id: str | None = None
    known_to_exist: bool = False
    notify: bool = False
    #: The video meeting this copy is to have, as the sync decided from the calendar's capabilities
    #: (None: none wanted). Status "none": make one; "pending"/"ready": it exists, never ask again;
    #: "failed": the calendar can't, write the event without one and report this as the outcome's.
    conference: Conference | None = None
    #: Set for a write to one instance of the recurring event `key` (`remote_id` when known): the
    #: instance the rule starts at this moment (its original start, aware). With `event` the instance
    #: becomes that exception; without, the instance is cancelled. Never creates the recurring event.
    occurrence: dt.datetime | None = None

    @property
    def is_delete(self) -> bool:
        return self.event is None


@dataclass(frozen=True)
class BusyBlock:
    """An event as a span of busy time. `ours` when it is recognisably an event this app wrote.

    `version` is the provider's version of the event as read (Google etag, Graph changeKey) and
    `guests` its attendees' answers, so a change someone made to one of our events can be told
    from our own writes (see `remote`).
    """

    start: dt.datetime
    end: dt.datetime
    remote_id: str = ""
    summary: str = ""
    ours: bool = False
    #: The recurring event this is an occurrence of (Google `recurringEventId`, Graph `seriesMasterId`),
    #: so an occurrence of a series this app wrote is known as ours by the master's id.
    series_id: str = ""
    version: str = field(default="", compare=False)  # a block is its span and id: equal whatever version read it
    guests: tuple[Guest, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Changes:
    """What changed in a calendar since `cursor` (Google syncToken, Graph deltaLink).

    `full` means a complete read of the window (first pull, or the old cursor expired with 410):
    `blocks` is then everything and the caller replaces what it had. Otherwise `blocks` are the
    events added or changed and `removed` the remote ids deleted, cancelled or no longer busy.
    """

    blocks: list[BusyBlock]
    removed: list[str]
    cursor: str
    full: bool


@dataclass(frozen=True)
class Outcome:
    """What happened to one Operation: an error (a `CalendarSyncError`), or success with the event's remote id."""

    error: Exception | None = None
    remote_id: str | None = None
    #: The provider's version of what was written (Google etag, Graph changeKey, CalDAV ETag), so
    #: our own writes are never mistaken for the member's changes.
    version: str | None = None
    #: The event's video meeting as the provider answered, when one was asked for.
    conference: Conference | None = None


@dataclass(frozen=True)
class Notification:
    """A push notification as its provider read it (`BaseProvider.parse_notification`).

    `items` are the (channel or subscription id, secret, resource id or None) the request claims to
    be about, for the webhook to verify against what it stored; `status` is the answer when one of
    them checks out. `ping` is a notification with nothing to do (answered `status` at once);
    `echo` a handshake the webhook answers with that text.
    """

    items: tuple[tuple[str, str, str | None], ...] = ()
    status: int = 200
    ping: bool = False
    echo: str | None = None


@dataclass(frozen=True)
class Task:
    """Follow-up work for the entry point to enqueue after commit: a task of `tasks.TASKS` by name,
    with its arguments (primary keys and plain strings only, never a token)."""

    name: str
    args: tuple[str, ...] = ()
