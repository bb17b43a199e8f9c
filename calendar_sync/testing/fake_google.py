"""A fake Google on 127.0.0.1 that behaves like Google where it matters to a calendar sync.

OAuth: consent page, authorization code with PKCE (S256), refresh grant, `invalid_grant`
for revoked or unknown grants, revoke (400 `invalid_token` for an unknown token, as Google;
client credentials are optional, as at Google, but refused with 401 `invalid_client` when wrong;
each revoke is logged in `revocations` with whether the client authenticated). Calendar v3: calendarList, events insert / get /
list / patch / delete, client-chosen ids (409 `duplicate` when taken, even by a cancelled
event), 410 on deleting a deleted event, 401 on expired tokens, batch requests
(multipart/mixed, at most 50 parts). Faults are injected with `inject()` (`usage_limit(account)`:
the account's event creates answer "Calendar usage limits exceeded"); every call is
recorded in `call_log` (`calls()`) so tests can count requests and check rate limits.

Reading: `events.list` with `timeMin`/`timeMax` (overlap), `showDeleted`, `singleEvents`,
`maxResults`/`pageToken` paging and incremental sync (`syncToken` -> changes since, deleted
events as minimal cancelled items, `nextSyncToken` on the last page; 410 `fullSyncRequired`
for an unknown or expired token; 400 when combined with `timeMin`/`timeMax` and the like, or when
its other parameters differ from the full read that began the sync);
`freeBusy.query`; push channels (`events.watch`, `channels.stop`, `notify()`). A person using
Google Calendar's own UI is played by `add_event` / `move_event` / `update_event` / `delete_event`,
and recurring events by `add_recurring_event` / `change_occurrence` (an exception event
`<id>_<original start>`); `singleEvents=true` lists their instances (the master's fields and
extended properties, `recurringEventId`, `originalStartTime`) with the exceptions in place.
Google Calendar's own UI is played by `add_event` / `move_event` / `update_event` / `delete_event`.

Video meetings: calendars carry `conferenceProperties.allowedConferenceSolutionTypes` (["hangoutsMeet"]
unless `allow_meet(account, False)`; calendarList.get answers one entry). With `conferenceDataVersion=1`,
an insert or patch carrying `conferenceData.createRequest` makes one Meet per requestId (the same
requestId again changes nothing, as Google ignores a repeated request), answered `pending` the next
`conference_pending(n)` times an event answer shows it, then `success` with a meet.google.com video
entry point; without `conferenceDataVersion` conference data is ignored; on a calendar that does
not allow Meet the write is refused, 400 "Invalid conference type value.". `conferences()` lists
the meetings made.
"""

import base64
import datetime as dt
import email.utils
import hashlib
import html
import json
import re
import secrets
import string
import threading
import time
import urllib.parse
from collections import defaultdict
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from . import server
from .base import FakeService, _expand_rrule
from .server import decode_token, encode_token

EVENT_ID = re.compile(r"^[0-9a-v]{5,1024}$")
DEFAULT_SCOPES = "https://www.googleapis.com/auth/calendar.events https://www.googleapis.com/auth/calendar.readonly"
BATCH_LIMIT = 50
DEFAULT_PAGE = 250  # events.list maxResults default
MAX_PAGE = 2500  # events.list never pages more than this
CHANNEL_ID = re.compile(r"^[A-Za-z0-9\-_+/=]{1,64}$")
CHANNEL_TTL = 7 * 24 * 3600  # default push channel lifetime (seconds)
CHANNEL_MAX_TTL = 30 * 24 * 3600
# Filters Google refuses alongside a syncToken (the sync guide: "not compatible").
NOT_WITH_SYNC_TOKEN = (
    "timeMin",
    "timeMax",
    "updatedMin",
    "orderBy",
    "q",
    "iCalUID",
    "privateExtendedProperty",
    "sharedExtendedProperty",
)
# Parameters that say how a page is fetched, not what the read returns: free to differ between reads.
NOT_FILTERS = ("syncToken", "pageToken", "maxResults", "fields", "alt", "prettyPrint", "quotaUser")
# events.list defaults, so that leaving a parameter out matches sending its default.
LIST_DEFAULTS = {"showDeleted": "false", "singleEvents": "false", "showHiddenInvitations": "false"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
EVENT_CREATE = re.compile(r"/calendar/v3/calendars/[^/]+/events")  # events.insert (POST)
MEET = "hangoutsMeet"
DEFAULT_ACCOUNT = "member@example.com"
ROOM_ACCOUNT = "rooms@example.com"
UTC = dt.UTC


def _error(status, reason, message, domain="global"):
    return status, {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"domain": domain, "reason": reason, "message": message}],
        }
    }


def _sync_parameters(query):
    """What an incremental read must repeat of the full read that began the sync ("All other query
    parameters should be the same as for the initial synchronization"), as a short digest."""
    kept = {
        **LIST_DEFAULTS,
        **{k: v for k, v in query.items() if k not in NOT_FILTERS and k not in NOT_WITH_SYNC_TOKEN},
    }
    return hashlib.sha256(json.dumps(sorted(kept.items())).encode()).hexdigest()[:16]


def _rfc3339(moment):
    """Google's timestamp form: UTC, milliseconds, Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse_rfc3339(value):
    """A timeMin/timeMax value: RFC 3339 with a mandatory offset, else None."""
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("z", "Z"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None


def _event_moment(value):
    """An EventDateTime as an aware UTC datetime (all-day `date`: midnight UTC), or None."""
    if not isinstance(value, dict):
        return None
    try:
        if value.get("dateTime"):
            parsed = dt.datetime.fromisoformat(str(value["dateTime"]))
            if parsed.tzinfo is None:
                try:
                    parsed = parsed.replace(tzinfo=ZoneInfo(value.get("timeZone") or "UTC"))
                except (ZoneInfoNotFoundError, ValueError):
                    parsed = parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
        if value.get("date"):
            day = dt.date.fromisoformat(str(value["date"]))
            return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    except ValueError:
        return None
    return None


def _span(event):
    return _event_moment(event.get("start")), _event_moment(event.get("end"))


def _overlaps(event, start, end):
    """Google's filter: timeMin bounds the event's end, timeMax its start (both exclusive)."""
    event_start, event_end = _span(event)
    if event_start is None or event_end is None:
        return False
    return (start is None or event_end > start) and (end is None or event_start < end)


def _event_time(value, all_day=False):
    """A control's start/end (aware datetime, or date for all-day) as an EventDateTime."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return {"dateTime": value.astimezone(UTC).isoformat().replace("+00:00", "Z"), "timeZone": "UTC"}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    raise TypeError(f"expected a datetime or a date, got {value!r}")


def _attendees(wanted, before):
    """An attendees array as Google stores it: each guest's `responseStatus` (needsAction when new; an
    address already invited keeps its answer unless the request gives one)."""
    answers = {str(a.get("email", "")).lower(): a.get("responseStatus") for a in before if isinstance(a, dict)}
    stored = []
    for attendee in wanted if isinstance(wanted, list) else []:
        if not isinstance(attendee, dict) or not attendee.get("email"):
            continue
        email = str(attendee["email"])
        stored.append(
            {
                **attendee,
                "responseStatus": attendee.get("responseStatus") or answers.get(email.lower()) or "needsAction",
            }
        )
    return stored


def _public(event):
    return {k: v for k, v in event.items() if not k.startswith("_")}


def _instance_id(master_id, original):
    """Google's id of one instance of a recurring event: `<master id>_<original start, UTC basic form>`."""
    return f"{master_id}_{original.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def _instances(events):
    """`events` as `singleEvents=true` lists them: each recurring event replaced by its instances
    (the master's fields, `recurringEventId`, `originalStartTime`, id `<master>_<time>`), with the
    exceptions stored for it (moved, changed or cancelled instances) in their place."""
    listed = {}
    for event in events.values():
        if event.get("recurringEventId") and event["recurringEventId"] in events:
            continue  # an exception: it takes its instance's place below
        recurrence = event.get("recurrence")
        start, end = _span(event)
        if not recurrence or start is None or end is None:
            listed[event["id"]] = event
            continue
        zone = (event.get("start") or {}).get("timeZone") or "UTC"
        fields = {k: v for k, v in event.items() if k not in ("recurrence", "id", "start", "end", "iCalUID")}
        for original, finish in _expand_rrule(recurrence, start, end, zone):
            instance_id = _instance_id(event["id"], original)
            moment = {"dateTime": original.astimezone(ZoneInfo(zone)).isoformat(), "timeZone": zone}
            instance = {
                **fields,
                "id": instance_id,
                "iCalUID": event.get("iCalUID", ""),
                "recurringEventId": event["id"],
                "originalStartTime": moment,
                "start": moment,
                "end": {"dateTime": finish.astimezone(ZoneInfo(zone)).isoformat(), "timeZone": zone},
            }
            exception = events.get(instance_id)
            if exception is not None:
                instance.update({k: v for k, v in exception.items() if k != "_seq"})
                instance["_seq"] = max(event.get("_seq", 0), exception.get("_seq", 0))
            elif event["status"] == "cancelled":
                instance["status"] = "cancelled"
            listed[instance_id] = instance
    return listed


class FakeGoogle(FakeService):
    thread_name = "fake-google"
    provider = "google"
    default_account = DEFAULT_ACCOUNT
    room_account = ROOM_ACCOUNT
    api_prefix = "/calendar/"
    title = "Fake Google Calendar"

    def __init__(
        self, port=0, client_id="test-client-id", client_secret="test-client-secret", token_lifetime=3600, latency=0.0
    ):
        self.client_id = client_id
        self.initial_latency = latency
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.lock = threading.RLock()
        self._init_state()
        self._listen(port, self._handler())

    def _init_state(self):
        self._init_common()  # accounts: email -> {"calendars": {id: cal}, "events": {calendar id: {id: event}}}
        self.meetings = []  # one per Meet made: {"account", "calendar", "event_id", "request_id", "join_url"}
        self.pending_answers = 0  # `conference_pending(n)`: the next n answers show a new meeting pending
        self.revocations = []  # one per revoke request: {"client_id", "client_authenticated"}
        self.change_counter = 0  # global change counter: every event carries the value of its last change
        self.sync_epoch = secrets.token_hex(4)  # sync tokens of another epoch answer 410
        self.max_page_size = MAX_PAGE  # lower it to make events.list page sooner (Google may)
        self.channels = {}  # channel id -> {address, token, resourceId, expiration, stopped, ...}
        self._resource_ids = {}  # (account, calendar) -> resourceId of its events collection
        self.lost = 0  # creates still to commit without answering (`lose_response`)

    # --- settings (start, stop, with: LoopbackServer; env, reset, reset_log, calls: FakeService) ----
    def settings(self):
        """CALENDAR_SYNC entries that point the app at this server."""
        return {
            "GOOGLE_CLIENT_ID": self.client_id,
            "GOOGLE_CLIENT_SECRET": self.client_secret,
            "GOOGLE_OAUTH_AUTH_URI": f"{self.url}o/oauth2/auth",
            "GOOGLE_OAUTH_TOKEN_URI": f"{self.url}token",
            "GOOGLE_OAUTH_REVOKE_URI": f"{self.url}revoke",
            "GOOGLE_API_ROOT": self.url,
        }

    # --- test controls ---------------------------------------------------------------------
    def add_account(self, email, calendars=None):
        with self.lock:
            cals = {email: {"summary": email, "accessRole": "owner", "primary": True}}
            cals.update(
                calendars
                or {
                    "team@group.calendar.google.com": {"summary": "Team", "accessRole": "writer"},
                    "holidays@group.v.calendar.google.com": {"summary": "Holidays", "accessRole": "reader"},
                }
            )
            for cal in cals.values():
                cal.setdefault("conferenceProperties", {"allowedConferenceSolutionTypes": [MEET]})
            self.accounts[email] = {"calendars": cals, "events": defaultdict(dict)}
        return email

    def calendar_id(self, account=None, name=None):
        """Id of the calendar called `name` (the primary calendar when None)."""
        account = account or DEFAULT_ACCOUNT
        with self.lock:
            for cal_id, cal in self.accounts[account]["calendars"].items():
                if (name is None and cal.get("primary")) or cal["summary"] == name:
                    return cal_id
        raise KeyError(name)

    def _calendars(self, account):
        with self.lock:
            cals = sorted(self.accounts[account]["calendars"].items(), key=lambda item: not item[1].get("primary"))
            return [(cal_id, cal["summary"]) for cal_id, cal in cals]

    def usage_limit(self, account, times=10**9):
        """The account reached Google's "Calendar usage limits exceeded" (not the API quota): its event
        creates, batch parts too, answer the documented 403 (reason `quotaExceeded`, domain
        `usageLimits`) the next `times` times, or until `clear_faults()`. Reads and other writes go on."""
        self.inject(
            403,
            times=times,
            path=EVENT_CREATE,
            method="POST",
            account=account,
            code="quotaExceeded",
            domain="usageLimits",
            message="Calendar usage limits exceeded.",
        )

    def allow_meet(self, account, allowed=True, calendar=None):
        """Whether the calendar (the primary one by default) allows Google Meet (an administrator
        may turn it off): its `conferenceProperties.allowedConferenceSolutionTypes`."""
        with self.lock:
            cal = self.accounts[account]["calendars"][self._calendar_id(account, calendar or "primary")]
            cal["conferenceProperties"] = {"allowedConferenceSolutionTypes": [MEET] if allowed else []}

    def conference_pending(self, n=1):
        """The next `n` event answers that show a newly made meeting say `pending` (no entry point yet)."""
        with self.lock:
            self.pending_answers = n

    def lose_response(self, times=1):
        """The next `times` event creates (not in a batch) are committed, then the connection drops unanswered."""
        with self.lock:
            self.lost += times

    def _lose(self):
        with self.lock:
            if self.lost > 0:
                self.lost -= 1
                return True
        return False

    def expand(self, account, event_id, calendar=None):
        with self.lock:
            account = account or DEFAULT_ACCOUNT
            events = self.accounts[account]["events"][self._calendar_id(account, calendar or "primary")]
            rows = [(*_span(i), i.get("summary") or "") for i in self._expansion(events, event_id)]
            return sorted(rows, key=lambda row: row[0])

    def conferences(self, account=None):
        """Meetings made, each {"account", "calendar", "event_id", "request_id", "join_url", "live"}:
        `live` while its event exists (cancelling the event removes its meeting)."""
        with self.lock:
            rows = []
            for meeting in self.meetings:
                if account is not None and meeting["account"] != account:
                    continue
                event = self.accounts[meeting["account"]]["events"][meeting["calendar"]].get(meeting["event_id"])
                live = bool(
                    event
                    and event["status"] != "cancelled"
                    and (event.get("_meet") or {}).get("uri") == meeting["join_url"]
                )
                rows.append({**meeting, "live": live})
            return rows

    def revoke_grants(self, account):
        with self.lock:
            for token in [t for t, g in self.grants.items() if g["account"] == account]:
                self._revoke_grant(token)

    def expire_cursors(self):
        """Every outstanding syncToken now answers 410 fullSyncRequired (as when Google expires them)."""
        with self.lock:
            self.sync_epoch = secrets.token_hex(4)

    def events(self, account=None, calendar=None, include_cancelled=False):
        """{event_id: event} of an account's calendar (primary by default)."""
        with self.lock:
            account = account or DEFAULT_ACCOUNT
            cal = self._calendar_id(account, calendar or "primary")
            items = self.accounts[account]["events"].get(cal, {})
            return {k: _public(v) for k, v in items.items() if include_cancelled or v["status"] != "cancelled"}

    def _agenda(self, account, calendar):
        rows = []
        for event in (
            self.accounts[account]["events"].get(self._calendar_id(account, calendar or "primary"), {}).values()
        ):
            if event["status"] != "cancelled":
                start, end = _span(event)
                rows.append(
                    {
                        "id": event["id"],
                        "title": event.get("summary") or "",
                        "start": start,
                        "end": end,
                        "busy": event.get("transparency") != "transparent",
                    }
                )
        return rows

    # --- a person in Google Calendar's own UI ----------------------------------------------------
    def add_event(self, account, start, end, title="Busy", calendar=None, busy=True):
        """Create an event as the member would (datetimes, or dates for an all-day event); return its id."""
        with self.lock:
            cal = self._calendar_id(account, calendar or "primary")
            events = self.accounts[account]["events"][cal]
            event_id = secrets.token_hex(13)
            now = _rfc3339(dt.datetime.now(UTC))
            event = {
                "kind": "calendar#event",
                "id": event_id,
                "status": "confirmed",
                "htmlLink": f"https://www.google.com/calendar/event?eid={event_id}",
                "created": now,
                "summary": title,
                "creator": {"email": account, "self": True},
                "organizer": {"email": account, "self": True},
                "start": _event_time(start),
                "end": _event_time(end),
                "iCalUID": f"{event_id}@google.com",
                "sequence": 0,
                "eventType": "default",
            }
            if not busy:
                event["transparency"] = "transparent"
            events[event_id] = event
            self._touch(event)
        self._changed(account, cal, event_id)
        return event_id

    def move_event(self, account, event_id, start, end, calendar=None):
        """Drag an event to a new time."""
        self.update_event(account, event_id, calendar=calendar, start=_event_time(start), end=_event_time(end))

    def update_event(self, account, event_id, calendar=None, **fields):
        """Edit an event's fields as the member would, e.g. `transparency="transparent"` (None removes a field)."""
        cal = self._calendar_id(account, calendar or "primary")
        with self.lock:
            event = self.accounts[account]["events"][cal][event_id]
            for key, value in fields.items():
                if value is None:
                    event.pop(key, None)
                else:
                    event[key] = value
            event["sequence"] = event.get("sequence", 0) + 1
            self._touch(event)
        self._changed(account, cal, event_id)

    def respond(self, account, event_id, email, response, calendar=None):
        """A guest answers the invitation: their `responseStatus` on the organizer's (`account`'s) event
        becomes `response` ("needsAction", "accepted", "declined", "tentative"), and the event changes
        (new etag, in the next incremental read). KeyError when `email` is not one of its attendees."""
        cal = self._calendar_id(account, calendar or "primary")
        with self.lock:
            event = self.accounts[account]["events"][cal][event_id]
            attendee = next(
                (a for a in event.get("attendees") or [] if str(a.get("email", "")).lower() == email.lower()), None
            )
            if attendee is None:
                raise KeyError(email)
            attendee["responseStatus"] = response
            self._touch(event)
        self._changed(account, cal, event_id)

    def set_busy(self, account, event_id, busy, calendar=None):
        self.update_event(account, event_id, calendar=calendar, transparency=None if busy else "transparent")

    def delete_event(self, account, event_id, calendar=None):
        """Delete an event in the UI: Google keeps it as cancelled (showDeleted and sync see it)."""
        cal = self._calendar_id(account, calendar or "primary")
        with self.lock:
            event = self.accounts[account]["events"][cal][event_id]
            event["status"] = "cancelled"
            self._touch(event)
        self._changed(account, cal, event_id)

    def add_recurring_event(self, account, start, end, rule, title="Busy", calendar=None, time_zone="UTC"):
        """Create a recurring event as the member would: the first occurrence `start`–`end` in
        `time_zone`, repeating by `rule` (an RRULE, without "RRULE:"); return the master's id."""
        event_id = self.add_event(account, start, end, title=title, calendar=calendar)
        with self.lock:
            event = self.accounts[account]["events"][self._calendar_id(account, calendar or "primary")][event_id]
            for field, moment in (("start", start), ("end", end)):
                event[field] = {"dateTime": moment.astimezone(ZoneInfo(time_zone)).isoformat(), "timeZone": time_zone}
            event["recurrence"] = [f"RRULE:{rule}"]
            self._touch(event)
        return event_id

    def change_occurrence(self, account, event_id, original_start, start=None, end=None, cancel=False, calendar=None):
        """Move (`start`, `end`) or cancel one instance of a recurring event in the UI: Google keeps an
        exception event `<id>_<original start>` with `recurringEventId` and `originalStartTime`."""
        with self.lock:
            events = self.accounts[account]["events"][self._calendar_id(account, calendar or "primary")]
            master = events[event_id]
            zone = master["start"].get("timeZone") or "UTC"
            instance_id = _instance_id(event_id, original_start)
            exception = events.setdefault(
                instance_id,
                {
                    "kind": "calendar#event",
                    "id": instance_id,
                    "status": "confirmed",
                    "recurringEventId": event_id,
                    "originalStartTime": {
                        "dateTime": original_start.astimezone(ZoneInfo(zone)).isoformat(),
                        "timeZone": zone,
                    },
                },
            )
            if cancel:
                exception["status"] = "cancelled"
            if start is not None and end is not None:
                exception["start"], exception["end"] = _event_time(start), _event_time(end)
            self._touch(exception)
        return instance_id

    # --- push -------------------------------------------------------------------------------------
    def notify(self, channel_id, event_id=None, secret=None, state="exists"):
        """Deliver a push notification for a channel the way Google does (headers, empty body: Google
        names no event, so `event_id` is ignored); the response. `secret` replaces the channel's token
        (a forged notification)."""
        with self.lock:
            channel = self.channels[channel_id]
            if channel["stopped"]:
                return None
            channel["message_number"] += 1
            expiration = dt.datetime.fromtimestamp(int(channel["expiration"]) / 1000, UTC)
            headers = {
                "X-Goog-Channel-ID": channel_id,
                "X-Goog-Channel-Expiration": email.utils.format_datetime(expiration, usegmt=True),
                "X-Goog-Resource-ID": channel["resourceId"],
                "X-Goog-Resource-URI": channel["resourceUri"],
                "X-Goog-Resource-State": state,
                "X-Goog-Message-Number": str(channel["message_number"]),
                "Content-Length": "0",
            }
            token = channel.get("token") if secret is None else secret
            if token:
                headers["X-Goog-Channel-Token"] = token
            address = channel["address"]
        return requests.post(address, data=b"", headers=headers, timeout=10)

    def push_channels(self, account=None):
        """Channels made (stopped ones too): {id: {"id", "account", "calendar", "address", "secret", "resource", "expiration", "stopped"}}."""
        with self.lock:
            return {
                c["id"]: {
                    "id": c["id"],
                    "account": c["account"],
                    "calendar": c["calendar_id"],
                    "address": c["address"],
                    "secret": c["token"],
                    "resource": c["resourceUri"],
                    "expiration": c["expiration"],
                    "stopped": c["stopped"],
                }
                for c in self.channels.values()
                if account is None or c["account"] == account
            }

    def drop_channel(self, channel_id):
        """Google ends a channel on its own: it sends nothing more, and stopping it answers 404."""
        with self.lock:
            self.channels[channel_id]["stopped"] = True

    def api_requests(self, account=None):
        """How many HTTP requests reached the Calendar API (a batch counts once)."""
        with self.lock:
            return sum(
                1
                for r in self.http_requests
                if r["path"].startswith(("/calendar/", "/batch/")) and (account is None or r["account"] == account)
            )

    # --- internals ---------------------------------------------------------------------------
    def _calendar_id(self, account, calendar_id):
        return account if calendar_id == "primary" else calendar_id

    def _touch(self, event):
        """Record a change: bump the global counter, stamp `updated` (and the hidden `_seq`)."""
        with self.lock:
            self.change_counter += 1
            event["_seq"] = self.change_counter
            event["updated"] = _rfc3339(dt.datetime.now(UTC))
            event["etag"] = f'"{self.change_counter}{secrets.randbelow(10**6):06d}"'

    def _new_token(self, prefix):
        return f"{prefix}{secrets.token_urlsafe(24)}"

    def _revoke_grant(self, refresh_token):
        self.grants.pop(refresh_token, None)
        for token in [t for t, i in self.access_tokens.items() if i["grant"] == refresh_token]:
            del self.access_tokens[token]

    def _issue_access(self, refresh_token):
        token = self._new_token("ya29.fake-")
        self.access_tokens[token] = {
            "account": self.grants[refresh_token]["account"],
            "expires": time.time() + self.token_lifetime,
            "grant": refresh_token,
        }
        return token

    def _handler(self):
        fake = self

        class Handler(server.Handler):
            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, status, payload=None, headers=None, raw=None, content_type="application/json"):
                data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
                self.send_response(status)
                if data or status != 204:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self._entry["end"] = time.time()  # before the client can have the answer (max_in_flight)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                entry = {"time": time.time(), "method": method, "path": urllib.parse.urlsplit(self.path).path}
                self._entry = entry
                try:
                    self._answer(method, entry)
                finally:
                    entry.setdefault("end", time.time())  # answered: with "time", how long the request was in flight

            def _answer(self, method, entry):
                body = self._body()
                parts = urllib.parse.urlsplit(self.path)
                token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                with fake.lock:
                    entry["account"] = (fake.access_tokens.get(token) or {}).get("account")
                    fake.http_requests.append(entry)
                if fake.latency:
                    time.sleep(fake.latency)
                if parts.path == "/batch/calendar/v3" and method == "POST":
                    return self._batch(body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, extra = fake.dispatch(method, self.path, headers, body)
                if method == "POST" and status == 200 and EVENT_CREATE.fullmatch(parts.path) and fake._lose():
                    self.close_connection = True  # committed, but the client never hears back
                    return None
                if isinstance(payload, tuple):  # (content type, raw bytes)
                    return self._send(status, raw=payload[1], content_type=payload[0], headers=extra)
                self._send(status, payload, headers=extra)

            def _batch(self, body):
                content_type = self.headers.get("Content-Type", "")
                message = BytesParser(policy=HTTP).parsebytes(
                    b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
                )
                parts = list(message.iter_parts())
                if len(parts) > BATCH_LIMIT:
                    return self._send(
                        *_error(400, "tooManyRequests", f"A batch may hold at most {BATCH_LIMIT} requests.")
                    )
                boundary = "batch_" + secrets.token_hex(8)
                out = []
                for part in parts:
                    raw = cast(bytes, part.get_payload(decode=True))  # each part is one application/http message
                    head, sub_body = (re.split(rb"\r?\n\r?\n", raw, maxsplit=1) + [b""])[:2]
                    lines = re.split(r"\r?\n", head.decode())
                    method, path, _ = lines[0].split(" ", 2)
                    headers = {
                        k.strip().lower(): v.strip()
                        for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
                    }
                    # Like Google: the outer request's headers apply to parts that don't set them.
                    headers.setdefault("authorization", self.headers.get("Authorization", ""))
                    status, payload, extra = fake.dispatch(method, path, headers, sub_body, batch=True)
                    data = b"" if payload is None else json.dumps(payload).encode()
                    reason = HTTPStatus(status).phrase
                    extra_lines = "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items())
                    out.append(
                        f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <response-{part['Content-ID'].strip('<>')}>\r\n\r\n"
                        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=UTF-8\r\n{extra_lines}Content-Length: {len(data)}\r\n\r\n".encode()
                        + data
                        + b"\r\n"
                    )
                raw = b"".join(out) + f"--{boundary}--\r\n".encode()
                self._send(200, raw=raw, content_type=f"multipart/mixed; boundary={boundary}")

        return Handler

    # --- request routing (shared by plain and batched requests) ------------------------------
    def dispatch(self, method, target, headers, body, batch=False):
        parts = urllib.parse.urlsplit(target)
        path, query = parts.path, dict(urllib.parse.parse_qsl(parts.query))
        if path == "/" and method == "GET":
            return self.home_page()
        account, expires = None, 0
        if path.startswith("/calendar/"):
            token = headers.get("authorization", "").removeprefix("Bearer ").strip()
            with self.lock:
                info = self.access_tokens.get(token)
                account, expires = (info["account"], info["expires"]) if info else (None, 0)
                self.call_log.append(
                    {
                        "time": time.time(),
                        "method": method,
                        "path": path,
                        "account": account,
                        "batch": batch,
                        "query": query,
                    }
                )
        fault = self._take_fault(path, method=method, account=account)
        if fault:
            if fault["delay"]:
                time.sleep(fault["delay"])
            extra = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
            reason = fault["code"] or {429: "rateLimitExceeded", 403: "rateLimitExceeded"}.get(
                fault["status"], "backendError"
            )
            if path in ("/token", "/revoke"):  # OAuth endpoints answer RFC 6749 errors
                return fault["status"], {"error": "internal_failure" if fault["status"] >= 500 else reason}, extra
            error = _error(fault["status"], reason, fault["message"] or "Injected fault", fault["domain"] or "global")
            return (*error, extra)
        form = dict(urllib.parse.parse_qsl(body.decode())) if body and not path.startswith("/calendar/") else {}
        if path == "/o/oauth2/auth" and method == "GET":
            return self._consent_page(query)
        if path == "/o/oauth2/auth/decision" and method == "POST":
            return self._decide(form)
        if path == "/token" and method == "POST":
            return self._token(form, headers)
        if path == "/revoke" and method == "POST":
            return self._revoke({**query, **form}, headers)
        if path.startswith("/calendar/v3/"):
            if account is None or expires < time.time():
                return (
                    *_error(401, "authError", "Request had invalid authentication credentials."),
                    {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
                )
            return (*self._calendar(method, path.removeprefix("/calendar/v3/"), query, body, account), {})
        return (*_error(404, "notFound", "Not Found"), {})

    # --- OAuth ------------------------------------------------------------------------------
    def _consent_page(self, q):
        problem = None
        if q.get("client_id") != self.client_id:
            problem = "invalid_client"
        elif q.get("response_type") != "code" or not q.get("redirect_uri"):
            problem = "invalid_request"
        elif q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            problem = "invalid_request: PKCE S256 required"
        if problem:
            return 400, ("text/html", f"<h1>Error 400: {html.escape(problem)}</h1>".encode()), {}
        page = (
            "<!doctype html><title>Sign in - Google Accounts (fake)</title>"
            "<h1>Fake Google</h1><p>ManageHub wants to manage events in your calendars.</p>"
            + self._consent_form("/o/oauth2/auth/decision", q, "account")
        )
        return 200, ("text/html; charset=utf-8", page.encode()), {}

    def _decide(self, form):
        redirect = form.get("redirect_uri", "")
        params = {"state": form.get("state", "")}
        if form.get("decision") != "allow":
            params["error"] = "access_denied"
        else:
            code = self._new_token("4/fake-code-")
            scope = self.granted_scope if self.granted_scope is not None else form.get("scope", DEFAULT_SCOPES)
            with self.lock:
                account = form.get("account") or DEFAULT_ACCOUNT
                if account not in self.accounts:
                    self.add_account(account)
                self.codes[code] = {
                    "account": account,
                    "redirect_uri": redirect,
                    "challenge": form.get("code_challenge"),
                    "scope": scope,
                    "client_id": form.get("client_id"),
                }
            params.update(code=code, scope=scope)
        separator = "&" if "?" in redirect else "?"
        return 302, None, {"Location": f"{redirect}{separator}{urllib.parse.urlencode(params)}"}

    def _client_credentials(self, form, headers):
        """(client_id, client_secret) from the body or HTTP Basic (RFC 6749 §2.3.1); None when absent."""
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("authorization", "")
        if auth.startswith("Basic "):
            decoded = base64.b64decode(auth[6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
            client_id, client_secret = urllib.parse.unquote(client_id), urllib.parse.unquote(client_secret)
        return client_id, client_secret

    def _client_ok(self, form, headers):
        return self._client_credentials(form, headers) == (self.client_id, self.client_secret)

    def _token(self, form, headers):
        invalid_grant: tuple[int, dict, dict] = (
            400,
            {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
            {},
        )
        if not self._client_ok(form, headers):
            return 401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}, {}
        with self.lock:
            if form.get("grant_type") == "authorization_code":
                grant = self.codes.pop(form.get("code", ""), None)
                if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
                    return invalid_grant
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
                if challenge != grant["challenge"]:
                    return 400, {"error": "invalid_grant", "error_description": "Invalid code verifier."}, {}
                refresh = self._new_token("1//fake-refresh-")
                self.grants[refresh] = {"account": grant["account"], "scope": grant["scope"]}
                access = self._issue_access(refresh)
                return (
                    200,
                    {
                        "access_token": access,
                        "expires_in": self.token_lifetime,
                        "refresh_token": refresh,
                        "scope": grant["scope"],
                        "token_type": "Bearer",
                    },
                    {},
                )
            if form.get("grant_type") == "refresh_token":
                refresh = form.get("refresh_token", "")
                if refresh not in self.grants:
                    return invalid_grant
                access = self._issue_access(refresh)
                return (
                    200,
                    {
                        "access_token": access,
                        "expires_in": self.token_lifetime,
                        "scope": self.grants[refresh]["scope"],
                        "token_type": "Bearer",
                    },
                    {},
                )
        return 400, {"error": "unsupported_grant_type"}, {}

    def _revoke(self, params, headers):
        client_id, client_secret = self._client_credentials(params, headers)
        authenticated = (client_id, client_secret) == (self.client_id, self.client_secret)
        with self.lock:
            self.revocations.append({"client_id": client_id, "client_authenticated": authenticated})
        if (client_id or client_secret) and not authenticated:
            return 401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}, {}
        token = params.get("token", "")
        with self.lock:
            if token in self.grants:
                self._revoke_grant(token)
            elif token in self.access_tokens:
                self._revoke_grant(self.access_tokens[token]["grant"])
            else:
                return 400, {"error": "invalid_token", "error_description": "Token expired or revoked"}, {}
        return 200, {}, {}

    # --- Calendar v3 ------------------------------------------------------------------------
    def _calendar(self, method, path, query, body, account):
        segments = [urllib.parse.unquote(s) for s in path.split("/")]
        data = self.accounts[account]

        def entry(cid, c):
            return {
                "kind": "calendar#calendarListEntry",
                "id": cid,
                "summary": c["summary"],
                "accessRole": c["accessRole"],
                "primary": c.get("primary", False),
                "conferenceProperties": c.get("conferenceProperties") or {"allowedConferenceSolutionTypes": []},
            }

        if segments == ["users", "me", "calendarList"] and method == "GET":
            items = [entry(cid, c) for cid, c in data["calendars"].items()]
            return 200, {"kind": "calendar#calendarList", "items": items}
        if segments[:3] == ["users", "me", "calendarList"] and len(segments) == 4 and method == "GET":
            cid = self._calendar_id(account, segments[3])
            if cid not in data["calendars"]:
                return _error(404, "notFound", "Not Found")
            return 200, entry(cid, data["calendars"][cid])
        if segments == ["freeBusy"]:
            return (
                self._free_busy(account, body)
                if method == "POST"
                else _error(405, "methodNotAllowed", "Method not allowed")
            )
        if segments == ["channels", "stop"]:
            return (
                self._stop_channel(body) if method == "POST" else _error(405, "methodNotAllowed", "Method not allowed")
            )
        if len(segments) < 3 or segments[0] != "calendars" or segments[2] != "events":
            return _error(404, "notFound", "Not Found")
        calendar = self._calendar_id(account, segments[1])
        if calendar not in data["calendars"]:
            return _error(404, "notFound", "Not Found")
        writable = data["calendars"][calendar]["accessRole"] in ("owner", "writer")
        with self.lock:
            events = data["events"][calendar]
            if len(segments) == 3 and method == "GET":
                return self._list(calendar, events, query)
            if segments[3:] == ["watch"] and method == "POST":
                return self._watch(account, calendar, segments[1], body)
            if method != "GET" and not writable:
                return _error(403, "requiredAccessLevel", "You need to have writer access to this calendar.")
            if len(segments) == 3 and method == "POST":
                event = json.loads(body or b"{}")
                event_id = event.get("id") or secrets.token_hex(13)
                if not EVENT_ID.match(event_id):
                    return _error(400, "invalid", "Invalid resource id value.")
                if event_id in events:
                    return _error(409, "duplicate", "The requested identifier already exists.")
                if not event.get("start") or not event.get("end"):
                    return _error(400, "required", "Missing time range.")
                event = {k: v for k, v in event.items() if not k.startswith("_")}
                asked = event.pop("conferenceData", None)
                refused = self._meet_refused(data["calendars"][calendar], asked, query)
                if refused:
                    return refused
                event.update(
                    id=event_id,
                    status=event.get("status", "confirmed"),
                    sequence=0,
                    sendUpdates=query.get("sendUpdates"),
                )
                event.setdefault("kind", "calendar#event")
                event.setdefault("created", _rfc3339(dt.datetime.now(UTC)))
                event.setdefault("organizer", {"email": calendar, "self": True})
                if "attendees" in event:
                    event["attendees"] = _attendees(event["attendees"], [])
                events[event_id] = event
                self._meet(account, calendar, event, asked, query)
                self._touch(event)
                self._tell_guests(event, query, invited=self._emails(event))
                return 200, self._shown(event)
            if len(segments) == 5 and segments[4] == "move" and method == "POST":
                return self._move(account, calendar, events, segments[3], query)
            if len(segments) == 5 and segments[4] == "instances" and method == "GET":
                return self._list_instances(events, segments[3], query)
            if len(segments) != 4:
                return _error(404, "notFound", "Not Found")
            event = events.get(segments[3])
            if event is None and method in ("GET", "PATCH", "DELETE") and self._is_instance(events, segments[3]):
                if method == "GET":  # an instance is addressable by its id
                    master_id = segments[3].rpartition("_")[0]
                    found = [i for i in self._expansion(events, master_id, deleted=True) if i["id"] == segments[3]]
                    return 200, _public(found[0])
                event = self._exception(events, segments[3])  # its patch or delete changes it alone
            if method == "GET":
                return (200, self._shown(event)) if event else _error(404, "notFound", "Not Found")
            if method == "PATCH":
                if event is None:
                    return _error(404, "notFound", "Not Found")
                patch = json.loads(body or b"{}")
                patch.pop("id", None)
                patch = {k: v for k, v in patch.items() if not k.startswith("_")}
                before = {k: v for k, v in event.items() if k not in ("sendUpdates", "sequence")}
                was_live, old_guests = event["status"] != "cancelled", self._emails(event)
                if "attendees" in patch:  # the array replaces the old one; an address already there keeps its answer
                    patch["attendees"] = _attendees(patch["attendees"], event.get("attendees") or [])
                asked = patch.pop("conferenceData", None)
                refused = self._meet_refused(data["calendars"][calendar], asked, query)
                if refused:
                    return refused
                event.update(patch, sequence=event["sequence"] + 1, sendUpdates=query.get("sendUpdates"))
                self._meet(account, calendar, event, asked, query)
                self._touch(event)
                if event["status"] == "cancelled":
                    self._tell_guests(event, query, cancelled=old_guests if was_live else [])
                elif not was_live:  # restored: invited again
                    self._tell_guests(event, query, invited=self._emails(event))
                else:
                    changed = {k: v for k, v in event.items() if k not in ("sendUpdates", "sequence")} != before
                    now = self._emails(event)
                    self._tell_guests(
                        event,
                        query,
                        invited=[e for e in now if e not in old_guests],
                        cancelled=[e for e in old_guests if e not in now],
                        updated=[e for e in now if e in old_guests] if changed else [],
                    )
                return 200, self._shown(event)
            if method == "DELETE":
                if event is None:
                    return _error(404, "notFound", "Not Found")
                if event["status"] == "cancelled":
                    return _error(410, "deleted", "Resource has been deleted")
                event.update(status="cancelled")
                self._touch(event)
                self._tell_guests(event, query, cancelled=self._emails(event))
                return 204, None
        return _error(405, "methodNotAllowed", "Method not allowed")

    # --- guests ----------------------------------------------------------------------------------
    def attendees(self, event):
        return [
            {"email": a.get("email", ""), "response": a.get("responseStatus", "needsAction")}
            for a in event.get("attendees") or []
        ]

    @staticmethod
    def _emails(event):
        return [str(a.get("email", "")).lower() for a in event.get("attendees") or [] if not a.get("organizer")]

    def _tell_guests(self, event, query, invited=(), updated=(), cancelled=()):
        """Google writes to guests only when asked: `sendUpdates=all` (everyone) or `externalOnly`
        (guests who are not Google Calendar users: here, addresses that are no account of this fake).
        `none`, or no parameter, tells nobody."""
        send = query.get("sendUpdates")
        if send not in ("all", "externalOnly"):
            return
        organizer = str((event.get("organizer") or {}).get("email") or "")
        for kind, emails in (("invitation", invited), ("update", updated), ("cancellation", cancelled)):
            chosen = [e for e in emails if send == "all" or e not in self.accounts]
            self._tell(kind, chosen, event["id"], organizer)

    def _move(self, account, calendar, events, event_id, query):
        """events.move: the event leaves this calendar for `destination` (same id, guests and answers);
        guests hear of it only as `sendUpdates` says."""
        event = events.get(event_id)
        if event is None or event["status"] == "cancelled":
            return _error(404, "notFound", "Not Found")
        data = self.accounts[account]
        destination = self._calendar_id(account, query.get("destination", ""))
        if destination not in data["calendars"]:
            return _error(404, "notFound", "Not Found")
        if data["calendars"][destination]["accessRole"] not in ("owner", "writer"):
            return _error(403, "requiredAccessLevel", "You need to have writer access to this calendar.")
        if event_id in data["events"][destination]:
            return _error(409, "duplicate", "The requested identifier already exists.")
        del events[event_id]
        event["organizer"] = {"email": destination, "self": True}
        data["events"][destination][event_id] = event
        self._touch(event)
        self._tell_guests(event, query, updated=self._emails(event))
        return 200, _public(event)

    # --- conference data (Google Meet) -----------------------------------------------------------
    @staticmethod
    def _create_request(asked, query):
        """The createRequest of a write, when conference data counts (conferenceDataVersion=1)."""
        if str(query.get("conferenceDataVersion") or "0") != "1" or not isinstance(asked, dict):
            return None
        request = asked.get("createRequest")
        return request if isinstance(request, dict) else None

    def _meet_refused(self, calendar, asked, query):
        """Google's 400 for a conference type the calendar does not allow (the write is not made)."""
        request = self._create_request(asked, query)
        if request is None:
            return None
        kind = (request.get("conferenceSolutionKey") or {}).get("type")
        allowed = (calendar.get("conferenceProperties") or {}).get("allowedConferenceSolutionTypes") or []
        if kind not in allowed or not request.get("requestId"):
            return _error(400, "invalid", "Invalid conference type value.")
        return None

    def _meet(self, account, calendar, event, asked, query):
        """Make the Meet a createRequest asks for: one per requestId (a repeated one is ignored)."""
        request = self._create_request(asked, query)
        if request is None:
            return
        request_id = str(request["requestId"])
        if (event.get("_meet") or {}).get("requestId") == request_id:
            return
        letters = "".join(secrets.choice(string.ascii_lowercase) for _ in range(10))
        code = f"{letters[:3]}-{letters[3:7]}-{letters[7:]}"  # as Meet's codes look: abc-defg-hij
        meeting = {
            "requestId": request_id,
            "conferenceId": code,
            "uri": f"https://meet.google.com/{code}",
            "pending": self.pending_answers,
        }
        self.pending_answers = 0
        event["_meet"] = meeting
        event["conferenceData"] = self._conference_data(meeting, pending=False)
        self.meetings.append(
            {
                "account": account,
                "calendar": calendar,
                "event_id": event["id"],
                "request_id": request_id,
                "join_url": meeting["uri"],
            }
        )

    @staticmethod
    def _conference_data(meeting, pending):
        data: dict[str, Any] = {
            "createRequest": {
                "requestId": meeting["requestId"],
                "conferenceSolutionKey": {"type": MEET},
                "status": {"statusCode": "pending" if pending else "success"},
            },
            "conferenceSolution": {"key": {"type": MEET}, "name": "Google Meet"},
        }
        if not pending:
            data["conferenceId"] = meeting["conferenceId"]
            data["entryPoints"] = [
                {"entryPointType": "video", "uri": meeting["uri"], "label": meeting["uri"].removeprefix("https://")}
            ]
        return data

    def _shown(self, event):
        """An event answer: a meeting still pending shows as such (and counts down)."""
        shown = _public(event)
        meeting = event.get("_meet")
        if meeting and meeting["pending"] > 0:
            meeting["pending"] -= 1
            shown["conferenceData"] = self._conference_data(meeting, pending=True)
        return shown

    # --- events.list: window, paging, incremental sync -----------------------------------------
    def _list(self, calendar, events, query):
        sync = query.get("syncToken")
        if sync is not None:
            clash = [name for name in NOT_WITH_SYNC_TOKEN if name in query]
            if clash:
                return _error(400, "invalid", f"The '{clash[0]}' parameter cannot be used together with a syncToken.")
            if query.get("showDeleted") == "false":
                return _error(
                    400, "invalid", "Deleted events are always returned with a syncToken: showDeleted may not be false."
                )
        try:
            size = max(1, min(int(query.get("maxResults") or DEFAULT_PAGE), MAX_PAGE, self.max_page_size))
        except ValueError:
            return _error(400, "invalid", "Invalid value for maxResults.")
        time_min = time_max = None
        if query.get("timeMin") is not None:
            time_min = _parse_rfc3339(query["timeMin"])
            if time_min is None:
                return _error(400, "badRequest", "Bad Request")
        if query.get("timeMax") is not None:
            time_max = _parse_rfc3339(query["timeMax"])
            if time_max is None:
                return _error(400, "badRequest", "Bad Request")
        if time_min is not None and time_max is not None and time_max <= time_min:
            return _error(400, "timeRangeEmpty", "The specified time range is empty.")
        if query.get("singleEvents") == "true":
            events = _instances(events)
        since = None
        if sync is not None:
            token = decode_token(sync)
            if (
                not token
                or token.get("c") != calendar
                or token.get("e") != self.sync_epoch
                or not isinstance(token.get("n"), int)
            ):
                return _error(410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required.")
            if token.get("p") != _sync_parameters(query):
                return _error(
                    400,
                    "invalid",
                    "The parameters of an incremental read must match those of the initial synchronization.",
                )
            since = token["n"]
        # A page token pins the query it belongs to and the change counter when paging began.
        fingerprint = hashlib.sha256(
            json.dumps(
                sorted((k, v) for k, v in query.items() if k not in ("pageToken", "maxResults", "fields", "alt"))
            ).encode()
        ).hexdigest()[:16]
        offset, snapshot = 0, self.change_counter
        if query.get("pageToken"):
            page = decode_token(query["pageToken"])
            if (
                not page
                or page.get("q") != fingerprint
                or not isinstance(page.get("o"), int)
                or not isinstance(page.get("n"), int)
            ):
                return _error(400, "invalid", "Invalid page token value.")
            offset, snapshot = page["o"], page["n"]
        if since is not None:  # changes since the token, deletions included (minimal items)
            changed = sorted((e for e in events.values() if e.get("_seq", 0) > since), key=lambda e: e["_seq"])
            items = [
                {"kind": "calendar#event", "etag": e.get("etag", ""), "id": e["id"], "status": "cancelled"}
                if e["status"] == "cancelled"
                else _public(e)
                for e in changed
            ]
        else:
            show_deleted = query.get("showDeleted") == "true"
            items = [
                _public(e)
                for e in events.values()
                if (show_deleted or e["status"] != "cancelled")
                and ((time_min is None and time_max is None) or _overlaps(e, time_min, time_max))
            ]
        answer = {
            "kind": "calendar#events",
            "etag": f'"{snapshot}"',
            "summary": calendar,
            "updated": _rfc3339(dt.datetime.now(UTC)),
            "timeZone": "UTC",
            "accessRole": "owner",
            "defaultReminders": [],
            "items": items[offset : offset + size],
        }
        if offset + size < len(items):
            answer["nextPageToken"] = encode_token({"o": offset + size, "n": snapshot, "q": fingerprint})
        else:
            answer["nextSyncToken"] = encode_token(
                {
                    "c": calendar,
                    "n": snapshot,
                    "e": self.sync_epoch,
                    "p": _sync_parameters(query),
                    "r": secrets.token_hex(4),
                }
            )
        return 200, answer

    # --- a recurring event's instances (events.instances; instance ids) ------------------------
    def _expansion(self, events, master_id, deleted=False):
        """The instances of the recurring event `master_id`, its exceptions in place, by start."""
        items = [i for i in _instances(events).values() if i.get("recurringEventId") == master_id]
        items = [i for i in items if deleted or i.get("status") != "cancelled"]
        return sorted(items, key=lambda i: _span(i)[0] or dt.datetime.min.replace(tzinfo=UTC))

    def _is_instance(self, events, event_id):
        master_id, sep, _ = event_id.rpartition("_")
        master = events.get(master_id) if sep else None
        if master is None or not master.get("recurrence") or master.get("status") == "cancelled":
            return False  # a deleted recurring event's instances are gone with it
        return any(i["id"] == event_id for i in self._expansion(events, master_id, deleted=True))

    def _exception(self, events, instance_id):
        """The stored exception of an instance, made (as the instance is now) when it has none yet:
        a patch or a delete of an instance id changes that one instance only."""
        master_id = instance_id.rpartition("_")[0]
        instance = next(i for i in self._expansion(events, master_id, deleted=True) if i["id"] == instance_id)
        exception = {
            "kind": "calendar#event",
            "id": instance_id,
            "status": instance.get("status", "confirmed"),
            "recurringEventId": master_id,
            "originalStartTime": instance["originalStartTime"],
            "sequence": 0,
        }
        events[instance_id] = exception
        self._touch(exception)
        return exception

    def _list_instances(self, events, master_id, query):
        """events.instances: a recurring event's instances (cancelled ones with showDeleted), in a window."""
        master = events.get(master_id)
        if master is None:
            return _error(404, "notFound", "Not Found")
        time_min, time_max = _parse_rfc3339(query.get("timeMin") or ""), _parse_rfc3339(query.get("timeMax") or "")
        items = [
            _public(i)
            for i in self._expansion(events, master_id, deleted=query.get("showDeleted") == "true")
            if _overlaps(i, time_min, time_max)
        ]
        return 200, {"kind": "calendar#events", "items": items}

    # --- freeBusy.query ----------------------------------------------------------------------
    def _free_busy(self, account, body):
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "parseError", "Parse Error")
        if not isinstance(request, dict):
            return _error(400, "parseError", "Parse Error")
        if not request.get("timeMin") or not request.get("timeMax"):
            return _error(400, "required", "Missing time range.")
        time_min, time_max = _parse_rfc3339(request["timeMin"]), _parse_rfc3339(request["timeMax"])
        if time_min is None or time_max is None:
            return _error(400, "badRequest", "Bad Request")
        if time_max <= time_min:
            return _error(400, "timeRangeEmpty", "The specified time range is empty.")
        calendars = {}
        with self.lock:
            data = self.accounts[account]
            for entry in request.get("items") or []:
                requested = str((entry or {}).get("id", ""))
                cal = self._calendar_id(account, requested)
                if cal not in data["calendars"]:
                    calendars[requested] = {"errors": [{"domain": "global", "reason": "notFound"}], "busy": []}
                    continue
                spans = []
                for event in data["events"].get(cal, {}).values():
                    if (
                        event["status"] == "cancelled"
                        or event.get("transparency") == "transparent"
                        or not _overlaps(event, time_min, time_max)
                    ):
                        continue
                    start, end = _span(event)
                    spans.append([max(start, time_min), min(end, time_max)])
                merged: list[list] = []
                for start, end in sorted(spans):
                    if merged and start <= merged[-1][1]:
                        merged[-1][1] = max(merged[-1][1], end)
                    else:
                        merged.append([start, end])
                calendars[requested] = {
                    "busy": [
                        {"start": s.strftime("%Y-%m-%dT%H:%M:%SZ"), "end": e.strftime("%Y-%m-%dT%H:%M:%SZ")}
                        for s, e in merged
                    ]
                }
        return 200, {
            "kind": "calendar#freeBusy",
            "timeMin": _rfc3339(time_min),
            "timeMax": _rfc3339(time_max),
            "calendars": calendars,
        }

    # --- push channels ---------------------------------------------------------------------------
    def _watch(self, account, calendar, requested_id, body):
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "parseError", "Parse Error")
        if not isinstance(request, dict):
            return _error(400, "parseError", "Parse Error")
        channel_id, address = str(request.get("id") or ""), str(request.get("address") or "")
        if not channel_id:
            return _error(400, "required", "Required: channel id.")
        if not CHANNEL_ID.match(channel_id):
            return _error(400, "invalid", "Invalid channel id.")
        if str(request.get("type") or "").lower() not in ("web_hook", "webhook"):
            return _error(400, "invalid", "Invalid channel type: only web_hook is supported.")
        parts = urllib.parse.urlsplit(address)
        if (
            not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK))
            or not parts.hostname
        ):
            return _error(400, "push.webhookUrlNotHttps", "WebHook callback must be HTTPS: " + address, domain="push")
        if len(str(request.get("token") or "")) > 256:
            return _error(400, "invalid", "Channel token too long.")
        if channel_id in self.channels:
            return _error(400, "channelIdNotUnique", "Channel id not unique: " + channel_id, domain="push")
        now_ms = int(time.time() * 1000)
        try:
            ttl = int((request.get("params") or {}).get("ttl") or CHANNEL_TTL)
            expiration = int(request.get("expiration") or now_ms + ttl * 1000)
        except (TypeError, ValueError):
            return _error(400, "invalid", "Invalid expiration.")
        expiration = min(max(expiration, now_ms), now_ms + CHANNEL_MAX_TTL * 1000)
        resource_id = self._resource_ids.setdefault((account, calendar), secrets.token_urlsafe(20))
        resource_uri = f"{self.url}calendar/v3/calendars/{urllib.parse.quote(requested_id, safe='')}/events?alt=json"
        self.channels[channel_id] = {
            "id": channel_id,
            "address": address,
            "token": request.get("token"),
            "resourceId": resource_id,
            "resourceUri": resource_uri,
            "expiration": str(expiration),
            "stopped": False,
            "account": account,
            "calendar_id": calendar,
            "message_number": 0,
        }
        answer = {
            "kind": "api#channel",
            "id": channel_id,
            "resourceId": resource_id,
            "resourceUri": resource_uri,
            "expiration": str(expiration),
        }
        if request.get("token"):
            answer["token"] = request["token"]
        return 200, answer

    def _stop_channel(self, body):
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "parseError", "Parse Error")
        request = request if isinstance(request, dict) else {}
        with self.lock:
            channel = self.channels.get(str(request.get("id") or ""))
            if channel is None or channel["stopped"] or channel["resourceId"] != request.get("resourceId"):
                return _error(404, "notFound", f"Channel '{request.get('id')}' not found for project.")
            channel["stopped"] = True
        return 204, None
