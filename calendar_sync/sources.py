"""How a host model becomes calendar events. The app knows no model of its own.

The host subclasses `EventSource` and names it in `CALENDAR_SYNC["SOURCES"]`::

    CALENDAR_SYNC = {"SOURCES": {"booking": "bookings.calendar.BookingSource"}}
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.utils.module_loading import import_string

from .conf import get_setting
from .exceptions import ConfigurationError
from .models import MEMBER
from .types import Conference, Event, Guest, SeriesInfo

__all__ = [
    "Conference",
    "Event",
    "EventSource",
    "Guest",
    "SeriesInfo",
    "get_source",
    "get_sources",
]  # Event lives in `types`; importable here as before

if TYPE_CHECKING:
    from django.db.models import Model, QuerySet

    from .owners import Owner


class EventSource:
    """Base class: subclass it in the host project."""

    #: "app_label.ModelName" of the watched model.
    model: str = ""
    #: Saves that change none of these fields cause no sync work (empty: every save does).
    watched_fields: tuple[str, ...] = ()
    #: Optional CharField (or TextField) of the model that records the member's remote event id:
    #: null when there is none, or "" if the field is not nullable (see `stored_event_id`).
    event_id_field: str | None = None

    key: str = ""  # set from the CALENDAR_SYNC["SOURCES"] key

    def get_model(self) -> type[Model]:
        return apps.get_model(self.model)

    def get_queryset(self) -> QuerySet[Any]:
        """Objects as the sync reads them (one by primary key); add select_related() for what event() uses."""
        return self.get_model()._default_manager.all()

    def owner_id(self, obj: Any) -> Any:
        """Primary key of the member whose own calendar shows this object."""
        raise NotImplementedError

    def destinations(self, obj: Any) -> dict[str, tuple[str, Any]]:
        """{role: (owner kind, owner pk)}: every calendar this object belongs in.

        The default is the member's own calendar. A host adds shared ones, e.g. a booking's
        room: ``{"member": ("user", obj.user_id), "workspace": ("workspace", obj.workspace_id)}``.
        Each destination has its own outbox record, retries and errors.
        """
        return {"member": (MEMBER, self.owner_id(obj))}

    def should_exist(self, obj: Any) -> bool:
        """True when the object should have an event now (e.g. a confirmed booking)."""
        raise NotImplementedError

    def event(self, obj: Any, destination: str = "member") -> Event:
        """The `Event` for this object in the calendar of `destination` (a role of destinations())."""
        raise NotImplementedError

    def upcoming(self, owner: Owner) -> QuerySet[Any]:
        """Objects to sync when `owner` (an owners.Owner) connects: upcoming ones that should exist there."""
        raise NotImplementedError

    def modified(self, obj: Any) -> datetime | None:
        """When the object last changed (an aware datetime); None if unknown.

        The iCal feed uses it as the event's DTSTAMP and LAST-MODIFIED; when None, the
        time the feed's content last changed stands in.
        """
        return None

    def series(self, obj: Any) -> SeriesInfo | None:
        """The recurring series `obj` is one occurrence of, or None (a single event)."""
        return None

    def series_event(self, obj: Any, destination: str = "member") -> Event:
        """The recurring event of `obj`'s series in `destination`: its title, place and text as the
        series has them (not one occurrence's). Start and end are the series' first occurrence; the
        sync sets `series` itself. The default: the occurrence's event moved to the series' start."""
        info = self.series(obj)
        event = self.event(obj, destination)
        if info is None:
            return event
        return replace(event, start=info.start, end=info.end, time_zone=info.time_zone, series=info)

    def series_members(self, obj: Any) -> Iterable[Any]:
        """Every occurrence of `obj`'s series, `obj` included (cancelled ones too). The sync reads which
        of them should exist: the series' event ends after the last one (UNTIL) and is deleted when none
        should. The default knows only `obj`."""
        return [obj]

    # --- what happened in a calendar, reported to the host; the host's rules decide (decision 21) ---
    # The three remote-change hooks may answer a word saying what the host did ("cancelled",
    # "put_back"...): it is the outcome of the change's row in the member's activity (None: "ok").
    def conference_changed(self, obj: Any, destination: str, conference: Conference) -> None:
        """The event's video meeting changed (made, ready, failed); e.g. store its join link."""

    def remote_deleted(self, obj: Any, destination: str) -> str | None:
        """Someone deleted the object's event in the calendar of `destination` (not this app)."""
        return None

    def remote_moved(self, obj: Any, destination: str, start: datetime, end: datetime) -> str | None:
        """Someone moved the object's event in the calendar of `destination` to `start`–`end`."""
        return None

    def responses_changed(self, obj: Any, destination: str, guests: list[Guest]) -> str | None:
        """The guests' answers to the object's event changed, as the provider reports them now."""
        return None

    def stored_event_id(self, remote_id: str | None) -> str | None:
        """The value `event_id_field` holds for `remote_id`; for no event, None if the field is nullable, else ""."""
        if remote_id:
            return remote_id
        return None if self.get_model()._meta.get_field(self.event_id_field or "").null else ""

    def event_id(self, object_id: Any, destination: str = "member") -> str:
        """Deterministic key per (source, object, destination): base32hex of a hash, so retries never duplicate.

        Google takes it as the event id, Graph as the create's transactionId.
        """
        name = f"{self.key}:{object_id}" if destination == "member" else f"{self.key}:{object_id}:{destination}"
        digest = hashlib.sha256(name.encode()).digest()[:20]
        return base64.b32hexencode(digest).decode().lower()


@lru_cache(maxsize=4)
def _load(items: tuple[tuple[str, str], ...]) -> dict[str, EventSource]:
    sources: dict[str, EventSource] = {}
    for key, path in items:
        try:
            source = import_string(path)()
        except ImportError as exc:
            raise ConfigurationError(f'CALENDAR_SYNC["SOURCES"][{key!r}]: cannot import {path!r} ({exc})') from exc
        source.key = key
        sources[key] = source
    return sources


def get_sources() -> dict[str, EventSource]:
    """{key: EventSource instance} from settings."""
    return _load(tuple(sorted(get_setting("SOURCES").items())))


def get_source(key: str) -> EventSource:
    try:
        return get_sources()[key]
    except KeyError:
        raise ConfigurationError(f'No calendar source {key!r} in CALENDAR_SYNC["SOURCES"]') from None
