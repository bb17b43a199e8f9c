"""Apple iCloud and any CalDAV server (RFC 4791), through the `caldav` client.

No OAuth: the member gives a server URL, a user name and a password (for iCloud an app-specific
password). The three are the connection's credential, stored encrypted as JSON in `access_token`
and `refresh_token` with no expiry (`refreshable = False`): they are used until the server
answers 401; then "refresh" checks them once more (`refresh`), and a second 401 makes the
connection `needs_reauth` and sends the one reconnect email (`tokens`). Every request goes through
`calendar_sync.fetch.SafeSession`: https, public addresses only, each redirect and each URL the
server hands back (principal, calendar home, calendars) checked before it is reached.

Events are iCalendar objects named and identified by our key (`<key>.ics`, UID `<key>@calendar-sync`,
and `X-CALENDAR-SYNC-SOURCE`): a create is `PUT` with `If-None-Match: *`, an update `PUT` with
`If-Match` on the ETag stored in the remote id (`<href>#<etag>`); 412 re-reads the ETag and tries
again, so an upsert whose create answer was lost still leaves one event. Deleting what is gone
(404/410) succeeds. Busy time is a time-range `calendar-query` REPORT, expanded here (RRULE,
overrides); incremental reads use RFC 6578 `sync-collection` where the server offers it, elsewhere a digest
of the calendar's ETags (a changed one reads the window again). No push:
CalDAV has no standard notifications, so these calendars are only pulled (`supports_push`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from inspect import signature
from typing import Any, NamedTuple, cast
from urllib.parse import unquote, urljoin, urlsplit
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar
import requests
from caldav.davclient import DAVClient
from caldav.lib import error as dav_error

from .. import fetch
from ..conf import get_setting
from ..exceptions import AuthorizationLost, CalendarSyncError, PermanentError, TransientError
from .base import BaseProvider, BusyBlock, Calendar, Changes, Outcome, TokenSet
from .ics import MARKER, UID_SUFFIX, expand, parse

logger = logging.getLogger(__name__)
UTC = dt.UTC
#: Servers a member can pick by name instead of typing a URL.
PRESETS = {"icloud": "https://caldav.icloud.com/"}
XML = {"Content-Type": 'application/xml; charset="utf-8"'}
ICS = {"Content-Type": "text/calendar; charset=utf-8"}
NS = {"d": "DAV:", "c": "urn:ietf:params:xml:ns:caldav"}
GONE = {404, 410}
#: The sign-in a server asked for when connecting, sent at once afterwards (no 401 round trip per call).
#: Basic sends the password in UTF-8 and the user name in Latin-1, as the caldav client did when
#: connecting (requests would send a str password in Latin-1, and fail on any other character).
AUTH_SCHEMES: dict[str, Callable[[str, str], requests.auth.AuthBase]] = {
    "basic": lambda username, password: requests.auth.HTTPBasicAuth(username.encode("latin-1"), password.encode()),
    "digest": requests.auth.HTTPDigestAuth,
}
#: caldav 3 raises RateLimitError for 429 (and 503 with Retry-After); caldav 2.0 returns the answer.
RATE_LIMITED = getattr(dav_error, "RateLimitError", ())
#: caldav 3 would look the server up by DNS (RFC 6764) beside the checked session: never.
CLIENT_OPTIONS: dict[str, Any] = (
    {"enable_rfc6764": False} if "enable_rfc6764" in signature(DAVClient.__init__).parameters else {}
)
WRITE_PRIVILEGES = {"write", "write-content", "all", "bind"}
#: The longest calendar address a connection stores (CalendarToken.calendar_id).
MAX_CALENDAR_URL = 1024
LIST_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
    "<d:prop><d:resourcetype/><d:displayname/><c:supported-calendar-component-set/>"
    "<d:current-user-privilege-set/></d:prop></d:propfind>"
)
QUERY_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
    '<d:prop><d:getetag/><c:calendar-data/></d:prop><c:filter><c:comp-filter name="VCALENDAR">'
    '<c:comp-filter name="VEVENT"><c:time-range start="{start}" end="{end}"/></c:comp-filter>'
    "</c:comp-filter></c:filter></c:calendar-query>"
)


SYNC_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><d:sync-collection xmlns:d="DAV:"><d:sync-token>{token}</d:sync-token>'
    "<d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"
)
MULTIGET_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><c:calendar-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
    "<d:prop><d:getetag/><c:calendar-data/></d:prop>{hrefs}</c:calendar-multiget>"
)


class Credential(NamedTuple):
    url: str
    username: str
    password: str
    auth: str = ""  # the scheme the server asked for when connecting ("basic", "digest"), sent at once after


def credential(url: str, username: str, password: str, auth: str = "") -> str:
    """What a connection stores (encrypted)."""
    return json.dumps({"url": url, "username": username, "password": password, "auth": auth})


def _read(access_token: str) -> Credential:
    try:
        data = json.loads(access_token)
        return Credential(str(data["url"]), str(data["username"]), str(data["password"]), str(data.get("auth") or ""))
    except (ValueError, KeyError, TypeError):
        raise AuthorizationLost("The stored CalDAV credential is unreadable.", code="invalid_credential") from None


# --- errors, classified once -------------------------------------------------------------------
def _status_error(status: int, what: str, retry: float | None = None) -> CalendarSyncError:
    text = f"The CalDAV server answered {status} to {what}."
    if status == 401:
        return AuthorizationLost(text, status=status, code="unauthorized")
    if status == 429 or status >= 500:
        return TransientError(text, status=status, code="unavailable", retry_after=retry)
    if status in GONE:
        return PermanentError(text, status=status, code="not_found")
    if status == 403:
        return PermanentError(text, status=status, code="forbidden")
    return PermanentError(text, status=status, code="rejected")


def classify(exc: Exception, what: str) -> CalendarSyncError:
    if isinstance(exc, CalendarSyncError):
        return exc
    if isinstance(exc, RATE_LIMITED):
        retry = getattr(exc, "retry_after_seconds", None)
        return TransientError(f"The CalDAV server is busy ({what}).", code="rate_limited", retry_after=retry)
    if isinstance(exc, dav_error.AuthorizationError):  # 401 or 403 (caldav 2.0 says which only in its reason)
        forbidden = "forbidden" in str(getattr(exc, "reason", "")).lower()
        return _status_error(getattr(exc, "status", None) or (403 if forbidden else 401), what)
    if isinstance(exc, dav_error.NotFoundError):
        return _status_error(404, what)
    if isinstance(exc, dav_error.DAVError):
        return _status_error(getattr(exc, "status", None) or 400, what)
    if isinstance(exc, NotImplementedError):  # no authentication scheme the client speaks
        return PermanentError("The CalDAV server asks for an unsupported kind of sign-in.", code="unsupported_auth")
    if isinstance(exc, (requests.RequestException, OSError)):
        return fetch.network_error(exc, "the CalDAV server")
    # The client choked on an answer (HTML where XML belongs, a missing property…): not a CalDAV server we can use.
    logger.warning("CalDAV: unexpected answer during %s: %s", what, type(exc).__name__)
    return PermanentError("The server did not answer as a CalDAV server.", code="not_caldav")


def _strong(etag: str | None) -> str:
    """An ETag usable in If-Match (a weak one never matches)."""
    return etag if etag and not etag.startswith("W/") else ""


def _props(response) -> dict[str, Any]:
    """{tag: element} of the 200 propstats of one DAV:response element."""
    found = {}
    for propstat in response.findall("d:propstat", NS):
        if " 200 " in f" {propstat.findtext('d:status', '', NS)} ":
            for prop in propstat.findall("d:prop/*", NS):
                found[prop.tag] = prop
    return found


# --- a series' event: RRULE, EXDATE and RECURRENCE-ID in one resource (RFC 5545) -------------------
def _parts(calendar: icalendar.Calendar) -> tuple[icalendar.Component | None, list[icalendar.Component]]:
    """(the series' VEVENT, its exceptions: the VEVENTs with a RECURRENCE-ID)."""
    events = [c for c in calendar.walk("VEVENT")]
    master = next((e for e in events if e.get("RECURRENCE-ID") is None), None)
    return master, [e for e in events if e.get("RECURRENCE-ID") is not None]


def _exdates(vevent: icalendar.Component) -> list[Any]:
    found = vevent.get("EXDATE")
    lists = found if isinstance(found, list) else [found] if found is not None else []
    return [d.dt for item in lists for d in item.dts]


def _with_exceptions(body: bytes, current: icalendar.Calendar | None) -> bytes:
    """The series' new VEVENT keeping the cancelled occurrences and exceptions `current` holds."""
    if current is None:
        return body
    calendar = icalendar.Calendar.from_ical(body)
    master, _ = _parts(calendar)
    old, exceptions = _parts(current)
    if master is None:
        return body
    for moment in _exdates(old) if old is not None else []:
        master.add("exdate", moment)
    for exception in exceptions:
        calendar.add_component(exception)
    return calendar.to_ical()


def _with_instance(current: icalendar.Calendar, operation) -> bytes:
    """`current` with the occurrence at `operation.occurrence` cancelled (EXDATE) or made the
    exception `operation.event` (a VEVENT with its RECURRENCE-ID), whatever it was before."""
    master, exceptions = _parts(current)
    if master is None or master.get("DTSTART") is None:
        raise PermanentError("The series' event on the CalDAV server has no start.", code="not_found", status=404)
    first = cast(Any, master["DTSTART"]).dt
    zone = first.tzinfo if isinstance(first, dt.datetime) and first.tzinfo else UTC
    moment = operation.occurrence.astimezone(zone)
    kept = [m for m in _exdates(master) if not (isinstance(m, dt.datetime) and m == moment)]
    master.pop("EXDATE", None)
    for other in kept:
        master.add("exdate", other)
    current.subcomponents = [
        c
        for c in current.subcomponents
        if not (any(c is e for e in exceptions) and cast(Any, c["RECURRENCE-ID"]).dt == moment)
    ]
    event = operation.event
    if event is None:
        master.add("exdate", moment)
    else:
        exception = icalendar.Event()
        exception.add("uid", master["UID"])
        exception.add("recurrence-id", moment)
        exception.add("dtstamp", dt.datetime.now(UTC))
        exception.add("dtstart", event.start.astimezone(zone))
        exception.add("dtend", event.end.astimezone(zone))
        exception.add("summary", event.summary)
        exception.add("status", "CONFIRMED")
        exception.add("transp", "OPAQUE")
        exception.add(MARKER, operation.object_ref or operation.key)
        current.add_component(exception)
    return current.to_ical()


class CalDAVProvider(BaseProvider):
    name = "caldav"
    label = "Apple iCloud / CalDAV"
    revocable = False  # the member removes an app-specific password in their account
    refreshable = False
    supports_push = False
    oauth = False

    # --- the connection ------------------------------------------------------------------------
    @contextmanager
    def client(self, cred: Credential):
        """A `caldav.DAVClient` whose every request goes through the safe session; closed after."""
        try:
            client = DAVClient(
                url=fetch.normalize(cred.url),
                username=cred.username,
                password=cred.password,
                auth=AUTH_SCHEMES[cred.auth](cred.username, cred.password) if cred.auth in AUTH_SCHEMES else None,
                timeout=get_setting("HTTP_TIMEOUT"),
                **CLIENT_OPTIONS,
            )
        except Exception as exc:  # noqa: BLE001 - classified at this boundary
            raise classify(exc, "connecting") from None
        client.session.close()
        client.session = cast(Any, fetch.SafeSession())  # requests; caldav 3 types its session as niquests'
        try:
            yield client
        finally:
            client.close()

    def send(self, client, method: str, url: str, body: str | bytes = "", headers=None):
        """One request; 401, 429 and 5xx raised as our errors, any other answer returned."""
        try:
            response = client.request(url, method, body, headers)
        except Exception as exc:  # noqa: BLE001 - classified at this boundary
            raise classify(exc, method) from None
        if response.status == 429 or response.status >= 500:
            raise _status_error(response.status, method)
        return response

    def connect(self, url: str, username: str, password: str) -> tuple[str, list[Calendar]]:
        """Check a server URL and sign-in by finding the member's calendars. Returns (credential, the
        writable event calendars, the first one primary). RefusedAddress, AuthorizationLost (wrong
        password) or another classified error."""
        cred = Credential(fetch.normalize(url), username, password)
        with self.client(cred) as client:
            calendars = self._calendars(client)
            auth = type(client.auth).__name__.lower() if client.auth else ""
        if not calendars:
            raise PermanentError("No calendar for events that you can write to was found there.", code="no_calendar")
        scheme = "digest" if "digest" in auth else "basic" if "basic" in auth else ""
        return credential(cred.url, username, password, scheme), calendars

    def refresh(self, refresh_token):
        """Nothing to refresh: check the stored password once more (AuthorizationLost if refused)."""
        with self.client(_read(refresh_token)) as client:
            self._home(client)
        return TokenSet(access_token=refresh_token, refresh_token=refresh_token, expires_at=None)

    def account(self, access_token):
        cred = _read(access_token)
        return cred.username if "@" in cred.username else f"{cred.username}@{urlsplit(cred.url).hostname}"

    # --- calendars -----------------------------------------------------------------------------
    def _home(self, client) -> str:
        """The calendar home of the signed-in principal (RFC 4791 §6.2.1), found from the server URL."""
        try:
            principal = client.principal()
            return str(principal.calendar_home_set.url)
        except Exception as exc:  # noqa: BLE001 - classified at this boundary
            raise classify(exc, "discovery") from None

    def _calendars(self, client) -> list[Calendar]:
        """Calendars in the home that hold events and that the member may write to."""
        home = self._home(client)
        response = self.send(client, "PROPFIND", home, LIST_BODY, {"Depth": "1", **XML})
        if response.status != 207 or response.tree is None:
            raise _status_error(response.status, "PROPFIND")
        calendars = []
        for item in response.tree.findall("d:response", NS):
            props = _props(item)
            kind = props.get("{DAV:}resourcetype")
            if kind is None or kind.find("c:calendar", NS) is None:
                continue
            components = props.get(f"{{{NS['c']}}}supported-calendar-component-set")
            if components is not None and len(components) and "VEVENT" not in {c.get("name") for c in components}:
                continue
            privileges = props.get("{DAV:}current-user-privilege-set")
            if privileges is not None and not {p.tag.split("}")[-1] for p in privileges.iter()} & WRITE_PRIVILEGES:
                continue
            url = urljoin(home, item.findtext("d:href", "", NS))
            if len(url) > MAX_CALENDAR_URL:
                continue  # a connection could not store it as its calendar id
            shown = props.get("{DAV:}displayname")
            name = (shown.text if shown is not None else "") or ""
            calendars.append(Calendar(url, name or unquote(url.rstrip("/").rsplit("/", 1)[-1]), False, "writer"))
        if calendars:
            calendars[0] = replace(calendars[0], primary=True)
        return calendars

    def list_calendars(self, access_token):
        with self.client(_read(access_token)) as client:
            return self._calendars(client)

    def _calendar_url(self, client, calendar_id: str) -> str:
        if calendar_id and calendar_id != "primary":
            return calendar_id if calendar_id.endswith("/") else f"{calendar_id}/"
        calendars = self._calendars(client)
        if not calendars:
            raise PermanentError("The CalDAV account has no calendar to write to.", code="no_calendar")
        return calendars[0].id

    # --- writing events ------------------------------------------------------------------------
    def ical(self, operation) -> bytes:
        """The iCalendar object for an upsert, recognisable as ours by its UID and marker."""
        event = operation.event
        try:
            zone: dt.tzinfo = ZoneInfo(event.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = UTC
        calendar = icalendar.Calendar()
        calendar.add("prodid", "-//ManageHub//calendar-sync//EN")
        calendar.add("version", "2.0")
        vevent = icalendar.Event()
        vevent.add("uid", f"{operation.key}{UID_SUFFIX}")
        vevent.add("dtstamp", dt.datetime.now(UTC))
        vevent.add("dtstart", event.start.astimezone(zone))
        vevent.add("dtend", event.end.astimezone(zone))
        vevent.add("summary", event.summary)
        if event.location:
            vevent.add("location", event.location)
        if event.description:
            vevent.add("description", event.description)
        vevent.add("status", "CONFIRMED")
        vevent.add("transp", "OPAQUE")
        vevent.add(MARKER, operation.object_ref or operation.key)
        if event.series is not None:  # a series' event: its rule, from DTSTART in the series' zone
            vevent.add("rrule", icalendar.vRecur.from_ical(event.series.rule))
        calendar.add_component(vevent)
        if zone is not UTC:
            calendar.add_missing_timezones()
        return calendar.to_ical()

    @staticmethod
    def _target(base: str, operation) -> tuple[str, str]:
        """(href, stored ETag) of the operation's event: the stored remote id when it lies in this
        calendar, else the href our key names."""
        href, _, etag = (operation.remote_id or "").partition("#")
        if href.startswith(base):
            return href, etag
        return urljoin(base, f"{operation.key}.ics"), ""

    def _etag(self, client, href: str) -> str | None:
        """The event's current ETag ("*" when it exists without a usable one), or None when it is gone."""
        response = self.send(client, "HEAD", href)
        if response.status in GONE:
            return None
        if response.status >= 300:
            raise _status_error(response.status, "HEAD")
        return _strong(response.headers.get("ETag")) or "*"

    def _write(self, client, base: str, operation) -> Outcome:
        if operation.occurrence is not None or (operation.event is not None and operation.event.series is not None):
            return self._write_series(client, base, operation)
        href, etag = self._target(base, operation)
        if operation.is_delete:
            response = self.send(client, "DELETE", href)
            if response.status < 300 or response.status in GONE:
                return Outcome()
            raise _status_error(response.status, "DELETE")
        body = self.ical(operation)
        for _ in range(3):  # the write, a repair after 412, a repair of a racing repair
            condition = {"If-Match": etag} if etag else {"If-None-Match": "*"}
            response = self.send(client, "PUT", href, body, {**ICS, **condition})
            if response.status < 300:
                new = _strong(response.headers.get("ETag"))
                return Outcome(remote_id=f"{href}#{new}" if new else href, version=new or None)
            if response.status != 412 and not (etag and response.status in GONE):
                raise _status_error(response.status, "PUT")
            etag = self._etag(client, href) or ""  # changed or made meanwhile (a lost answer): read it, go again
        raise TransientError("The event kept changing on the CalDAV server.", code="conflict")

    def _write_series(self, client, base: str, operation) -> Outcome:
        """A series' event is one resource: its VEVENT with RRULE and EXDATEs (cancelled occurrences),
        and a VEVENT per exception (RECURRENCE-ID). Read, changed, written back on its ETag; a 412
        (changed meanwhile) reads it again. The series' own write keeps its exceptions."""
        href, _ = self._target(base, operation)
        for _ in range(3):
            response = self.send(client, "GET", href)
            if response.status in GONE:
                current, etag = None, ""
            elif response.status >= 300:
                raise _status_error(response.status, "GET")
            else:
                current, etag = parse(response.raw), _strong(response.headers.get("ETag")) or "*"
            if operation.occurrence is not None and current is None:
                if operation.is_delete:
                    return Outcome()  # no series' event: the occurrence is not there either
                raise PermanentError("The series' event is not on the CalDAV server.", status=404, code="not_found")
            if operation.occurrence is not None:
                assert current is not None
                body = _with_instance(current, operation)
            else:
                body = _with_exceptions(self.ical(operation), current)
            condition = {"If-Match": etag} if current is not None else {"If-None-Match": "*"}
            response = self.send(client, "PUT", href, body, {**ICS, **condition})
            if response.status < 300:
                new = _strong(response.headers.get("ETag"))
                return Outcome(remote_id=f"{href}#{new}" if new else href)
            if response.status != 412 and response.status not in GONE:
                raise _status_error(response.status, "PUT")
        raise TransientError("The event kept changing on the CalDAV server.", code="conflict")

    def apply(self, access_token, calendar_id, operations):
        """One request per operation (CalDAV has no batch); an authorization error ends the round."""
        results: list[Outcome] = []
        with self.client(_read(access_token)) as client:
            base = self._calendar_url(client, calendar_id)
            for i, operation in enumerate(operations):
                try:
                    results.append(self._write(client, base, operation))
                except AuthorizationLost as exc:
                    results.extend([Outcome(exc)] * (len(operations) - i))
                    break
                except CalendarSyncError as exc:
                    results.append(Outcome(exc))
        return results

    # --- reading calendars ---------------------------------------------------------------------
    def _query(self, client, base: str, start: dt.datetime, end: dt.datetime) -> list[tuple[str, str]]:
        """(href, calendar data) of the events overlapping [start, end): a calendar-query REPORT."""
        stamp = "%Y%m%dT%H%M%SZ"
        body = QUERY_BODY.format(start=start.astimezone(UTC).strftime(stamp), end=end.astimezone(UTC).strftime(stamp))
        response = self.send(client, "REPORT", base, body, {"Depth": "1", **XML})
        if response.status != 207 or response.tree is None:
            raise _status_error(response.status, "REPORT")
        return self._items(response, base)

    @staticmethod
    def _items(response, base: str) -> list[tuple[str, str]]:
        found = []
        for item in response.tree.findall("d:response", NS):
            data = _props(item).get(f"{{{NS['c']}}}calendar-data")
            if data is not None and data.text:
                found.append((unquote(urljoin(base, item.findtext("d:href", "", NS))), data.text))
        return found

    @staticmethod
    def _blocks(items, start, end) -> list[BusyBlock]:
        blocks = []
        for href, data in items:
            try:
                blocks += expand(parse(data), start, end, remote_id=href)
            except PermanentError:
                logger.warning("CalDAV: an event that is not valid iCalendar was skipped.")
        return blocks

    def busy(self, access_token, calendar_id, start, end):
        with self.client(_read(access_token)) as client:
            base = self._calendar_url(client, calendar_id)
            return self._blocks(self._query(client, base, start, end), start, end)

    def changes(self, access_token, calendar_id, cursor, start, end):
        """RFC 6578 `sync-collection` since the cursor's token where the server offers it; elsewhere the
        cursor keeps a digest of the calendar's ETags (one PROPFIND, no event data) and an unchanged
        digest means nothing changed. A first read, an expired token or a changed digest reads the
        window again (full). The cursor also names the events that expanded into several blocks,
        so that all of them go when the event changes."""
        try:
            state = json.loads(cursor) if cursor else {}
        except ValueError:
            state = {}
        several = {str(k): int(v) for k, v in dict(state.get("several") or {}).items()}
        with self.client(_read(access_token)) as client:
            base = self._calendar_url(client, calendar_id)
            if state.get("token"):
                synced = self._sync(client, base, str(state["token"]))
                if synced is not None:
                    token, changed, deleted = synced
                    items = self._multiget(client, base, changed) if changed else []
                    deleted |= {href for href in changed if href not in {h for h, _ in items}}
                    removed = []
                    for href in deleted | {href for href, _ in items}:
                        removed += [href, *(f"{href}#{i}" for i in range(1, several.pop(href, 1)))]
                    blocks = self._blocks(items, start, end)
                    several.update(self._several(blocks))
                    return Changes(blocks, removed, json.dumps({"token": token, "several": several}), full=False)
            elif state.get("etags") and self._etags(client, base) == state["etags"]:
                return Changes([], [], cursor or "", full=False)
            synced = self._sync(client, base, "")
            mark = {"token": synced[0]} if synced is not None else {"etags": self._etags(client, base)}
            blocks = self._blocks(self._query(client, base, start, end), start, end)
        return Changes(blocks, [], json.dumps({**mark, "several": self._several(blocks)}), full=True)

    def _sync(self, client, base: str, token: str) -> tuple[str, dict[str, str], set[str]] | None:
        """One sync-collection REPORT: (new token, {href: as the server wrote it} changed, hrefs deleted),
        or None when the server does not offer it, the token expired or the answer is truncated
        (the caller reads the window instead). 401, 429 and 5xx are raised."""
        try:
            response = self.send(client, "REPORT", base, SYNC_BODY.format(token=escape(token)), {"Depth": "0", **XML})
        except PermanentError:
            return None  # 403 (valid-sync-token, supported-report)…
        except TransientError as exc:
            if exc.status == 501:
                return None
            raise
        if response.status != 207 or response.tree is None:
            return None
        new = response.tree.findtext("d:sync-token", "", NS)
        changed: dict[str, str] = {}
        deleted: set[str] = set()
        for item in response.tree.findall("d:response", NS):
            raw = item.findtext("d:href", "", NS)
            href = unquote(urljoin(base, raw))
            status = item.findtext("d:status", "", NS)
            if href.rstrip("/") == base.rstrip("/"):
                if " 507 " in f" {status} ":
                    return None  # truncated: the window is read instead
                continue
            if " 404 " in f" {status} ":
                deleted.add(href)
            else:
                changed[href] = raw
        return (new, changed, deleted) if new else None

    def _multiget(self, client, base: str, hrefs: dict[str, str]) -> list[tuple[str, str]]:
        """(href, calendar data) of these events: one calendar-multiget REPORT."""
        body = MULTIGET_BODY.format(hrefs="".join(f"<d:href>{escape(raw)}</d:href>" for raw in hrefs.values()))
        response = self.send(client, "REPORT", base, body, {"Depth": "1", **XML})
        if response.status != 207 or response.tree is None:
            raise _status_error(response.status, "REPORT")
        return self._items(response, base)

    def _etags(self, client, base: str) -> str:
        """A digest of every (href, ETag) in the calendar: one PROPFIND, no event data."""
        body = '<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>'
        response = self.send(client, "PROPFIND", base, body, {"Depth": "1", **XML})
        if response.status != 207 or response.tree is None:
            raise _status_error(response.status, "PROPFIND")
        pairs = sorted(
            (
                unquote(urljoin(base, item.findtext("d:href", "", NS))),
                item.findtext("d:propstat/d:prop/d:getetag", "", NS),
            )
            for item in response.tree.findall("d:response", NS)
        )
        return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()

    @staticmethod
    def _several(blocks: list[BusyBlock]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for block in blocks:
            href = block.remote_id.partition("#")[0]
            counts[href] = counts.get(href, 0) + 1
        return {href: n for href, n in counts.items() if n > 1}
