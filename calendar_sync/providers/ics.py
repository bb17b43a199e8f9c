"""ICS links: the secret iCal address Google, Outlook and iCloud publish, or any `.ics` file.

Read-only, so only for conflicts: never the write connection (`apply` refuses). The URL is the
secret: stored encrypted as the connection's credential, shown only redacted (`redact`), never
logged. It is fetched through `calendar_sync.fetch` (https, public addresses, checked redirects)
with conditional GET: the validators (ETag, Last-Modified) travel in the pull cursor and, for
busy reads, beside the parsed calendar in Django's cache, so an unchanged feed (304) is never
parsed again. Size and time are bounded (ICS_MAX_BYTES, ICS_FETCH_SECONDS).

Expansion (`expand`, shared with CalDAV) uses `icalendar` and `recurring-ical-events`: RRULE,
RDATE, EXDATE, RECURRENCE-ID overrides and VTIMEZONE; all-day and floating times are read in
the current time zone (Django's: the host activates a member's); TRANSPARENT and CANCELLED
events never block.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import time
from urllib.parse import urlsplit

import icalendar
import recurring_ical_events
import requests
import urllib3
from django.core.cache import cache
from django.utils import timezone

from .. import fetch
from ..conf import get_setting
from ..exceptions import AuthorizationLost, CalendarSyncError, PermanentError, TransientError
from .base import BaseProvider, BusyBlock, Calendar, Changes, Outcome, TokenSet, retry_after

UTC = dt.UTC
CACHE_PREFIX = "calendar_sync:ics:"
GONE = {401, 403, 404, 410}  # a secret link that was reset or withdrawn: the member must give the new one
UID_SUFFIX = "@calendar-sync"  # the UID of every event this app writes over CalDAV is `<key>@calendar-sync`
MARKER = "X-CALENDAR-SYNC-SOURCE"  # and it carries this property (the object it was written for)
#: The most occurrences one read expands (a busy week has dozens; a SECONDLY rule has 600,000).
MAX_OCCURRENCES = 10_000


def is_ours(component: icalendar.Component) -> bool:
    """Whether this app wrote the event (wherever it is read back: over CalDAV, or in an ICS feed)."""
    return str(component.get("UID", "")).endswith(UID_SUFFIX) or component.get(MARKER) is not None


# --- expanding iCalendar into busy time (shared with CalDAV) ----------------------------------
def _moment(value: dt.date | dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """Aware UTC: a date is midnight in `zone`, a floating time is read in `zone`."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def blocks_for(component: icalendar.Component) -> bool:
    """Whether an event (or occurrence) takes time: not TRANSPARENT, not CANCELLED."""
    return (
        str(component.get("TRANSP", "OPAQUE")).upper() != "TRANSPARENT"
        and str(component.get("STATUS", "CONFIRMED")).upper() != "CANCELLED"
    )


def _occurrences(calendar: icalendar.Calendar, start: dt.datetime, end: dt.datetime):
    """Every occurrence overlapping [start, end) widened by a day each side (all-day events in any
    zone; clipped later), one at a time, so that `expand` can stop counting: the library's
    `between` builds the whole list first. Bad series are skipped, as `between` skips them."""
    query = recurring_ical_events.of(calendar, skip_bad_series=True)
    low, high = query.to_datetime(start - dt.timedelta(days=1)), query.to_datetime(end + dt.timedelta(days=1))
    for series in query.series:
        with contextlib.suppress(*query.suppressed_errors):
            for occurrence in series.between(low, high):
                yield occurrence.as_component(query.keep_recurrence_attributes)


def expand(
    calendar: icalendar.Calendar,
    start: dt.datetime,
    end: dt.datetime,
    remote_id: str | None = None,
) -> list[BusyBlock]:
    """Busy blocks of every event occurrence in `calendar` overlapping [start, end).

    Occurrences of one event get ids `<id>` then `<id>#1`, `<id>#2`… in time order, where `<id>` is
    `remote_id` (a CalDAV resource holds one event) or the event's UID; `ours` marks the events this
    app wrote (`is_ours`)."""
    zone = timezone.get_current_timezone()
    occurrences: dict[str, list[tuple[dt.datetime, dt.datetime, icalendar.Component]]] = {}
    for count, component in enumerate(_occurrences(calendar, start, end)):
        if count >= MAX_OCCURRENCES:  # FREQ=SECONDLY in a feed: millions of blocks, minutes of CPU
            raise PermanentError("The calendar has too many events in this window.", code="too_many_events")
        if not blocks_for(component) or component.get("DTSTART") is None:
            continue
        begin = _moment(component["DTSTART"].dt, zone)
        finish = _moment(component["DTEND"].dt, zone) if component.get("DTEND") is not None else begin
        if finish <= begin or begin >= end or finish <= start:
            continue
        key = remote_id or str(component.get("UID", ""))
        occurrences.setdefault(key, []).append((begin, finish, component))
    blocks = []
    for key, spans in occurrences.items():
        for i, (begin, finish, component) in enumerate(sorted(spans, key=lambda s: (s[0], s[1]))):
            blocks.append(
                BusyBlock(
                    start=begin,
                    end=finish,
                    remote_id=key if i == 0 else f"{key}#{i}",
                    summary=str(component.get("SUMMARY", "")),
                    ours=is_ours(component),
                )
            )
    return blocks


def parse(text: bytes | str) -> icalendar.Calendar:
    """One iCalendar document; PermanentError (`invalid_calendar`) when it is not one."""
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except (ValueError, IndexError, KeyError, TypeError):
        raise PermanentError("The address did not return an iCalendar file.", code="invalid_calendar") from None
    if not isinstance(calendar, icalendar.Calendar) or calendar.name != "VCALENDAR":
        raise PermanentError("The address did not return an iCalendar file.", code="invalid_calendar")
    return calendar


def _length(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def redact(url: str) -> str:
    """An ICS link as people may see it again: its host only. The path is the secret (iCloud's published
    links end in their token), so no part of it is shown."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/…"


# --- the provider ------------------------------------------------------------------------------
def credential(url: str) -> str:
    """What the connection stores (encrypted): the link itself."""
    return json.dumps({"url": url})


def _url(access_token: str) -> str:
    try:
        return str(json.loads(access_token)["url"])
    except (ValueError, KeyError, TypeError):
        raise AuthorizationLost("The stored ICS link is unreadable.", code="invalid_credential") from None


class IcsProvider(BaseProvider):
    name = "ics"
    label = "ICS link"
    settings = {
        # Largest ICS file read (bytes); a larger one is refused.
        "ICS_MAX_BYTES": 5_000_000,
        # Longest a whole fetch of an ICS link may take (seconds), however slowly it trickles in.
        "ICS_FETCH_SECONDS": 30,
    }
    revocable = False
    refreshable = False
    supports_push = False
    writable = False
    oauth = False

    def refresh(self, refresh_token):
        """Nothing to refresh: the link is used as it is until its server refuses it."""
        return TokenSet(access_token=refresh_token, refresh_token=refresh_token, expires_at=None)

    def account(self, access_token: str) -> str:
        return redact(_url(access_token))

    # --- fetching ------------------------------------------------------------------------------
    def fetch(self, url: str, etag: str = "", modified: str = "") -> tuple[bytes | None, str, str]:
        """GET the link, conditionally: (body, or None for 304 Not Modified; ETag; Last-Modified)."""
        headers = {"Accept": "text/calendar, */*;q=0.5"}
        if etag:
            headers["If-None-Match"] = etag
        if modified:
            headers["If-Modified-Since"] = modified
        limit, deadline = self.setting("ICS_MAX_BYTES"), time.monotonic() + self.setting("ICS_FETCH_SECONDS")
        try:
            with fetch.SafeSession(secret=True) as session:
                response = session.get(url, headers=headers, timeout=get_setting("HTTP_TIMEOUT"), stream=True)
                status = response.status_code or 0
                if status == 304:
                    return None, etag, modified
                if status in GONE:
                    raise AuthorizationLost(f"The ICS link answered {status}: it no longer works.", status=status)
                if status == 429 or status >= 500:
                    raise TransientError(
                        f"The ICS link answered {status}.",
                        status=status,
                        code="unavailable",
                        retry_after=retry_after(response.headers.get("Retry-After")),
                    )
                if status != 200:
                    raise PermanentError(f"The ICS link answered {status}.", status=status, code="rejected")
                if _length(response.headers.get("Content-Length")) > limit:
                    raise PermanentError("The ICS file is too large.", code="too_large")
                body = bytearray()
                # read1: whatever has arrived (iter_content waits for a whole chunk, so a link that
                # trickles a byte at a time would never reach the deadline check).
                for chunk in iter(lambda: response.raw.read1(65536, decode_content=True), b""):
                    body += chunk
                    if len(body) > limit:
                        raise PermanentError("The ICS file is too large.", code="too_large")
                    if time.monotonic() > deadline:
                        raise TransientError("The ICS link took too long to answer.", code="timeout")
                return bytes(body), response.headers.get("ETag", ""), response.headers.get("Last-Modified", "")
        except CalendarSyncError:
            raise
        except (requests.RequestException, OSError, urllib3.exceptions.HTTPError) as exc:
            raise fetch.network_error(exc, "the ICS link") from None

    def calendar(self, url: str) -> icalendar.Calendar:
        """The feed, parsed; unchanged since the last read (304) it comes from the cache unparsed."""
        key = CACHE_PREFIX + hashlib.sha256(url.encode()).hexdigest()
        cached = cache.get(key)
        etag, modified = (cached["etag"], cached["modified"]) if cached else ("", "")
        body, etag, modified = self.fetch(url, etag, modified)
        if body is None and cached:
            return cached["calendar"]
        if body is None:  # a 304 to a request that had no validators: a broken server
            body, etag, modified = self.fetch(url)
        calendar = parse(body or b"")
        if etag or modified:
            cache.set(key, {"etag": etag, "modified": modified, "calendar": calendar}, 24 * 3600)
        return calendar

    # --- the provider interface --------------------------------------------------------------
    def list_calendars(self, access_token):
        """The one calendar a link is (read-only)."""
        calendar = self.calendar(_url(access_token))
        name = str(calendar.get("X-WR-CALNAME", "") or self.label)
        return [Calendar("primary", name, True, "reader")]

    def apply(self, access_token, calendar_id, operations):
        """Refused, every one: an ICS link is never where bookings go."""
        refused = PermanentError("An ICS link is read-only: bookings cannot be written to it.", code="read_only")
        return [Outcome(refused)] * len(operations)

    def busy(self, access_token, calendar_id, start, end):
        return expand(self.calendar(_url(access_token)), start, end)

    def changes(self, access_token, calendar_id, cursor, start, end):
        """A conditional GET with the cursor's validators: 304 is "nothing changed" (no parse), else a full read."""
        try:
            validators = json.loads(cursor) if cursor else {}
        except ValueError:
            validators = {}
        body, etag, modified = self.fetch(
            _url(access_token), str(validators.get("etag", "")), str(validators.get("modified", ""))
        )
        if body is None and cursor:
            return Changes(blocks=[], removed=[], cursor=cursor, full=False)
        if body is None:
            body, etag, modified = self.fetch(_url(access_token))
        blocks = expand(parse(body or b""), start, end)
        return Changes(blocks=blocks, removed=[], cursor=json.dumps({"etag": etag, "modified": modified}), full=True)
