"""A fake Microsoft 365 on 127.0.0.1: the identity platform v2.0 and Microsoft Graph v1.0 calendars.

Identity: consent page, authorization code with PKCE (S256), client secret (form or Basic),
tenant in the path, refresh tokens that ROTATE (a superseded one is refused with
`invalid_grant` / AADSTS70000), `invalid_grant` for revoked grants. Graph: `me/calendars`
(paged through absolute `@odata.nextLink`), events create / get / list / patch / delete with
server-chosen opaque ids, `transactionId` de-duplication of creates, single-value extended
properties (filterable with the `singleValueExtendedProperties/Any(...)` form), 401 for unknown
or expired tokens, 403 on read-only calendars, JSON `$batch` (at most 20 requests, unique ids,
answers in shuffled order). Errors have Graph's shape `{"error": {"code", "message"}}`.
Faults are injected with `inject()` (outer requests or, with `batch_part=True`, single batch
parts) and `lose_response()`; every request is logged in `call_log` / `http_requests`.

Reading: `calendarView` (window required, overlap, `$select`, `$expand` of our extended
property, paging, `Prefer: outlook.timezone` / `odata.maxpagesize`), `calendarView/delta`
rounds (`@odata.nextLink` pages, then an absolute `@odata.deltaLink`; later rounds report only
changes, deletions as `@removed`; `expire_cursors()` makes old tokens answer 410),
`calendar/getSchedule`, and change-notification `subscriptions` (create, get, renew, delete,
`notify()`). A person using Outlook is played by `add_event` / `move_event` / `update_event` /
`delete_event`, and a recurring series by `add_recurring_event` / `change_occurrence`: calendarView
and delta list its occurrences and exceptions (`seriesMasterId`, `originalStart`; no extended
properties), never the series master; a cancelled occurrence is gone.

Teams: a work or school mailbox's calendars list `allowedOnlineMeetingProviders: ["teamsForBusiness"]`;
a personal account's (`add_account(email, personal=True)`, as Outlook.com) only "skypeForConsumer".
`isOnlineMeeting: true` with `onlineMeetingProvider: "teamsForBusiness"` makes one meeting per event
(`onlineMeeting.joinUrl`, kept on later writes); where the calendar does not list the provider the
event is written without one (`isOnlineMeeting` false). `conferences()` lists the meetings made.
"""

import base64
import datetime as dt
import hashlib
import html
import json
import random
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests
from tzlocal.windows_tz import win_tz  # Windows zone names -> IANA

from . import server
from .base import FakeService, _expand_rrule
from .server import decode_token, encode_token

GRAPH = "https://graph.microsoft.com/"
BATCH_LIMIT = 20
DEFAULT_ACCOUNT = "member@contoso.com"
ROOM_ACCOUNT = "rooms@contoso.com"
DEFAULT_CALENDARS = [
    {"name": "Calendar", "isDefaultCalendar": True, "canEdit": True},
    {"name": "Team", "canEdit": True},
    {"name": "Holidays", "canEdit": False},
]
# dateTimeTimeZone: Windows zone names plus these IANA names (Graph docs, "Additional time zones").
IANA_ZONES = set(
    """Etc/GMT+12 Etc/GMT+11 Pacific/Honolulu America/Anchorage America/Santa_Isabel America/Los_Angeles
    America/Phoenix America/Chihuahua America/Denver America/Guatemala America/Chicago America/Mexico_City
    America/Regina America/Bogota America/New_York America/Indiana/Indianapolis America/Caracas
    America/Asuncion America/Halifax America/Cuiaba America/La_Paz America/Santiago America/St_Johns
    America/Sao_Paulo America/Argentina/Buenos_Aires America/Cayenne America/Godthab America/Montevideo
    America/Bahia Etc/GMT+2 Atlantic/Azores Atlantic/Cape_Verde Africa/Casablanca Etc/GMT Europe/London
    Atlantic/Reykjavik Europe/Berlin Europe/Budapest Europe/Paris Europe/Warsaw Africa/Lagos
    Africa/Windhoek Europe/Bucharest Asia/Beirut Africa/Cairo Asia/Damascus Africa/Johannesburg
    Europe/Kyiv Europe/Kiev Europe/Istanbul Asia/Jerusalem Asia/Amman Asia/Baghdad Europe/Kaliningrad
    Asia/Riyadh Africa/Nairobi Asia/Tehran Asia/Dubai Asia/Baku Europe/Moscow Indian/Mauritius
    Asia/Tbilisi Asia/Yerevan Asia/Kabul Asia/Karachi Asia/Tashkent Asia/Toshkent Asia/Kolkata
    Asia/Colombo Asia/Kathmandu Asia/Almaty Asia/Astana Asia/Dhaka Asia/Yekaterinburg Asia/Yangon
    Asia/Rangoon Asia/Bangkok Asia/Novosibirsk Asia/Shanghai Asia/Krasnoyarsk Asia/Singapore
    Australia/Perth Asia/Taipei Asia/Ulaanbaatar Asia/Irkutsk Asia/Tokyo Asia/Seoul Australia/Adelaide
    Australia/Darwin Australia/Brisbane Australia/Sydney Pacific/Port_Moresby Australia/Hobart
    Asia/Yakutsk Pacific/Guadalcanal Asia/Vladivostok Pacific/Auckland Etc/GMT-12 Pacific/Fiji
    Asia/Magadan Pacific/Tongatapu Pacific/Apia Pacific/Kiritimati""".split()
)
FILTER_BY_PROPERTY = re.compile(
    r"^\s*singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+'((?:[^']|'')*)'\s+and\s+\1/value\s+eq\s+'((?:[^']|'')*)'\s*\)\s*$",
    re.IGNORECASE,
)
EXPAND_PROPERTIES = re.compile(
    r"^\s*singleValueExtendedProperties(?:\(\s*\$filter\s*=\s*id\s+eq\s+'((?:[^']|'')*)'\s*\))?\s*$", re.IGNORECASE
)
UTC = dt.UTC
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DELTA_PAGE_SIZE = 10  # delta page size when the client sends no odata.maxpagesize
SUBSCRIPTION_MAX_MINUTES = 4230  # Graph's limit for Outlook event subscriptions
SUBSCRIPTION_RESOURCE = re.compile(
    r"^/?(me|users/[^/]+)/(events|calendar/events|calendars/[^/]+/events)$", re.IGNORECASE
)
AVAILABILITY = {"free": "0", "tentative": "1", "busy": "2", "oof": "3", "workingelsewhere": "4"}
AVAILABILITY_RANK = ["free", "workingelsewhere", "tentative", "busy", "oof"]
DEFAULT_CODES = {
    400: "ErrorInvalidRequest",
    401: "InvalidAuthenticationToken",
    403: "ErrorAccessDenied",
    404: "ErrorItemNotFound",
    409: "ErrorIrresolvableConflict",
    429: "ApplicationThrottled",
    500: "ErrorInternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


# The AADSTS code an injected identity-platform error carries (one of Microsoft's for that error).
AADSTS = {
    "invalid_grant": 70000,
    "invalid_scope": 70011,
    "unauthorized_client": 700016,
    "invalid_client": 7000215,
    "interaction_required": 50076,
    "consent_required": 65001,
    "login_required": 50058,
}


#: Graph's attendee responses in the shared vocabulary (`FakeService.attendees`).
RESPONSES = {
    "none": "needsAction",
    "notResponded": "needsAction",
    "organizer": "accepted",
    "accepted": "accepted",
    "declined": "declined",
    "tentativelyAccepted": "tentative",
}


def _attendees(wanted, before):
    """An attendees collection as Graph stores it: type (required unless given), status (`none` when
    new; an address already invited keeps its answer) and emailAddress."""
    answers = {
        str((a.get("emailAddress") or {}).get("address") or "").lower(): a.get("status")
        for a in before
        if isinstance(a, dict)
    }
    stored = []
    for attendee in wanted if isinstance(wanted, list) else []:
        address = (attendee.get("emailAddress") or {}).get("address") if isinstance(attendee, dict) else None
        if not address:
            continue
        stored.append(
            {
                "type": attendee.get("type") or "required",
                "status": attendee.get("status")
                or answers.get(str(address).lower())
                or {"response": "none", "time": "0001-01-01T00:00:00Z"},
                "emailAddress": {"name": attendee["emailAddress"].get("name") or address, "address": address},
            }
        )
    return stored


def graph_error(status, code, message):
    return (
        status,
        {"error": {"code": code, "message": message, "innerError": {"date": _now(), "request-id": str(uuid.uuid4())}}},
        {},
    )


def aad_error(status, error, code, description):
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {uuid.uuid4()} Timestamp: {_now()}",
        "error_codes": [code],
        "timestamp": _now(),
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }
    return status, body, {}


def _now():
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _opaque(prefix="AAMkAGI2"):
    """An id shaped like Graph's: long, opaque, URL-safe base64 ending in '='."""
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(96)).decode().rstrip("=") + "AAA="


def _unquote_filter_value(value):
    return value.replace("''", "'")


def _tz(name):
    """A Graph time zone name (Windows or IANA) as a tzinfo, or None when unknown."""
    name = str(name or "")
    if name.upper() in ("UTC", "ETC/UTC", "GMT", "ETC/GMT"):
        return UTC
    try:
        return ZoneInfo(win_tz.get(name) or name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _instant(value):
    """A dateTimeTimeZone as aware UTC (None when unreadable)."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        return None
    try:
        parsed = dt.datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", str(value["dateTime"])))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_tz(value.get("timeZone")) or UTC)
    return parsed.astimezone(UTC)


def _query_instant(value):
    """A startDateTime/endDateTime query value (ISO 8601; no offset means UTC)."""
    try:
        parsed = dt.datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", str(value).strip().replace(" ", "+")))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _local(moment, zone_name):
    """An instant as Graph writes it in a zone: 7 fractional digits, no offset."""
    zone = _tz(zone_name) or UTC
    return {
        "dateTime": moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0",
        "timeZone": zone_name,
    }


def _span_of(event):
    return _instant(event.get("start")), _instant(event.get("end"))


def _overlaps(span, start, end):
    span_start, span_end = span
    if span_start is None or span_end is None:
        return False
    if span_start == span_end:  # a zero-length event sits at an instant
        return start <= span_start < end
    return span_start < end and span_end > start


GRAPH_DAYS = {
    "sunday": "SU",
    "monday": "MO",
    "tuesday": "TU",
    "wednesday": "WE",
    "thursday": "TH",
    "friday": "FR",
    "saturday": "SA",
}


def _graph_rrule(recurrence):
    """A Graph `recurrence` ({pattern, range}) as an RRULE line: daily, weekly and absoluteMonthly
    patterns; numbered, endDate (inclusive, in the range's zone) and noEnd ranges."""
    pattern, span = recurrence.get("pattern") or {}, recurrence.get("range") or {}
    kind = str(pattern.get("type", "")).lower()
    freq = {"daily": "DAILY", "weekly": "WEEKLY", "absolutemonthly": "MONTHLY", "relativemonthly": "MONTHLY"}[kind]
    parts = [f"FREQ={freq}"]
    parts.append(f"INTERVAL={int(pattern.get('interval') or 1)}")
    if kind == "weekly" and pattern.get("daysOfWeek"):
        parts.append("BYDAY=" + ",".join(GRAPH_DAYS[str(d).lower()] for d in pattern["daysOfWeek"]))
    if kind == "absolutemonthly" and pattern.get("dayOfMonth"):
        parts.append(f"BYMONTHDAY={int(pattern['dayOfMonth'])}")
    if kind == "relativemonthly" and pattern.get("daysOfWeek"):
        index = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}[str(pattern.get("index", "first"))]
        parts.append(f"BYDAY={index}{GRAPH_DAYS[str(pattern['daysOfWeek'][0]).lower()]}")
    if str(span.get("type", "")).lower() == "numbered":
        parts.append(f"COUNT={int(span['numberOfOccurrences'])}")
    elif str(span.get("type", "")).lower() == "enddate":
        last = dt.datetime.combine(dt.date.fromisoformat(span["endDate"]), dt.time(23, 59, 59))
        zone = _tz(span.get("recurrenceTimeZone")) or UTC
        parts.append(f"UNTIL={last.replace(tzinfo=zone).astimezone(UTC):%Y%m%dT%H%M%SZ}")
    return "RRULE:" + ";".join(parts)


def _occurrence_id(master_id, original):
    """A deterministic opaque id for one occurrence of a series (Graph's are opaque too)."""
    digest = hashlib.sha256(f"{master_id}|{original.isoformat()}".encode()).digest()
    return "AAMkAGI2Occ" + base64.urlsafe_b64encode(digest).decode().rstrip("=") + "AAA="


def _prefer(headers):
    """Prefer header preferences (comma-separated, possibly repeated): {name: value}."""
    found = {}
    for part in re.split(r',(?=(?:[^"]*"[^"]*")*[^"]*$)', (headers or {}).get("prefer", "")):
        name, _, value = part.strip().partition("=")
        if name.strip():
            found[name.strip().lower()] = value.strip().strip('"')
    return found


def _when(value, zone_name):
    """A control's start/end (aware datetime, or a date for all-day) as dateTimeTimeZone in `zone_name`."""
    if isinstance(value, dt.datetime):
        return _local(value if value.tzinfo else value.replace(tzinfo=UTC), zone_name)
    if isinstance(value, dt.date):
        return {"dateTime": f"{value.isoformat()}T00:00:00.0000000", "timeZone": zone_name}
    raise TypeError(f"expected a datetime or a date, got {value!r}")


class FakeMicrosoft(FakeService):
    thread_name = "fake-microsoft"
    provider = "microsoft"
    default_account = DEFAULT_ACCOUNT
    room_account = ROOM_ACCOUNT
    api_prefix = "/v1.0/"
    title = "Fake Microsoft 365"

    def __init__(
        self,
        port=0,
        client_id="test-ms-client-id",
        client_secret="test-ms-client-secret",
        tenant="common",
        token_lifetime=3600,
        latency=0.0,
    ):
        self.client_id = client_id
        self.initial_latency = latency
        self.client_secret = client_secret
        self.tenant = tenant
        self.token_lifetime = token_lifetime
        self.page_size = 2  # me/calendars page size (Graph's real default is 10)
        self.events_page_size = 10  # events list default $top, as Graph
        self.max_page_size = 1000  # server-driven paging: no page holds more (lower it to page sooner)
        self.lock = threading.RLock()
        self._listen(port, self._handler())
        self._init_state()

    def _init_state(self):
        self._init_common()  # accounts: email -> {"calendars": {id: cal}, "events": {id: event}, "transactions": {tid: id}}
        self.superseded = {}  # rotated-away or revoked refresh token -> family
        self.revoked = set()  # families whose grant was revoked
        self.lost = 0
        self.max_batch_size = 0
        self.change_counter = 0  # global: every event change (and deletion) takes the next value
        self.delta_generation = secrets.token_hex(4)  # delta tokens of another generation answer 410
        self.delta_expired_code = "SyncStateNotFound"
        self.subscriptions = {}  # id -> the subscription as Graph returns it, plus account and deleted
        self.meetings = []  # one per Teams meeting made: {"account", "event_id", "join_url"}
        self.validate_subscriptions = False  # True: POST the validationToken handshake to notificationUrl

    # --- settings (start, stop, with: LoopbackServer; env, reset, reset_log, calls: FakeService) ----
    def settings(self):
        """CALENDAR_SYNC entries that point the app at this server."""
        return {
            "MICROSOFT_CLIENT_ID": self.client_id,
            "MICROSOFT_CLIENT_SECRET": self.client_secret,
            "MICROSOFT_TENANT": self.tenant,
            "MICROSOFT_LOGIN_ROOT": self.url,
            "MICROSOFT_GRAPH_ROOT": f"{self.url}v1.0/",
        }

    # --- test controls ---------------------------------------------------------------------
    def reset(self):
        """Back to the default and room mailboxes; forget grants, events, faults and logged requests."""
        with self.lock:
            self.page_size, self.events_page_size, self.max_page_size = 2, 10, 1000
            self._init_state()

    def reset_log(self):
        with self.lock:
            super().reset_log()
            self.max_batch_size = 0

    def add_account(self, email, calendars=None, personal=False):
        """Add a mailbox. `calendars`: list of {"name", "canEdit", "isDefaultCalendar"?, "id"?}; the first is
        default if none says so. `personal`: a personal Microsoft account (Outlook.com), which can't make Teams meetings."""
        providers = ["skypeForConsumer"] if personal else ["teamsForBusiness"]
        specs = [dict(c) for c in (calendars or DEFAULT_CALENDARS)]
        if not any(c.get("isDefaultCalendar") for c in specs):
            specs[0]["isDefaultCalendar"] = True
        cals = {}
        for spec in specs:
            cal_id = spec.get("id") or _opaque("AAMkADAw")
            cals[cal_id] = {
                "id": cal_id,
                "name": spec["name"],
                "color": "auto",
                "hexColor": "",
                "isDefaultCalendar": bool(spec.get("isDefaultCalendar")),
                "changeKey": secrets.token_urlsafe(16),
                "canShare": bool(spec.get("canEdit", True)),
                "canViewPrivateItems": True,
                "canEdit": bool(spec.get("canEdit", True)),
                "allowedOnlineMeetingProviders": list(spec.get("allowedOnlineMeetingProviders", providers)),
                "defaultOnlineMeetingProvider": providers[0],
                "isTallyingResponses": True,
                "isRemovable": not spec.get("isDefaultCalendar"),
                "owner": {"name": email.split("@")[0].title(), "address": email},
            }
        with self.lock:
            self.accounts[email] = {"calendars": cals, "events": {}, "transactions": {}, "tombstones": {}}
        return email

    def calendar_id(self, account=None, name=None):
        """Id of the calendar called `name` (the default calendar when None)."""
        with self.lock:
            for cal in self.accounts[account or DEFAULT_ACCOUNT]["calendars"].values():
                if (name is None and cal["isDefaultCalendar"]) or cal["name"] == name:
                    return cal["id"]
        raise KeyError(name)

    def _calendars(self, account):
        with self.lock:
            cals = sorted(self.accounts[account]["calendars"].values(), key=lambda c: not c["isDefaultCalendar"])
            return [(c["id"], c["name"]) for c in cals]

    def conferences(self, account=None):
        """Teams meetings made, each {"account", "event_id", "join_url", "live"} (`live` while its event exists)."""
        with self.lock:
            return [
                {**m, "live": m["event_id"] in self.accounts[m["account"]]["events"]}
                for m in self.meetings
                if account is None or m["account"] == account
            ]

    def lose_response(self, times=1):
        """The next `times` HTTP requests that create an event are committed, then the connection drops unanswered."""
        with self.lock:
            self.lost += times

    def revoke_grants(self, account):
        """Like revoking the user's sessions: refresh tokens die; with CAE, so do access tokens."""
        with self.lock:
            for token, grant in list(self.grants.items()):
                if grant["account"] == account:
                    self.revoked.add(grant["family"])
                    self.superseded[token] = grant["family"]
                    del self.grants[token]
            for token, info in list(self.access_tokens.items()):
                if info["account"] == account:
                    del self.access_tokens[token]

    def expire_cursors(self, code="SyncStateNotFound"):
        """Every outstanding delta (and skip) token now answers 410 with `code`."""
        with self.lock:
            self.delta_generation = secrets.token_hex(4)
            self.delta_expired_code = code

    # --- a person using Outlook ------------------------------------------------------------------
    def add_event(
        self,
        account,
        start,
        end,
        title="Busy",
        calendar=None,
        busy=True,
        show_as=None,
        time_zone="UTC",
        is_cancelled=False,
    ):
        """Create an event as the member would (aware datetimes, or dates for an all-day event); return
        its id. `show_as` (e.g. "tentative") overrides `busy`."""
        all_day = not isinstance(start, dt.datetime)
        body = {
            "subject": title,
            "start": _when(start, time_zone),
            "end": _when(end, time_zone),
            "showAs": show_as or ("busy" if busy else "free"),
            "isAllDay": all_day,
            "isCancelled": bool(is_cancelled),
            "originalStartTimeZone": time_zone,
            "originalEndTimeZone": time_zone,
        }
        with self.lock:
            mailbox = self.accounts[account]
            event = self._insert(mailbox, mailbox["calendars"][calendar or self.calendar_id(account)], body)
        self._changed(account, event["_calendar"], event["id"])
        return event["id"]

    def move_event(self, account, event_id, start, end, calendar=None):
        """Drag an event to a new time (kept in the event's own time zone)."""
        with self.lock:
            event = self.accounts[account]["events"][event_id]
            zone = event.get("start", {}).get("timeZone") or "UTC"
        self.update_event(account, event_id, start=_when(start, zone), end=_when(end, zone))

    def update_event(self, account, event_id, calendar=None, **fields):
        """Edit an event's fields as the member would, e.g. `showAs="free"` (ids are unique per mailbox:
        `calendar` is not needed)."""
        with self.lock:
            event = self.accounts[account]["events"][event_id]
            event.update(fields)
            event.update(
                {
                    "lastModifiedDateTime": _now(),
                    "changeKey": secrets.token_urlsafe(24),
                    "@odata.etag": f'W/"{secrets.token_urlsafe(24)}"',
                }
            )
            self._touch(event)
        self._changed(account, event["_calendar"], event_id)

    def respond(self, account, event_id, email, response, calendar=None):
        """A guest answers the invitation: their `status.response` on the organizer's (`account`'s) event
        becomes Graph's word for `response` ("needsAction" → "none", "accepted", "declined",
        "tentative" → "tentativelyAccepted"), and the event changes (new changeKey, in the next delta
        round). KeyError when `email` is not one of its attendees."""
        graph = {"needsAction": "none", "tentative": "tentativelyAccepted"}.get(response, response)
        with self.lock:
            event = self.accounts[account]["events"][event_id]
            attendee = next(
                (
                    a
                    for a in event.get("attendees") or []
                    if str((a.get("emailAddress") or {}).get("address", "")).lower() == email.lower()
                ),
                None,
            )
            if attendee is None:
                raise KeyError(email)
            attendee["status"] = {"response": graph, "time": _now()}
            event.update(
                {
                    "lastModifiedDateTime": _now(),
                    "changeKey": secrets.token_urlsafe(24),
                    "@odata.etag": f'W/"{secrets.token_urlsafe(24)}"',
                }
            )
            self._touch(event)
        self._changed(account, event["_calendar"], event_id)

    def set_busy(self, account, event_id, busy, calendar=None):
        self.update_event(account, event_id, showAs="busy" if busy else "free")

    def delete_event(self, account, event_id, calendar=None):
        """Delete an event for good (Outlook keeps no cancelled copy; delta reports it @removed)."""
        with self.lock:
            mailbox = self.accounts[account]
            event = mailbox["events"].pop(event_id)
            mailbox["transactions"].pop(event.get("transactionId"), None)
            self._bury(mailbox, event)
        self._changed(account, event["_calendar"], event_id)

    def add_recurring_event(self, account, start, end, rule, title="Busy", calendar=None, time_zone="UTC"):
        """Create a recurring series as the member would (the first occurrence `start`–`end` in
        `time_zone`, repeating by `rule`, an RRULE of FREQ DAILY/WEEKLY/MONTHLY with INTERVAL,
        BYDAY, BYMONTHDAY, COUNT or UNTIL); return the series master's id."""
        parts = dict(part.split("=", 1) for part in rule.removeprefix("RRULE:").split(";"))
        days = {v: k for k, v in GRAPH_DAYS.items()}
        local = start.astimezone(_tz(time_zone) or UTC)
        kind = {"DAILY": "daily", "WEEKLY": "weekly", "MONTHLY": "absoluteMonthly"}[parts["FREQ"]]
        pattern = {"type": kind, "interval": int(parts.get("INTERVAL", 1)), "firstDayOfWeek": "monday"}
        if kind == "weekly":
            byday = parts.get("BYDAY") or ["MO", "TU", "WE", "TH", "FR", "SA", "SU"][local.weekday()]
            pattern["daysOfWeek"] = [days[d] for d in byday.split(",")]
        if kind == "absoluteMonthly":
            pattern["dayOfMonth"] = int(parts.get("BYMONTHDAY", local.day))
        span = {"startDate": local.date().isoformat(), "recurrenceTimeZone": time_zone}
        if "COUNT" in parts:
            span.update(type="numbered", numberOfOccurrences=int(parts["COUNT"]))
        elif "UNTIL" in parts:
            until = dt.datetime.strptime(parts["UNTIL"][:8], "%Y%m%d").date()
            span.update(type="endDate", endDate=until.isoformat())
        else:
            span["type"] = "noEnd"
        event_id = self.add_event(account, start, end, title=title, calendar=calendar, time_zone=time_zone)
        self.update_event(account, event_id, type="seriesMaster", recurrence={"pattern": pattern, "range": span})
        return event_id

    def change_occurrence(self, account, event_id, original_start, start=None, end=None, cancel=False, calendar=None):
        """Move (`start`, `end`) or cancel one occurrence of a series in Outlook. Moved, it becomes an
        event of type "exception" (its `seriesMasterId`, `originalStart`); cancelled, it is gone
        (the master remembers it). Returns the occurrence's id."""
        with self.lock:
            mailbox = self.accounts[account]
            master = mailbox["events"][event_id]
            original = original_start.astimezone(UTC)
            occurrence_id = _occurrence_id(event_id, original)
            if cancel:
                master.setdefault("_cancelled", []).append(original.isoformat())
                if occurrence_id in mailbox["events"]:
                    self._bury(mailbox, mailbox["events"].pop(occurrence_id))
                self._touch(master)
                return occurrence_id
            zone = master["start"].get("timeZone") or "UTC"
            exception = mailbox["events"].get(occurrence_id)
            if exception is None:
                exception = self._occurrence(master, original, original + (_span_of(master)[1] - _span_of(master)[0]))
                exception["type"] = "exception"
                mailbox["events"][occurrence_id] = exception
            exception["start"], exception["end"] = _when(start, zone), _when(end, zone)
            self._touch(exception)
            return occurrence_id

    def _series_changes(self, master, mailbox, start, end, zone):
        """A changed series master in a delta round: its occurrences in the window, and its
        cancelled ones as removed."""
        items = [
            self._view(o, {}, zone)
            for o in self._occurrences_of(master, list(mailbox["events"].values()))
            if _overlaps(_span_of(o), start, end)
        ]
        for original in master.get("_cancelled", []):
            gone = _occurrence_id(master["id"], dt.datetime.fromisoformat(original))
            items.append({"@odata.type": "#microsoft.graph.event", "id": gone, "@removed": {"reason": "deleted"}})
        return items

    @staticmethod
    def _occurrence(master, start, end):
        """One occurrence of a series master as calendarView lists it. It carries the master's fields
        but not its extended properties (a reader must know its series by `seriesMasterId`)."""
        zone = master["start"].get("timeZone") or "UTC"
        item = {
            k: v
            for k, v in master.items()
            if k not in ("recurrence", "singleValueExtendedProperties", "transactionId", "_spans", "_cancelled")
        }
        item.update(
            {
                "id": _occurrence_id(master["id"], start),
                "type": "occurrence",
                "seriesMasterId": master["id"],
                "originalStart": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "start": _local(start, zone),
                "end": _local(end, zone),
            }
        )
        return item

    def _expanded(self, events):
        """Stored events as calendarView (and its delta) list them: each series master replaced by its
        occurrences (those not cancelled and not made exceptions; exceptions are stored events)."""
        listed = []
        for event in events:
            if event.get("type") != "seriesMaster" or not event.get("recurrence"):
                listed.append(event)
                continue
            listed.extend(self._occurrences_of(event, events))
        return listed

    def expand(self, account, event_id, calendar=None):
        with self.lock:
            mailbox = self.accounts[account or DEFAULT_ACCOUNT]
            rows = [(*_span_of(o), o.get("subject") or "") for o in self._series(mailbox, event_id)]
            return sorted(rows, key=lambda row: row[0])

    def _series(self, mailbox, master_id):
        """A series' occurrences and exceptions as they are now (cancelled ones are gone)."""
        master = mailbox["events"].get(master_id)
        if master is None or master.get("type") != "seriesMaster":
            return []
        events = list(mailbox["events"].values())
        exceptions = [e for e in events if e.get("seriesMasterId") == master_id]
        return self._occurrences_of(master, events) + exceptions

    def _occurrence_by_id(self, mailbox, occurrence_id, store=False):
        """The occurrence an id names (None if none); with `store`, kept as an exception to change."""
        for master in [e for e in mailbox["events"].values() if e.get("type") == "seriesMaster"]:
            for occurrence in self._occurrences_of(master, list(mailbox["events"].values())):
                if occurrence["id"] == occurrence_id:
                    if store:
                        occurrence["type"] = "exception"
                        mailbox["events"][occurrence_id] = occurrence
                    return occurrence
        return None

    def _cancel_occurrence(self, mailbox, occurrence):
        master = mailbox["events"].get(occurrence["seriesMasterId"])
        if master is not None:
            master.setdefault("_cancelled", []).append(
                _instant({"dateTime": occurrence["originalStart"].rstrip("Z"), "timeZone": "UTC"}).isoformat()
            )
            self._touch(master)
        if occurrence["id"] in mailbox["events"]:
            self._bury(mailbox, mailbox["events"].pop(occurrence["id"]))
        return 204, None, {}

    def _list_instances(self, mailbox, master_id, path, query):
        """GET events/{id}/instances: a series' occurrences and exceptions in a window (required)."""
        if mailbox["events"].get(master_id) is None:
            return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        window = self._window(query)
        if len(window) == 3:
            return window
        start, end = window
        items = [o for o in self._series(mailbox, master_id) if _overlaps(_span_of(o), start, end)]
        items.sort(key=lambda o: _span_of(o)[0])
        return self._page([self._view(o, query) for o in items], path, query, self.events_page_size)

    def _occurrences_of(self, master, events):
        first, last = _span_of(master)
        zone = master["start"].get("timeZone") or "UTC"
        taken = {e["id"] for e in events if e.get("seriesMasterId") == master["id"]}
        cancelled = set(master.get("_cancelled", []))
        found, iana = [], getattr(_tz(zone), "key", "UTC")  # Graph may name a Windows zone
        for start, end in _expand_rrule([_graph_rrule(master["recurrence"])], first, last, iana):
            if start.isoformat() in cancelled or _occurrence_id(master["id"], start) in taken:
                continue
            found.append(self._occurrence(master, start, end))
        return found

    def events(self, account=None, calendar=None):
        """{event_id: event} of one calendar (the default one by default), extended properties included."""
        with self.lock:
            account = account or DEFAULT_ACCOUNT
            cal = calendar or self.calendar_id(account)
            events = self.accounts[account]["events"].values()
            return {
                e["id"]: json.loads(json.dumps({k: v for k, v in e.items() if not k.startswith("_")}))
                for e in events
                if e["_calendar"] == cal
            }

    def _agenda(self, account, calendar):
        cal = calendar or self.calendar_id(account)
        rows = []
        for event in self.accounts[account]["events"].values():
            if event["_calendar"] == cal:
                start, end = _span_of(event)
                busy = str(event.get("showAs", "busy")).lower() != "free" and not event.get("isCancelled")
                rows.append(
                    {"id": event["id"], "title": event.get("subject") or "", "start": start, "end": end, "busy": busy}
                )
        return rows

    # --- push -------------------------------------------------------------------------------------
    def notify(self, channel_id, event_id=None, secret=None, change_type="updated"):
        """POST a change notification for a subscription the way Graph does; the receiver's response.
        `secret` replaces the subscription's clientState (a forged notification)."""
        with self.lock:
            sub = self.subscriptions[channel_id]
            if sub["deleted"]:
                return None
            user = sub["account"]
            event_id = event_id or _opaque()
            payload = {
                "value": [
                    {
                        "id": str(uuid.uuid4()),
                        "subscriptionId": channel_id,
                        "subscriptionExpirationDateTime": sub["expirationDateTime"],
                        "changeType": change_type,
                        "resource": f"Users/{user}/Events/{event_id}",
                        "resourceData": {
                            "@odata.type": "#Microsoft.Graph.Event",
                            "@odata.id": f"Users/{user}/Events/{event_id}",
                            "@odata.etag": f'W/"{secrets.token_urlsafe(12)}"',
                            "id": event_id,
                        },
                        "clientState": sub.get("clientState") if secret is None else secret,
                        "tenantId": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.tenant)),
                    }
                ]
            }
            url = sub["notificationUrl"]
        return requests.post(url, json=payload, timeout=10)

    def push_channels(self, account=None):
        """Subscriptions made (deleted ones too): {id: {"id", "account", "calendar", "address", "secret", "resource", "expiration", "stopped"}}."""
        with self.lock:
            return {
                s["id"]: {
                    "id": s["id"],
                    "account": s["account"],
                    "calendar": self._subscribed_calendar(s),
                    "address": s["notificationUrl"],
                    "secret": s["clientState"],
                    "resource": s["resource"],
                    "expiration": s["expirationDateTime"],
                    "stopped": s["deleted"],
                }
                for s in self.subscriptions.values()
                if account is None or s["account"] == account
            }

    def _subscribed_calendar(self, sub):
        """The calendar a subscription's resource names (`.../calendars/{id}/events`), else the default one."""
        parts = sub["resource"].strip("/").split("/")
        return parts[-2] if len(parts) >= 3 and parts[-3].lower() == "calendars" else self.calendar_id(sub["account"])

    def drop_channel(self, channel_id):
        """Graph removes a subscription on its own: it sends nothing more, and deleting it answers 404."""
        with self.lock:
            self.subscriptions[channel_id]["deleted"] = True

    def api_requests(self, account=None):
        """How many HTTP requests reached Graph (a `$batch` counts once)."""
        with self.lock:
            return sum(
                1
                for r in self.http_requests
                if r["path"].startswith("/v1.0/") and (account is None or r["account"] == account)
            )

    # --- internals ---------------------------------------------------------------------------
    def _touch(self, event):
        """Record a change for delta: the counter, and the span the event had from then on."""
        with self.lock:
            self.change_counter += 1
            event["_seq"] = self.change_counter
            start, end = _span_of(event)
            event.setdefault("_spans", []).append(
                (self.change_counter, start.isoformat() if start else None, end.isoformat() if end else None)
            )

    def _bury(self, mailbox, event):
        with self.lock:
            self.change_counter += 1
            mailbox["tombstones"][event["id"]] = {
                "id": event["id"],
                "_calendar": event["_calendar"],
                "_seq": self.change_counter,
                "_spans": event.get("_spans", []),
            }

    @staticmethod
    def _span_at(record, n):
        """The (start, end) an event had after change `n`, or None if it did not exist then."""
        span = None
        for seq, start, end in record.get("_spans", []):
            if seq > n:
                break
            span = (
                dt.datetime.fromisoformat(start) if start else None,
                dt.datetime.fromisoformat(end) if end else None,
            )
        return span

    def _fault_answer(self, fault, path):
        if fault["delay"]:
            time.sleep(fault["delay"])
        status = fault["status"]
        extra = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
        if "/oauth2/" in path:
            error = fault["code"] or (
                "temporarily_unavailable" if status >= 500 or status == 429 else "invalid_request"
            )
            status_, body, _ = aad_error(
                status, error, AADSTS.get(error, 50000 if status >= 500 else 90000), "Injected fault."
            )
            return status_, body, extra
        status_, body, _ = graph_error(
            status, fault["code"] or DEFAULT_CODES.get(status, "UnknownError"), "Injected fault."
        )
        return status_, body, extra

    def _account_for(self, authorization):
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        with self.lock:
            info = self.access_tokens.get(token)
            if info is None or info["expires"] < time.time():
                return None, bool(info)
            return info["account"], False

    def _handler(self):
        fake = self

        class Handler(server.Handler):
            def _send(
                self,
                status,
                payload=None,
                headers=None,
                raw=None,
                content_type="application/json; odata.metadata=minimal",
            ):
                data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("request-id", str(uuid.uuid4()))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self._entry["end"] = time.time()  # before the client can have the answer (max_in_flight)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                entry = {"time": time.time(), "method": method, "client": self.client_address}
                self._entry = entry
                try:
                    self._answer(method, entry)
                finally:
                    entry.setdefault("end", time.time())  # answered: with "time", how long the request was in flight

            def _answer(self, method, entry):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urllib.parse.urlsplit(self.path).path
                headers: dict[str, str] = {}
                for k, v in self.headers.items():  # a repeated header (e.g. Prefer) is one comma-separated list
                    headers[k.lower()] = f"{headers[k.lower()]}, {v}" if k.lower() in headers else v
                account = fake._account_for(headers.get("authorization", ""))[0] if path.startswith("/v1.0/") else None
                with fake.lock:
                    entry.update(path=path, account=account)
                    fake.http_requests.append(entry)
                if fake.latency:
                    time.sleep(fake.latency)
                fault = None if path == "/" else fake._take_fault(path, batch_part=False)  # the page is always shown
                if fault:
                    status, payload, extra = fake._fault_answer(fault, path)
                    if path.startswith("/v1.0/"):
                        with fake.lock:
                            fake.call_log.append(
                                {
                                    "time": time.time(),
                                    "method": method,
                                    "path": path,
                                    "account": account,
                                    "batch": False,
                                    "status": status,
                                }
                            )
                elif path == "/v1.0/$batch" and method == "POST":
                    status, payload, extra = fake._batch(headers, body)
                else:
                    status, payload, extra = fake.dispatch(method, self.path, headers, body)
                if extra.pop("_created", False) and fake._lose():
                    self.close_connection = True  # committed, but the client never hears back
                    return
                if isinstance(payload, tuple):  # (content type, raw bytes)
                    return self._send(status, raw=payload[1], content_type=payload[0], headers=extra)
                self._send(status, payload, headers=extra)

        return Handler

    def _lose(self):
        with self.lock:
            if self.lost > 0:
                self.lost -= 1
                return True
        return False

    # --- request routing ----------------------------------------------------------------------
    def dispatch(self, method, target, headers, body, batch=False):
        """Answer one request (plain, or one part of a batch): (status, payload, extra headers)."""
        parts = urllib.parse.urlsplit(target)
        path, query = parts.path, dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        if path.startswith("/v1.0/"):
            account, expired = self._account_for(headers.get("authorization", ""))
            call = {
                "time": time.time(),
                "method": method,
                "path": path,
                "account": account,
                "batch": batch,
                "query": query,
            }
            try:
                payload = json.loads(body) if body else None
            except ValueError:
                payload = ValueError
            if isinstance(payload, dict) and payload.get("transactionId"):
                call["transactionId"] = payload["transactionId"]
            if account is None:
                message = (
                    "Lifetime validation failed, the token is expired."
                    if expired
                    else "IDX14100: JWT is not well formed, there are no dots (.)."
                )
                status, answer, extra = graph_error(401, "InvalidAuthenticationToken", message)
                extra["WWW-Authenticate"] = (
                    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="invalid_token"'
                )
            elif payload is ValueError:
                status, answer, extra = graph_error(400, "BadRequest", "Unable to read JSON request payload.")
            else:
                status, answer, extra = self._graph(
                    method, path.removeprefix("/v1.0/"), query, payload, account, headers
                )
            call["status"] = status
            with self.lock:
                self.call_log.append(call)
            return status, answer, extra
        if path == "/" and method == "GET":
            return self.home_page()
        segments = path.strip("/").split("/")
        if len(segments) >= 4 and segments[1:3] == ["oauth2", "v2.0"]:
            tenant, action = urllib.parse.unquote(segments[0]), "/".join(segments[3:])
            form = dict(urllib.parse.parse_qsl(body.decode())) if body else {}
            if action == "authorize" and method == "GET":
                return self._consent_page(tenant, query)
            if action == "decision" and method == "POST":
                return self._decide(tenant, form)
            if action == "token" and method == "POST":
                return self._token(tenant, form, headers)
        return graph_error(404, "UnknownError", "Resource not found.")

    # --- identity platform --------------------------------------------------------------------
    def _tenant_error(self, tenant):
        if tenant == self.tenant:
            return None
        if self.tenant in ("common", "organizations") and tenant in ("common", "organizations"):
            return None
        if tenant in ("common", "organizations", "consumers"):
            return aad_error(
                400,
                "invalid_request",
                50194,
                f"Application '{self.client_id}' is not configured as a multi-tenant application. Use a tenant-specific endpoint.",
            )
        return aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")

    def _consent_page(self, tenant, q):
        problem = self._tenant_error(tenant)
        if problem:
            problem = problem[1]["error_description"]
        elif q.get("client_id") != self.client_id:
            problem = (
                f"AADSTS700016: Application with identifier '{q.get('client_id')}' was not found in the directory."
            )
        elif q.get("response_type") != "code":
            problem = "AADSTS900144: The request body must contain the following parameter: 'response_type'."
        elif not q.get("redirect_uri"):
            problem = "AADSTS900144: The request body must contain the following parameter: 'redirect_uri'."
        elif not q.get("scope"):
            problem = "AADSTS900144: The request body must contain the following parameter: 'scope'."
        elif q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            problem = "AADSTS501491: Invalid size of Code_Challenge parameter (PKCE with S256 is required here)."
        if problem:
            return (
                400,
                (
                    "text/html; charset=utf-8",
                    f"<!doctype html><title>Sign in to your account</title><p>{html.escape(problem)}</p>".encode(),
                ),
                {},
            )
        scopes = "".join(f"<li>{html.escape(s)}</li>" for s in q["scope"].split())
        form = self._consent_form(
            f"/{urllib.parse.quote(tenant)}/oauth2/v2.0/decision", q, "login_hint", allow="Accept", deny="Cancel"
        )
        page = (
            "<!doctype html><title>Permissions requested (fake Microsoft)</title>"
            f"<h1>Permissions requested</h1><p>This app would like to:</p><ul>{scopes}</ul>{form}"
        )
        return 200, ("text/html; charset=utf-8", page.encode()), {}

    def _decide(self, tenant, form):
        page = self._consent_page(tenant, {k: v for k, v in form.items() if k not in ("decision", "login_hint")})
        if page[0] != 200:
            return page
        redirect = form.get("redirect_uri", "")
        params: dict[str, str] = {}
        if form.get("decision") != "allow":
            params.update(
                error="access_denied", error_description="AADSTS65004: User declined to consent to access the app."
            )
        else:
            code = "0.AXEA" + secrets.token_urlsafe(48)
            with self.lock:
                account = form.get("login_hint") or DEFAULT_ACCOUNT
                if account not in self.accounts:
                    self.add_account(account)
                self.codes[code] = {
                    "account": account,
                    "tenant": tenant,
                    "redirect_uri": redirect,
                    "challenge": form.get("code_challenge"),
                    "scope": form.get("scope", ""),
                    "client_id": form.get("client_id"),
                    "expires": time.time() + 600,
                }
            params["code"] = code
        if form.get("state"):
            params["state"] = form["state"]
        separator = "&" if "?" in redirect else "?"
        return 302, None, {"Location": f"{redirect}{separator}{urllib.parse.urlencode(params)}"}

    def _client(self, form, headers):
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(auth[6:]).decode()
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            basic_id, _, basic_secret = decoded.partition(":")
            client_id, client_secret = urllib.parse.unquote_plus(basic_id), urllib.parse.unquote_plus(basic_secret)
        if client_id != self.client_id:
            return aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory.",
            )
        if client_secret != self.client_secret:
            return aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        return None

    def _granted_scope(self, requested):
        if self.granted_scope is not None:
            return self.granted_scope
        names = [
            s.removeprefix(GRAPH)
            for s in requested.split()
            if s.lower() not in ("offline_access", "openid", "profile", "email")
        ]
        names += [] if any(n.lower() == "user.read" for n in names) else ["User.Read"]
        return " ".join(GRAPH + n for n in names)

    def _issue(self, account, scope, family, with_refresh):
        access = (
            "eyJ0eXAiOiJKV1QiLCJub25jZSI6ImZha2UiLCJhbGciOiJSUzI1NiJ9."
            + secrets.token_urlsafe(96)
            + "."
            + secrets.token_urlsafe(32)
        )
        self.access_tokens[access] = {
            "account": account,
            "expires": time.time() + self.token_lifetime,
            "family": family,
        }
        answer = {
            "token_type": "Bearer",
            "scope": self._granted_scope(scope),
            "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime,
            "access_token": access,
        }
        if with_refresh:
            refresh = "1.AXEA" + secrets.token_urlsafe(180)
            self.grants[refresh] = {"account": account, "scope": scope, "family": family, "client_id": self.client_id}
            answer["refresh_token"] = refresh
        return 200, answer, {"Cache-Control": "no-store", "Pragma": "no-cache"}

    def _token(self, tenant, form, headers):
        problem = self._tenant_error(tenant) or self._client(form, headers)
        if problem:
            return problem
        grant_type = form.get("grant_type")
        with self.lock:
            if grant_type == "authorization_code":
                code = self.codes.pop(form.get("code", ""), None)
                if code is None or code["expires"] < time.time():
                    return aad_error(
                        400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed or is invalid."
                    )
                if code["redirect_uri"] != form.get("redirect_uri"):
                    return aad_error(
                        400,
                        "invalid_grant",
                        50148,
                        "The redirect_uri does not match the one used in the authorization request.",
                    )
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
                if not verifier or challenge != code["challenge"]:
                    return aad_error(
                        400,
                        "invalid_grant",
                        501481,
                        "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                    )
                with_refresh = "offline_access" in [s.lower() for s in code["scope"].split()]
                return self._issue(code["account"], code["scope"], secrets.token_hex(8), with_refresh)
            if grant_type == "refresh_token":
                token = form.get("refresh_token", "")
                grant = self.grants.get(token)
                if grant is None:
                    family = self.superseded.get(token)
                    if family is None:
                        return aad_error(
                            400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
                        )
                    if family in self.revoked:
                        return aad_error(
                            400, "invalid_grant", 50173, "The provided grant has expired due to it being revoked."
                        )
                    return aad_error(
                        400,
                        "invalid_grant",
                        70000,
                        "The provided value for the 'refresh_token' is not valid: it was superseded by a newer token.",
                    )
                del self.grants[token]  # rotation: the superseded token stops working
                self.superseded[token] = grant["family"]
                return self._issue(grant["account"], form.get("scope") or grant["scope"], grant["family"], True)
        return aad_error(
            400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant_type}'."
        )

    # --- Graph --------------------------------------------------------------------------------
    def _page(self, items, path, query, size):
        """One page of `items` with an absolute `@odata.nextLink` ($skiptoken) when more remain."""
        try:
            start = int(base64.urlsafe_b64decode(query.get("$skiptoken", "") + "==").decode() or 0)
            size = max(1, min(int(query.get("$top") or size), 1000, self.max_page_size))
        except ValueError:
            return graph_error(400, "BadRequest", "Invalid $skiptoken or $top.")
        answer = {"@odata.context": f"{GRAPH}v1.0/$metadata#{path}", "value": items[start : start + size]}
        if start + size < len(items):
            rest = {k: v for k, v in query.items() if k != "$skiptoken"}
            rest["$skiptoken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode().rstrip("=")
            answer["@odata.nextLink"] = (
                f"{self.url}v1.0/{path}?{urllib.parse.urlencode(rest, quote_via=urllib.parse.quote, safe='$')}"
            )
        return 200, answer, {}

    @staticmethod
    def _select(item, query):
        if not query.get("$select"):
            return item
        keep = {f.strip().lower() for f in query["$select"].split(",")} | {"id", "@odata.etag"}
        return {k: v for k, v in item.items() if k.lower() in keep}

    def _graph(self, method, path, query, body, account, headers=None):
        segments = [urllib.parse.unquote(s) for s in path.strip("/").split("/")]
        if segments[:1] == ["subscriptions"]:
            return self._subscriptions(method, segments[1:], body, account)
        if segments[:1] != ["me"]:
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{segments[0]}'.")
        mailbox = self.accounts[account]
        rest = segments[1:]
        with self.lock:
            if rest == ["calendars"] and method == "GET":
                items = [self._select(c, query) for c in mailbox["calendars"].values()]
                return self._page(items, "me/calendars", query, self.page_size)
            if [r.lower() for r in rest] == ["calendar", "getschedule"]:
                if method != "POST":
                    return graph_error(405, "ErrorInvalidRequest", "The OData request is not supported.")
                return self._get_schedule(body, headers or {})
            if rest[:1] == ["calendar"]:  # the default calendar's alias
                rest = ["calendars", self.calendar_id(account)] + rest[1:]
            scoped = True  # the path names a calendar (not /me/events or /me/calendarView)
            if rest[:1] == ["events"] or [r.lower() for r in rest[:1]] == ["calendarview"]:
                rest = ["calendars", ""] + rest
                scoped = False
            if len(rest) < 2 or rest[0] != "calendars":
                return graph_error(400, "BadRequest", f"Resource not found for the segment '{'/'.join(rest)}'.")
            cal_id = rest[1] or self.calendar_id(account)
            calendar = mailbox["calendars"].get(cal_id)
            if calendar is None:
                return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            if len(rest) == 2 and method == "GET":
                return 200, self._select(calendar, query), {}
            if len(rest) >= 3 and rest[2].lower() == "calendarview":
                if method != "GET":
                    return graph_error(405, "ErrorInvalidRequest", "The OData request is not supported.")
                if len(rest) == 3:
                    return self._calendar_view(mailbox, cal_id, path.strip("/"), query, headers or {})
                if len(rest) == 4 and rest[3].lower() == "delta":
                    return self._delta(mailbox, cal_id, path.strip("/"), query, headers or {})
                return graph_error(400, "BadRequest", "Unsupported segment.")
            if len(rest) == 5 and rest[2] == "events" and rest[4] == "instances" and method == "GET":
                return self._list_instances(mailbox, rest[3], path.strip("/"), query)
            if len(rest) < 3 or rest[2] != "events" or len(rest) > 4:
                return graph_error(400, "BadRequest", "Unsupported segment.")
            if len(rest) == 3:
                if method == "GET":
                    return self._list_events(mailbox, cal_id, path, query)
                if method == "POST":
                    return self._create(mailbox, calendar, body)
                return graph_error(405, "ErrorInvalidRequest", "The OData request is not supported.")
            event = mailbox["events"].get(rest[3])
            if event is None and method in ("GET", "PATCH", "DELETE"):
                event = self._occurrence_by_id(mailbox, rest[3], store=method == "PATCH")  # addressable by its id
            if event is None or (scoped and event["_calendar"] != cal_id):
                return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            if method == "GET":
                return 200, self._view(event, query), {}
            if method == "DELETE" and event.get("seriesMasterId"):  # one occurrence: gone, the master remembers
                return self._cancel_occurrence(mailbox, event)
            if method in ("PATCH", "DELETE") and not mailbox["calendars"][event["_calendar"]]["canEdit"]:
                return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            if method == "PATCH":
                return self._patch(event, body)
            if method == "DELETE":
                del mailbox["events"][event["id"]]
                if event.get("transactionId"):
                    mailbox["transactions"].pop(event["transactionId"], None)
                self._bury(mailbox, event)
                for exception in [e for e in mailbox["events"].values() if e.get("seriesMasterId") == event["id"]]:
                    self._bury(mailbox, mailbox["events"].pop(exception["id"]))  # a series goes with its exceptions
                self._tell_guests(event, cancelled=self._emails(event))  # the organizer deleted a meeting
                return 204, None, {}
        return graph_error(405, "ErrorInvalidRequest", "The OData request is not supported.")

    def _view(self, event, query, zone=None):
        """An event as Graph returns it: extended properties only when $expand-ed; times in `zone` when given."""
        item = {k: v for k, v in event.items() if not k.startswith("_") and k != "singleValueExtendedProperties"}
        if zone is not None:
            for field in ("start", "end"):
                value = event.get(field)
                if not isinstance(value, dict):
                    continue
                if event.get("isAllDay"):  # all-day events float: midnight in whatever zone is asked for
                    item[field] = {
                        "dateTime": str(value.get("dateTime", ""))[:10] + "T00:00:00.0000000",
                        "timeZone": zone,
                    }
                else:
                    moment = _instant(value)
                    item[field] = _local(moment, zone) if moment else value
        expand = query.get("$expand")
        if expand:
            match = EXPAND_PROPERTIES.match(expand)
            if match:
                wanted = _unquote_filter_value(match.group(1)).lower() if match.group(1) is not None else None
                props = [
                    p
                    for p in event.get("singleValueExtendedProperties", [])
                    if wanted is None or p["id"].lower() == wanted
                ]
                if props:
                    item["singleValueExtendedProperties"] = props
        selected = self._select(item, query)
        if "singleValueExtendedProperties" in item:
            selected["singleValueExtendedProperties"] = item["singleValueExtendedProperties"]
        return selected

    def _list_events(self, mailbox, cal_id, path, query):
        items = [e for e in mailbox["events"].values() if e["_calendar"] == cal_id]
        if query.get("$filter"):
            match = FILTER_BY_PROPERTY.match(query["$filter"])
            if not match:
                return graph_error(
                    400, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes."
                )
            prop_id, value = _unquote_filter_value(match.group(2)).lower(), _unquote_filter_value(match.group(3))
            items = [
                e
                for e in items
                if any(
                    p["id"].lower() == prop_id and p["value"] == value
                    for p in e.get("singleValueExtendedProperties", [])
                )
            ]
        if query.get("$expand") and not EXPAND_PROPERTIES.match(query["$expand"]):
            return graph_error(400, "BadRequest", "Parsing OData Select and Expand failed.")
        items.sort(key=lambda e: e["createdDateTime"])
        return self._page([self._view(e, query) for e in items], path, query, self.events_page_size)

    def _check_event(self, body, creating):
        if not isinstance(body, dict):
            return graph_error(400, "BadRequest", "Empty Payload. JSON content expected.")
        for field in ("start", "end"):
            value = body.get(field)
            if value is None and not creating:
                continue
            if not isinstance(value, dict) or not value.get("dateTime") or not value.get("timeZone"):
                return graph_error(
                    400,
                    "ErrorInvalidRequest",
                    f"Your request can't be completed. The '{field}' property needs dateTime and timeZone.",
                )
            zone = value["timeZone"]
            if zone not in IANA_ZONES and zone != "UTC" and not zone.endswith(" Time"):
                return graph_error(
                    400,
                    "TimeZoneNotSupportedException",
                    f"A valid TimeZone value must be specified. The following TimeZone value is not supported: '{zone}'.",
                )
            try:
                dt.datetime.fromisoformat(value["dateTime"][:26])
            except ValueError:
                return graph_error(
                    400,
                    "ErrorInvalidRequest",
                    f"Cannot convert the literal '{value['dateTime']}' to the expected type 'Edm.DateTime'.",
                )
        for prop in body.get("singleValueExtendedProperties") or []:
            if (
                not isinstance(prop, dict)
                or not re.match(r"^String \{[0-9a-fA-F-]{36}\} Name \S+$", str(prop.get("id", "")))
                or not isinstance(prop.get("value"), str)
            ):
                return graph_error(
                    400, "ErrorInvalidExtendedPropertyValue", "The extended property id or value is not valid."
                )
        return None

    def _create(self, mailbox, calendar, body):
        problem = self._check_event(body, creating=True)
        if problem:
            return problem
        if not calendar["canEdit"]:
            return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        tid = body.get("transactionId")
        if (
            tid and mailbox["transactions"].get(tid) in mailbox["events"]
        ):  # a retried create: answer with the event already made
            event = mailbox["events"][mailbox["transactions"][tid]]
            return 201, self._view(event, {}), {"_created": True}
        body = dict(body)
        asked = self._asked_meeting(body)
        event = self._insert(mailbox, calendar, body)
        self._tell_guests(event, invited=self._emails(event))  # Graph invites the attendees of every new meeting
        self._meeting(mailbox, event, asked)
        return 201, self._view(event, {}), {"_created": True}

    @staticmethod
    def _asked_meeting(body):
        """Take the online-meeting fields out of a write body: the provider asked for, or None."""
        online = body.pop("isOnlineMeeting", None)
        provider = body.pop("onlineMeetingProvider", None)
        body.pop("onlineMeeting", None)
        return (provider or "teamsForBusiness") if online is True else None

    def _meeting(self, mailbox, event, provider):
        """Make the event's online meeting once, where its calendar allows the provider."""
        event.setdefault("isOnlineMeeting", False)
        event.setdefault("onlineMeetingProvider", "unknown")
        event.setdefault("onlineMeeting", None)
        allowed = mailbox["calendars"][event["_calendar"]].get("allowedOnlineMeetingProviders") or []
        if provider is None or provider not in allowed or event["isOnlineMeeting"]:
            return
        thread = secrets.token_hex(16)
        join_url = f"https://teams.microsoft.com/l/meetup-join/19%3ameeting_{thread}%40thread.v2/0"
        event.update(isOnlineMeeting=True, onlineMeetingProvider=provider, onlineMeeting={"joinUrl": join_url})
        account = event["organizer"]["emailAddress"]["address"]
        self.meetings.append({"account": account, "event_id": event["id"], "join_url": join_url})

    def _insert(self, mailbox, calendar, body):
        """Store a new event from a create body (no checks): the stored event."""
        tid = body.get("transactionId")
        now = _now()
        event = {
            "@odata.etag": f'W/"{secrets.token_urlsafe(24)}"',
            "id": _opaque(),
            "createdDateTime": now,
            "lastModifiedDateTime": now,
            "changeKey": secrets.token_urlsafe(24),
            "iCalUId": "040000008200E00074C5B7101A82E008" + secrets.token_hex(28).upper(),
            "subject": "",
            "body": {"contentType": "text", "content": ""},
            "importance": "normal",
            "sensitivity": "normal",
            "isAllDay": False,
            "isCancelled": False,
            "isOrganizer": True,
            "isReminderOn": True,
            "reminderMinutesBeforeStart": 15,
            "showAs": "busy",
            "type": "singleInstance",
            "location": {"displayName": ""},
            "attendees": [],
            "organizer": {"emailAddress": dict(calendar["owner"])},
            "webLink": "https://outlook.office365.com/owa/?itemid=fake&exvsurl=1&path=/calendar/item",
        }
        event.update(
            {
                k: v
                for k, v in body.items()
                if k not in ("id", "@odata.etag", "createdDateTime", "lastModifiedDateTime") and not k.startswith("_")
            }
        )
        event["attendees"] = _attendees(event.get("attendees"), [])
        event["_calendar"] = calendar["id"]
        if isinstance(event.get("recurrence"), dict):
            event["type"] = "seriesMaster"  # Graph's type of an event with a recurrence
        mailbox["events"][event["id"]] = event
        if tid:
            mailbox["transactions"][tid] = event["id"]
        self._touch(event)
        return event

    def _patch(self, event, body):
        problem = self._check_event(body, creating=False)
        if problem:
            return problem
        if "transactionId" in body and body["transactionId"] != event.get("transactionId"):
            return graph_error(400, "ErrorInvalidRequest", "The transactionId of an event can't be changed once set.")
        body = dict(body)
        old_guests = self._emails(event)
        if "attendees" in body:  # the collection is replaced; an address already there keeps its answer
            body["attendees"] = _attendees(body["attendees"], event.get("attendees") or [])
        asked = self._asked_meeting(body)
        props = {p["id"].lower(): p for p in event.get("singleValueExtendedProperties", [])}
        for prop in body.pop("singleValueExtendedProperties", None) or []:
            props[prop["id"].lower()] = prop
        for key in [
            k
            for k in body
            if k in ("id", "@odata.etag", "createdDateTime", "lastModifiedDateTime") or k.startswith("_")
        ]:
            body.pop(key, None)
        event.update(body)
        if props:
            event["singleValueExtendedProperties"] = list(props.values())
        event.update(
            {
                "lastModifiedDateTime": _now(),
                "changeKey": secrets.token_urlsafe(24),
                "@odata.etag": f'W/"{secrets.token_urlsafe(24)}"',
            }
        )
        self._meeting(self._mailbox_of(event), event, asked)
        self._touch(event)
        now = self._emails(event)
        # Graph sends the attendees of a meeting a message on every update its organizer makes, changed or not.
        self._tell_guests(
            event,
            invited=[e for e in now if e not in old_guests],
            updated=[e for e in now if e in old_guests],
            cancelled=[e for e in old_guests if e not in now],
        )
        return 200, self._view(event, {}), {}

    # --- guests ----------------------------------------------------------------------------------
    def attendees(self, event):
        return [
            {
                "email": (a.get("emailAddress") or {}).get("address", ""),
                "response": RESPONSES.get((a.get("status") or {}).get("response", "none"), "needsAction"),
            }
            for a in event.get("attendees") or []
        ]

    @staticmethod
    def _emails(event):
        return [
            str((a.get("emailAddress") or {}).get("address") or "").lower()
            for a in event.get("attendees") or []
            if isinstance(a, dict)
        ]

    def _tell_guests(self, event, invited=(), updated=(), cancelled=()):
        organizer = str(((event.get("organizer") or {}).get("emailAddress") or {}).get("address") or "")
        for kind, emails in (("invitation", invited), ("update", updated), ("cancellation", cancelled)):
            self._tell(kind, emails, event["id"], organizer)

    def _mailbox_of(self, event):
        return next(m for m in self.accounts.values() if m["events"].get(event["id"]) is event)

    # --- calendarView, delta, getSchedule --------------------------------------------------------
    @staticmethod
    def _window(query):
        """(start, end) from startDateTime/endDateTime (names case-insensitive), or a 400 answer."""
        lowered = {k.lower(): v for k, v in query.items()}
        start, end = lowered.get("startdatetime"), lowered.get("enddatetime")
        if not start or not end:
            return graph_error(
                400,
                "ErrorInvalidParameter",
                "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
            )
        start, end = _query_instant(start), _query_instant(end)
        if start is None or end is None:
            return graph_error(
                400,
                "ErrorInvalidParameter",
                "The value of the StartDateTime or EndDateTime parameter is not a valid date and time.",
            )
        if end < start:
            return graph_error(400, "ErrorInvalidParameter", "The EndDateTime must be later than the StartDateTime.")
        return start, end

    @staticmethod
    def _zone_preference(prefs):
        """The outlook.timezone asked for (UTC when none or unknown) and whether it was applied."""
        wanted = prefs.get("outlook.timezone")
        if wanted and _tz(wanted) is not None:
            return wanted, True
        return "UTC", False

    def _calendar_view(self, mailbox, cal_id, path, query, headers):
        window = self._window(query)
        if len(window) == 3:
            return window
        start, end = window
        if query.get("$filter"):
            return graph_error(
                400, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes."
            )
        if query.get("$expand") and not EXPAND_PROPERTIES.match(query["$expand"]):
            return graph_error(400, "BadRequest", "Parsing OData Select and Expand failed.")
        prefs = _prefer(headers)
        zone, zone_applied = self._zone_preference(prefs)
        size = self.events_page_size
        applied = [f'outlook.timezone="{zone}"'] if zone_applied else []
        if prefs.get("odata.maxpagesize", "").isdigit():
            size = max(1, int(prefs["odata.maxpagesize"]))
            applied.append(f"odata.maxpagesize={size}")
        events = [
            e
            for e in self._expanded(list(mailbox["events"].values()))
            if e["_calendar"] == cal_id and _overlaps(_span_of(e), start, end)
        ]
        events.sort(key=lambda e: (_span_of(e)[0], e["createdDateTime"]))
        status, answer, extra = self._page([self._view(e, query, zone) for e in events], path, query, size)
        if applied:
            extra["Preference-Applied"] = ", ".join(applied)
        return status, answer, extra

    def _delta(self, mailbox, cal_id, path, query, headers):
        lowered = {k.lower(): v for k, v in query.items()}
        prefs = _prefer(headers)
        zone, zone_applied = self._zone_preference(prefs)
        size = (
            int(prefs["odata.maxpagesize"])
            if prefs.get("odata.maxpagesize", "").isdigit() and int(prefs["odata.maxpagesize"]) > 0
            else DELTA_PAGE_SIZE
        )
        token = lowered.get("$skiptoken") or lowered.get("$deltatoken")
        if token is not None:
            state = decode_token(token)
            if not state or state.get("g") != self.delta_generation or state.get("c") != cal_id:
                return graph_error(
                    410,
                    self.delta_expired_code,
                    "The sync state generation is not found; a full synchronization is required.",
                )
            if "$deltatoken" in lowered:  # a new round: changes since the previous one ended
                state = {**state, "since": state["snap"], "snap": self.change_counter, "o": 0}
        else:
            unsupported = [k for k in ("$select", "$filter", "$expand", "$orderby", "$search", "$top") if k in lowered]
            if unsupported:
                return graph_error(
                    400,
                    "ErrorInvalidUrlQuery",
                    f"The query parameter '{unsupported[0]}' is not supported with delta on a calendar view.",
                )
            window = self._window(query)
            if len(window) == 3:
                return window
            state = {
                "c": cal_id,
                "s": window[0].isoformat(),
                "e": window[1].isoformat(),
                "since": None,
                "snap": self.change_counter,
                "o": 0,
                "g": self.delta_generation,
            }
        start, end = dt.datetime.fromisoformat(state["s"]), dt.datetime.fromisoformat(state["e"])
        since = state["since"]
        items = []
        if since is None:  # first round: everything in the window
            events = sorted(
                (
                    e
                    for e in self._expanded(list(mailbox["events"].values()))
                    if e["_calendar"] == cal_id and _overlaps(_span_of(e), start, end)
                ),
                key=lambda e: e.get("_seq", 0),
            )
            items = [self._view(e, {}, zone) for e in events]
        else:  # later rounds: what changed since, and what left the window or was deleted
            changed = [e for e in mailbox["events"].values() if e["_calendar"] == cal_id and e.get("_seq", 0) > since]
            changed += [t for t in mailbox["tombstones"].values() if t["_calendar"] == cal_id and t["_seq"] > since]
            for record in sorted(changed, key=lambda r: r.get("_seq", 0)):
                if record.get("type") == "seriesMaster" and record["id"] in mailbox["events"]:
                    items += self._series_changes(record, mailbox, start, end, zone)
                    continue
                before = self._span_at(record, since)
                was_in = before is not None and _overlaps(before, start, end)
                alive = record["id"] in mailbox["events"] and mailbox["events"][record["id"]] is record
                if alive and _overlaps(_span_of(record), start, end):
                    items.append(self._view(record, {}, zone))
                elif was_in:
                    items.append(
                        {"@odata.type": "#microsoft.graph.event", "id": record["id"], "@removed": {"reason": "deleted"}}
                    )
        offset, size = state["o"], max(1, min(size, self.max_page_size))
        answer = {"@odata.context": f"{GRAPH}v1.0/$metadata#Collection(event)", "value": items[offset : offset + size]}
        base = f"{self.url}v1.0/{path}"
        if offset + size < len(items):
            answer["@odata.nextLink"] = f"{base}?$skiptoken={encode_token({**state, 'o': offset + size})}"
        else:
            answer["@odata.deltaLink"] = (
                f"{base}?$deltatoken={encode_token({**state, 'o': 0, 'r': secrets.token_hex(4)})}"
            )
        applied = [f'outlook.timezone="{zone}"'] if zone_applied else []
        if size != DELTA_PAGE_SIZE or "odata.maxpagesize" in prefs:
            applied.append(f"odata.maxpagesize={size}")
        return 200, answer, ({"Preference-Applied": ", ".join(applied)} if applied else {})

    def _get_schedule(self, body, headers):
        if not isinstance(body, dict) or not isinstance(body.get("schedules"), list) or not body["schedules"]:
            return graph_error(400, "ErrorInvalidParameter", "The 'schedules' parameter is required.")
        bounds = []
        for field in ("startTime", "endTime"):
            value = body.get(field)
            if (
                not isinstance(value, dict)
                or not value.get("dateTime")
                or not value.get("timeZone")
                or _tz(value["timeZone"]) is None
            ):
                return graph_error(
                    400, "ErrorInvalidParameter", f"The '{field}' parameter needs a dateTime and a supported timeZone."
                )
            moment = _instant(value)
            if moment is None:
                return graph_error(
                    400,
                    "ErrorInvalidParameter",
                    f"Cannot convert the literal '{value['dateTime']}' to the expected type 'Edm.DateTime'.",
                )
            bounds.append(moment)
        start, end = bounds
        if end <= start:
            return graph_error(400, "ErrorInvalidParameter", "The endTime must be later than the startTime.")
        try:
            interval = int(body.get("availabilityViewInterval") or 30)
        except (TypeError, ValueError):
            interval = 0
        if not 5 <= interval <= 1440:
            return graph_error(
                400, "ErrorInvalidParameter", "The availabilityViewInterval must be between 5 and 1440 minutes."
            )
        zone, _ = self._zone_preference(_prefer(headers))
        accounts = {a.lower(): a for a in self.accounts}
        value = []
        for schedule in body["schedules"]:
            owner = accounts.get(str(schedule).lower())
            if owner is None:
                value.append(
                    {
                        "scheduleId": schedule,
                        "availabilityView": "",
                        "scheduleItems": [],
                        "workingHours": {},
                        "error": {
                            "message": "The specified user was not found.",
                            "responseCode": "ErrorMailRecipientNotFound",
                        },
                    }
                )
                continue
            mailbox = self.accounts[owner]
            default = self.calendar_id(owner)
            events = [
                e
                for e in mailbox["events"].values()
                if e["_calendar"] == default and not e.get("isCancelled") and _overlaps(_span_of(e), start, end)
            ]
            events.sort(key=lambda e: _span_of(e)[0])
            items = []
            for event in events:
                view = self._view(event, {}, zone)
                items.append(
                    {
                        "isPrivate": event.get("sensitivity") == "private",
                        "status": event.get("showAs", "busy"),
                        "subject": event.get("subject", ""),
                        "location": (event.get("location") or {}).get("displayName", ""),
                        "isMeeting": bool(event.get("attendees")),
                        "isRecurring": False,
                        "isException": False,
                        "isReminderSet": bool(event.get("isReminderOn")),
                        "start": view["start"],
                        "end": view["end"],
                    }
                )
            view_chars, slot = [], start
            while slot < end:
                slot_end = min(slot + dt.timedelta(minutes=interval), end)
                statuses = [
                    str(e.get("showAs", "busy")).lower() for e in events if _overlaps(_span_of(e), slot, slot_end)
                ]
                worst = max(
                    statuses,
                    key=lambda st: AVAILABILITY_RANK.index(st) if st in AVAILABILITY_RANK else 3,
                    default="free",
                )
                view_chars.append(AVAILABILITY.get(worst, "2"))
                slot = slot_end
            value.append(
                {
                    "scheduleId": schedule,
                    "availabilityView": "".join(view_chars),
                    "scheduleItems": items,
                    "workingHours": {
                        "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                        "startTime": "08:00:00.0000000",
                        "endTime": "17:00:00.0000000",
                        "timeZone": {"name": "UTC"},
                    },
                }
            )
        return (
            200,
            {
                "@odata.context": f"{GRAPH}v1.0/$metadata#Collection(microsoft.graph.scheduleInformation)",
                "value": value,
            },
            {},
        )

    # --- change notifications ----------------------------------------------------------------------
    def _subscription_view(self, sub):
        return {
            "@odata.context": f"{GRAPH}v1.0/$metadata#subscriptions/$entity",
            **{k: v for k, v in sub.items() if k not in ("account", "deleted")},
        }

    def _subscriptions(self, method, rest, body, account):
        not_found = graph_error(404, "ResourceNotFound", "The object was not found.")
        if not rest:
            if method == "GET":
                with self.lock:
                    subs = [
                        self._subscription_view(s)
                        for s in self.subscriptions.values()
                        if not s["deleted"] and s["account"] == account
                    ]
                return 200, {"@odata.context": f"{GRAPH}v1.0/$metadata#subscriptions", "value": subs}, {}
            if method != "POST":
                return graph_error(405, "ErrorInvalidRequest", "The OData request is not supported.")
            return self._subscribe(body, account)
        if len(rest) != 1:
            return graph_error(400, "BadRequest", "Unsupported segment.")
        with self.lock:
            sub = self.subscriptions.get(rest[0])
            if sub is None or sub["deleted"]:
                return not_found
            if method == "GET":
                return 200, self._subscription_view(sub), {}
            if method == "DELETE":
                sub["deleted"] = True
                return 204, None, {}
            if method == "PATCH":
                expiry = self._expiry(body.get("expirationDateTime") if isinstance(body, dict) else None)
                if isinstance(expiry, tuple):
                    return expiry
                sub["expirationDateTime"] = expiry
                return 200, self._subscription_view(sub), {}
        return graph_error(405, "ErrorInvalidRequest", "The OData request is not supported.")

    @staticmethod
    def _expiry(value):
        """A subscription's expirationDateTime normalised, or a 400 answer."""
        moment = _query_instant(str(value).replace("Z", "+00:00")) if value else None
        now = dt.datetime.now(UTC)
        if moment is None:
            return graph_error(
                400, "InvalidRequest", "expirationDateTime is required and must be an ISO 8601 date and time."
            )
        if moment <= now:
            return graph_error(400, "InvalidRequest", "Subscription expiration must be in the future.")
        if moment > now + dt.timedelta(minutes=SUBSCRIPTION_MAX_MINUTES):
            return graph_error(
                400,
                "InvalidRequest",
                f"Subscription expiration can only be {SUBSCRIPTION_MAX_MINUTES} minutes in the future.",
            )
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"

    def _subscribe(self, body, account):
        if not isinstance(body, dict):
            return graph_error(400, "BadRequest", "Empty Payload. JSON content expected.")
        change_types = [c.strip() for c in str(body.get("changeType") or "").split(",") if c.strip()]
        if not change_types or any(c not in ("created", "updated", "deleted") for c in change_types):
            return graph_error(
                400, "InvalidRequest", "changeType must be a comma-separated list of created, updated and deleted."
            )
        url = str(body.get("notificationUrl") or "")
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK)
        ):
            return graph_error(400, "InvalidRequest", "The Notification URL must be HTTPS.")
        resource = str(body.get("resource") or "")
        if not SUBSCRIPTION_RESOURCE.match(resource):
            return graph_error(400, "ExtensionError", f"Resource '{resource}' is not supported for subscriptions here.")
        if len(str(body.get("clientState") or "")) > 128:
            return graph_error(400, "InvalidRequest", "clientState may be at most 128 characters.")
        expiry = self._expiry(body.get("expirationDateTime"))
        if isinstance(expiry, tuple):
            return expiry
        if self.validate_subscriptions:  # Graph's handshake: echo the validationToken, 200 text/plain, within 10 s
            challenge = secrets.token_urlsafe(24)
            try:
                answer = requests.post(
                    f"{url}{'&' if '?' in url else '?'}validationToken={urllib.parse.quote(challenge)}",
                    data=b"",
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                    timeout=10,
                )
                ok = answer.status_code == 200 and answer.text == challenge
            except requests.RequestException:
                ok = False
            if not ok:
                return graph_error(
                    400,
                    "ValidationError",
                    "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
                )
        sub = {
            "id": str(uuid.uuid4()),
            "resource": resource,
            "applicationId": self.client_id,
            "changeType": ",".join(change_types),
            "clientState": body.get("clientState"),
            "notificationUrl": url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": body.get("lifecycleNotificationUrl"),
            "expirationDateTime": expiry,
            "creatorId": str(uuid.uuid5(uuid.NAMESPACE_DNS, account)),
            "includeResourceData": False,
            "latestSupportedTlsVersion": body.get("latestSupportedTlsVersion") or "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
            "account": account,
            "deleted": False,
        }
        with self.lock:
            self.subscriptions[sub["id"]] = sub
        return 201, self._subscription_view(sub), {}

    # --- JSON batching ------------------------------------------------------------------------
    def _batch(self, headers, raw):
        if self._account_for(headers.get("authorization", ""))[0] is None:
            return graph_error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            return graph_error(400, "BadRequest", "Unable to read JSON request payload.")
        requests_ = payload.get("requests") if isinstance(payload, dict) else None
        if not isinstance(requests_, list) or not requests_:
            return graph_error(400, "BadRequest", "Invalid batch payload format.")
        if len(requests_) > BATCH_LIMIT:
            return graph_error(400, "BadRequest", f"Number of requests exceeds the maximum of {BATCH_LIMIT}.")
        ids = [str(r.get("id", "")).lower() for r in requests_ if isinstance(r, dict)]
        if len(ids) != len(requests_) or "" in ids or len(set(ids)) != len(ids):
            return graph_error(400, "BadRequest", "Batch request ids must be present and unique (case-insensitive).")
        for r in requests_:
            if not r.get("method") or not r.get("url"):
                return graph_error(400, "BadRequest", "Each request needs a method and a url.")
            if "body" in r and not any(k.lower() == "content-type" for k in (r.get("headers") or {})):
                return graph_error(
                    400,
                    "BadRequest",
                    "Write request id : " + str(r["id"]) + " does not contain Content-Type header or body.",
                )
        with self.lock:
            self.max_batch_size = max(self.max_batch_size, len(requests_))
        responses, created = [], False
        for r in requests_:
            url = str(r["url"])
            part_headers = {k.lower(): str(v) for k, v in (r.get("headers") or {}).items()}
            part_headers.setdefault("authorization", headers.get("authorization", ""))
            if "://" in url:
                status, body, extra = graph_error(400, "BadRequest", "Invalid request URL: it must be relative.")
            else:
                target = "/v1.0/" + url.lstrip("/")
                fault = self._take_fault(urllib.parse.urlsplit(target).path, batch_part=True)
                if fault:
                    status, body, extra = self._fault_answer(fault, target)
                    with self.lock:
                        self.call_log.append(
                            {
                                "time": time.time(),
                                "method": r["method"].upper(),
                                "path": urllib.parse.urlsplit(target).path,
                                "account": self._account_for(part_headers["authorization"])[0],
                                "batch": True,
                                "status": status,
                                "transactionId": (r.get("body") or {}).get("transactionId")
                                if isinstance(r.get("body"), dict)
                                else None,
                            }
                        )
                else:
                    data = json.dumps(r["body"]).encode() if "body" in r else b""
                    status, body, extra = self.dispatch(r["method"].upper(), target, part_headers, data, batch=True)
            created = extra.pop("_created", False) or created
            answer = {"id": str(r["id"]), "status": status, "headers": dict(extra)}
            if body is not None:
                answer["headers"].setdefault(
                    "Content-Type",
                    "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8",
                )
                answer["body"] = body
            responses.append(answer)
        random.shuffle(responses)  # Graph answers in any order
        return 200, {"responses": responses}, {"_created": created}
