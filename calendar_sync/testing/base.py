"""What both fakes share, and the one vocabulary tests speak to either of them.

A fake holds accounts (each with calendars and events), OAuth codes, grants and access tokens,
injected faults, and a log of the calendar API calls it answered. The provider-specific parts
(wire formats, token rules, cursors) live in `fake_google.py` and `fake_microsoft.py`; the names a
test uses are the same on both:

    fake.add_event(account, start, end, title="Standup", calendar=None, busy=True) -> event id
    fake.move_event / update_event / set_busy / delete_event(account, event_id, ...)
    fake.add_recurring_event(account, start, end, rule, title="Busy", calendar=None, time_zone="UTC") -> master id
    fake.change_occurrence(account, event_id, original_start, start=None, end=None, cancel=False) -> its id
    fake.move_event / update_event / set_busy / delete_event(account, event_id, ...)  (as the member: a new
                                             etag / changeKey, in the next incremental read)
    fake.respond(account, event_id, email, response) -> a guest answers ("accepted", "declined", ...)
    fake.events(account=None, calendar=None) -> {id: event as the service returns it}
    fake.agenda(account=None, calendar=None) -> [{"id", "title", "start", "end", "busy"}] (either fake)
    fake.calls(account=None)                 -> calendar API calls answered (batch parts each count)
    fake.max_calls_in_window(account, seconds) / max_in_flight(account=None) -> the busiest window; most requests at once
    fake.api_requests(account=None)          -> HTTP requests that reached the calendar API (a batch once)
    fake.calendar_id(account=None, name=None) -> the id of a calendar by name (None: the default one)
    fake.notifications(email=None)           -> messages the service sent guests, oldest first:
                                                [{"email", "kind": "invitation"|"update"|"cancellation", "event_id"}]
    fake.attendees(event)                    -> [{"email", "response"}] of an event of `events()` (either fake)
    fake.inject(status, times=1, path=None, retry_after=None, code=None, delay=0.0,
                method=None, account=None, domain=None, message=None) / clear_faults()
    fake.latency = 0.15                      -> every request answered 150 ms late (the constructor's `latency=`)
    fake.expire_cursors() / expire_access_tokens() / revoke_grants(account)
    fake.notify(channel_id, event_id=None, secret=None) / push_channels(account=None) / drop_channel(id)
    fake.auto_notify = True                  -> the person's changes above notify the calendar's live channels
    fake.consent(authorization_url, account=None, allow=True) -> the redirect Location
    fake.conferences(account=None)           -> video meetings made: [{"account", "event_id", "join_url", "live"}]
    fake.expand(account, event_id, calendar=None) -> [(start, end, title)] of a recurring event's
                                                     instances as they are now (exceptions applied,
                                                     cancelled ones left out), aware UTC, by start
    fake.lose_response(times=1)             -> the next event creates are made, their answers lost
    fake.reset() / reset_log() / settings() / env()

`GET /` on either fake is an HTML page of its accounts, calendars and events, for a person trying
the sandbox (`python -m calendar_sync.testing`).
"""

import datetime as dt
import html
import itertools
import re
import threading
import urllib.parse
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests
from dateutil import rrule

from .server import LoopbackServer


class FakeService(LoopbackServer):
    """The state and controls both fakes share. Subclasses set the class attributes and implement
    the provider-specific methods (`_init_state`, `add_account`, the event controls, `_agenda`)."""

    #: "google" or "microsoft": the provider name the app uses.
    provider = ""
    #: A person's mailbox and a room's shared calendar: both offered on the consent page.
    default_account = ""
    room_account = ""
    #: Path prefix of the calendar API: what `calls()` counts and `inject()` hits by default.
    api_prefix = "/"
    title = "Fake"
    #: Seconds each HTTP request waits before it is answered, as a real service's 100–300 ms would: the
    #: constructor's `latency`, restored by `reset()`; assign `fake.latency` to change it while serving.
    #: Requests are served concurrently (a thread each), so waiting callers overlap as they would.
    latency: float
    initial_latency = 0.0
    lock: threading.RLock  # made by the subclass before its state
    accounts: dict[str, Any]
    call_log: list[dict[str, Any]]
    sent_messages: list[dict[str, str]]
    http_requests: list[dict[str, Any]]
    faults: list[dict[str, Any]]
    access_tokens: dict[str, dict[str, Any]]
    codes: dict[str, dict[str, Any]]
    grants: dict[str, dict[str, Any]]

    def _init_common(self) -> None:
        """Accounts, grants, tokens, faults and logs: the state every reset starts from (the
        subclass made `self.lock`)."""
        self.accounts = {}
        self.codes = {}
        self.access_tokens = {}  # token -> {"account", "expires", ...}
        self.grants = {}  # live refresh token -> {"account", "scope", ...}
        self.faults = []
        self.call_log = []  # one dict per logical API request: time, method, path, account, batch, ...
        self.http_requests = []  # one dict per HTTP request received
        self.latency = self.initial_latency
        self.auto_notify = False  # True: what a person does in a calendar notifies its live channels at once
        self.granted_scope = None  # override the scope a consent grants
        self.sent_messages = []  # what the service e-mailed attendees: {"email", "kind", "event_id"}
        self.add_account(self.default_account)
        self.add_account(self.room_account)

    def _init_state(self) -> None:
        """Everything a reset forgets: `_init_common()` plus the provider's own state."""
        raise NotImplementedError

    def add_account(self, email: str, calendars: Any = None) -> str:
        """A person's (or a room's) account with the service's default calendars."""
        raise NotImplementedError

    # --- settings ----------------------------------------------------------------------------
    def settings(self) -> dict[str, str]:
        """CALENDAR_SYNC entries that point the app at this server."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The same, as the host project's environment variables (for worker processes)."""
        return dict(self.settings())

    # --- reset and logs ----------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the default and room accounts; forget grants, events, faults and logged calls."""
        with self.lock:
            self._init_state()

    def reset_log(self) -> None:
        """Forget logged calls and HTTP requests (state stays)."""
        with self.lock:
            self.call_log.clear()
            self.http_requests.clear()

    def calls(self, account: str | None = None) -> list[dict[str, Any]]:
        """Calendar API calls answered (batch parts each count), optionally for one account."""
        with self.lock:
            return [
                c
                for c in self.call_log
                if c["path"].startswith(self.api_prefix) and (account is None or c["account"] == account)
            ]

    def max_calls_in_window(self, account: str | None, seconds: float) -> int:
        """The most calendar API calls of `account` inside any `seconds`-long window."""
        times = sorted(c["time"] for c in self.calls(account))
        best, start = 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    def max_in_flight(self, account: str | None = None) -> int:
        """The most calendar API HTTP requests of `account` this server was answering at once."""
        with self.lock:
            spans = [
                (r["time"], r.get("end") or float("inf"))
                for r in self.http_requests
                if r["path"].startswith(self.api_prefix) and (account is None or r.get("account") == account)
            ]
        edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
        best = current = 0
        for _, step in edges:  # at equal times an end sorts before a start: touching is not overlapping
            current += step
            best = max(best, current)
        return best

    # --- what guests were sent ----------------------------------------------------------------
    def notifications(self, email: str | None = None) -> list[dict[str, Any]]:
        """The messages the service sent an event's attendees, oldest first (of one guest when `email`
        is given): [{"email", "kind", "event_id"}], `kind` one of "invitation", "update", "cancellation".
        Each fake sends them when its service does (see `_tell`); `reset()` forgets them."""
        with self.lock:
            return [dict(m) for m in self.sent_messages if email is None or m["email"] == email.lower()]

    def attendees(self, event: dict[str, Any]) -> list[dict[str, str]]:
        """An event's attendees (as `events()` returns it) in either fake's terms: [{"email", "response"}]."""
        raise NotImplementedError

    def _tell(self, kind: str, emails: Any, event_id: str, organizer: str = "") -> None:
        """Send `kind` to each of `emails` (never to the organizer themself)."""
        with self.lock:
            for address in emails:
                if address and address.lower() != organizer.lower():
                    self.sent_messages.append({"email": address.lower(), "kind": kind, "event_id": event_id})

    # --- faults ------------------------------------------------------------------------------
    def inject(
        self,
        status: int,
        times: int = 1,
        path: str | re.Pattern[str] | None = None,
        retry_after: int | None = None,
        code: str | None = None,
        delay: float = 0.0,
        batch_part: bool = False,
        method: str | None = None,
        account: str | None = None,
        domain: str | None = None,
        message: str | None = None,
    ) -> None:
        """The next `times` requests whose path starts with `path` (default: the calendar API; or a
        compiled pattern the whole path must match) get `status` instead, with the service's error
        `code` (Google's reason, Graph's code) and a `Retry-After` when given. `batch_part=True`
        (Microsoft) hits single `$batch` parts instead. `method` and `account` narrow it to requests
        with that HTTP method and of that account (Google: batch parts too); Google's answer carries
        `domain` and `message` when given."""
        with self.lock:
            self.faults.append(
                {
                    "status": status,
                    "times": times,
                    "path": path or self.api_prefix,
                    "retry_after": retry_after,
                    "code": code,
                    "delay": delay,
                    "batch_part": batch_part,
                    "method": method,
                    "account": account,
                    "domain": domain,
                    "message": message,
                }
            )

    def clear_faults(self) -> None:
        """Forget injected faults (those with `times` left stop at once)."""
        with self.lock:
            self.faults.clear()

    def _take_fault(
        self, path: str, batch_part: bool | None = None, method: str | None = None, account: str | None = None
    ) -> dict[str, Any] | None:
        with self.lock:
            for fault in self.faults:
                where = fault["path"]
                if (
                    fault["times"] > 0
                    and (batch_part is None or fault["batch_part"] == batch_part)
                    and (where.fullmatch(path) if isinstance(where, re.Pattern) else path.startswith(where))
                    and fault.get("method") in (None, method)
                    and fault.get("account") in (None, account)
                ):
                    fault["times"] -= 1
                    return fault
        return None

    # --- grants and tokens ---------------------------------------------------------------------
    def expire_access_tokens(self) -> None:
        """Every access token issued so far is now expired (the next call answers 401)."""
        with self.lock:
            for info in self.access_tokens.values():
                info["expires"] = 0

    def revoke_grants(self, account: str) -> None:
        """The member revoked the app: refresh tokens answer `invalid_grant`, access tokens 401."""
        raise NotImplementedError

    def expire_cursors(self) -> None:
        """Every outstanding incremental-read cursor (sync token, delta link) now answers 410."""
        raise NotImplementedError

    # --- a person in the calendar's own UI -------------------------------------------------------
    def calendar_id(self, account: str | None = None, name: str | None = None) -> str:
        """Id of the account's calendar called `name` (the default calendar when None)."""
        raise NotImplementedError

    def add_event(
        self, account: str, start: Any, end: Any, title: str = "Busy", calendar: str | None = None, busy: bool = True
    ) -> str:
        """Create an event as a person would (aware datetimes, or dates for all day); its id."""
        raise NotImplementedError

    def move_event(self, account: str, event_id: str, start: Any, end: Any, calendar: str | None = None) -> None:
        raise NotImplementedError

    def update_event(self, account: str, event_id: str, calendar: str | None = None, **fields: Any) -> None:
        """Set fields of the service's own event shape (e.g. Google's `transparency`, Graph's `showAs`)."""
        raise NotImplementedError

    def delete_event(self, account: str, event_id: str, calendar: str | None = None) -> None:
        raise NotImplementedError

    def respond(self, account: str, event_id: str, email: str, response: str, calendar: str | None = None) -> None:
        """A guest of `account`'s event answers: "needsAction", "accepted", "declined" or "tentative"
        (in the service's own words on the event); the event changes as any edit does."""
        raise NotImplementedError

    def events(self, account: str | None = None, calendar: str | None = None) -> dict[str, dict[str, Any]]:
        """{id: event} of one calendar (the default account's default calendar by default), as the service returns it."""
        raise NotImplementedError

    def _changed(self, account: str, calendar: str, event_id: str) -> None:
        """A person changed an event of `account`'s `calendar`: with `auto_notify`, every live channel
        on that calendar is notified, as the service does (after the change, outside the lock: the
        receiver reads the calendar back at once)."""
        if not self.auto_notify:
            return
        for channel in self.push_channels(account).values():
            if not channel["stopped"] and channel["calendar"] == calendar:
                self.notify(channel["id"], event_id)

    def notify(self, channel_id: str, event_id: str | None = None, secret: str | None = None) -> Any:
        """Deliver a change notification for a channel the way the service does; the receiver's
        response (None when the channel is stopped). `secret` forges the channel's secret."""
        raise NotImplementedError

    def push_channels(self, account: str | None = None) -> dict[str, dict[str, Any]]:
        """Channels made, stopped ones too: {id: {"id", "account", "calendar", "address", "secret", ...}}."""
        raise NotImplementedError

    def drop_channel(self, channel_id: str) -> None:
        """The service ends a channel on its own."""
        raise NotImplementedError

    def api_requests(self, account: str | None = None) -> int:
        raise NotImplementedError

    def expand(
        self, account: str | None, event_id: str, calendar: str | None = None
    ) -> list[tuple[dt.datetime, dt.datetime, str]]:
        """A recurring event's instances as the service shows them now: [(start, end, title)] by start."""
        raise NotImplementedError

    def conferences(self, account: str | None = None) -> list[dict[str, Any]]:
        """Video meetings the service made (Meet, Teams), oldest first: {"account", "event_id",
        "join_url", "live"}; `live` while the event that has it exists."""
        raise NotImplementedError

    def set_busy(self, account: str, event_id: str, busy: bool, calendar: str | None = None) -> None:
        """Mark an event busy or free, as the member would."""
        raise NotImplementedError

    def agenda(self, account: str | None = None, calendar: str | None = None) -> list[dict[str, Any]]:
        """The events of one calendar (the account's default) in either fake's terms, by start:
        [{"id", "title", "start", "end", "busy"}] with aware UTC datetimes; deleted ones left out."""
        with self.lock:
            return sorted(
                self._agenda(account or self.default_account, calendar),
                key=lambda e: (e["start"] is None, e["start"] or 0, e["id"]),
            )

    def _agenda(self, account: str, calendar: str | None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _calendars(self, account: str) -> list[tuple[str, str]]:
        """[(calendar id, name)] of an account, the default first."""
        raise NotImplementedError

    # --- consent -----------------------------------------------------------------------------
    def consent(self, authorization_url: str, account: str | None = None, allow: bool = True) -> str:
        """Act as a person on the consent page: load it, choose `account` (the default one when
        None), press Allow (or Deny); return the redirect Location."""
        page = requests.get(authorization_url, timeout=10)
        page.raise_for_status()
        form = re.search(r'<form method="post" action="([^"]+)"', page.text)
        select = re.search(r'<select name="([^"]+)"', page.text)
        assert form and select, page.text
        action, account_field = html.unescape(form.group(1)), html.unescape(select.group(1))
        fields = {
            html.unescape(k): html.unescape(v)
            for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)
        }
        response = requests.post(
            urllib.parse.urljoin(authorization_url, action),
            data={**fields, account_field: account or self.default_account, "decision": "allow" if allow else "deny"},
            allow_redirects=False,
            timeout=10,
        )
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    def _consent_form(
        self, action: str, query: dict[str, str], account_field: str, allow: str = "Allow", deny: str = "Deny"
    ) -> str:
        """The consent form: the request's parameters kept hidden, a choice of accounts (a person's
        and a room's), Allow and Deny."""
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in query.items()
        )
        with self.lock:
            accounts = list(self.accounts)
        options = "".join(
            f'<option value="{html.escape(a)}">{html.escape(a)}{" (room)" if a == self.room_account else ""}</option>'
            for a in accounts
        )
        return (
            f'<form method="post" action="{html.escape(action)}">{hidden}'
            f'<label>Account <select name="{html.escape(account_field)}">{options}</select></label> '
            f'<button name="decision" value="allow" id="allow">{html.escape(allow)}</button> '
            f'<button name="decision" value="deny" id="deny">{html.escape(deny)}</button></form>'
        )

    # --- the page at / -----------------------------------------------------------------------
    def home_page(self) -> tuple[int, tuple[str, bytes], dict[str, str]]:
        """(200, ("text/html", page), {}): every account, its calendars and their events, escaped."""
        parts = [
            f"<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=5><title>{html.escape(self.title)}</title>",
            f"<h1>{html.escape(self.title)}</h1><p>What reached each calendar (this page reloads every 5 seconds). "
            f"Calendar API calls answered: {len(self.calls())}."
            + (f" Each request is answered {self.latency * 1000:.0f} ms late." if self.latency else "")
            + "</p>",
        ]
        with self.lock:
            accounts = list(self.accounts)
            for account in accounts:
                parts.append(f"<h2>{html.escape(account)}{' (room)' if account == self.room_account else ''}</h2>")
                for cal_id, name in self._calendars(account):
                    rows = self.agenda(account, cal_id)
                    parts.append(f"<h3>{html.escape(name)} <small>{html.escape(cal_id)}</small></h3>")
                    if not rows:
                        parts.append("<p>No events.</p>")
                        continue
                    parts.append(
                        "<table><tr><th>Start (UTC)</th><th>End (UTC)</th><th>Title</th><th>Shows as</th><th>Id</th></tr>"
                    )
                    for row in rows:
                        start = row["start"].strftime("%Y-%m-%d %H:%M") if row["start"] else ""
                        end = row["end"].strftime("%Y-%m-%d %H:%M") if row["end"] else ""
                        parts.append(
                            f"<tr><td>{start}</td><td>{end}</td><td>{html.escape(row['title'])}</td>"
                            f"<td>{'busy' if row['busy'] else 'free'}</td><td>{html.escape(row['id'])}</td></tr>"
                        )
                    parts.append("</table>")
        return 200, ("text/html; charset=utf-8", "".join(parts).encode()), {}


#: The most occurrences a fake expands of one recurring event (a rule with no end stops here).
MAX_EXPANDED = 1000


def _expand_rrule(
    recurrence: list[str], start: dt.datetime, end: dt.datetime, time_zone: str = "UTC"
) -> list[tuple[dt.datetime, dt.datetime]]:
    """[(start, end)] in UTC of each occurrence of a recurring event whose first one is `start`–`end`.

    `recurrence` holds RFC 5545 lines ("RRULE:…", "EXDATE…", "RDATE…"; Google's `recurrence` field)
    read in `time_zone` as wall-clock time, as both services do: 09:00 stays 09:00 across
    daylight-saving changes. Each occurrence lasts as long as the first (exactly)."""
    try:
        zone: dt.tzinfo = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = dt.UTC
    first = start.astimezone(zone)
    rules = rrule.rrulestr("\n".join(recurrence), dtstart=first, forceset=True, unfold=True)
    length = end - start
    return [
        (moment.astimezone(dt.UTC), moment.astimezone(dt.UTC) + length)
        for moment in itertools.islice(rules, MAX_EXPANDED)
    ]
