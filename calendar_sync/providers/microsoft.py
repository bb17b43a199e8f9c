"""Microsoft 365 / Outlook: identity platform v2.0 (authorization code + PKCE) and Graph v1.0.

Plain `requests`, no SDK: every URL comes from settings and every failure is classified once,
here. Events carry our key in a single-value extended property (so we can always find them)
and, on create, as `transactionId` (so Graph de-duplicates a create retried after a lost answer).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests
from django.core import checks
from tzlocal.windows_tz import tz_win, win_tz  # CLDR's IANA <-> Windows zone names

from ..conf import get_setting
from ..exceptions import AuthorizationLost, CalendarSyncError, PermanentError, TransientError
from ..types import Conference, Guest
from . import http as shared
from .base import BaseProvider, BusyBlock, Calendar, Changes, Notification, Operation, Outcome, TokenSet, retry_after

_sessions = shared.PerThread(requests.Session)

logger = logging.getLogger(__name__)

GRAPH_SCOPE_PREFIX = "https://graph.microsoft.com/"
PROP_ID = "String {3c9e58a4-7f21-4d6b-9b0e-5a1d2c8f6e47} Name calendar_sync_key"
BATCH_LIMIT = 20  # Graph's documented maximum requests per $batch
THROTTLE_ROUNDS = 3
MAX_ROUNDS = 8  # throttle retries plus the repair chain lookup -> patch -> create
# Refused refreshes only the member can fix, by signing in again: the grant is gone (`invalid_grant`:
# AADSTS70000, 50173, 700082...), MFA or consent is due (`interaction_required`: AADSTS50076,
# `consent_required`: 65001, `login_required`), the grant no longer covers our scopes
# (`invalid_scope`: AADSTS70011, 650053), or their tenant removed or disabled the app
# (`unauthorized_client`: AADSTS700016, 7000112). Not `invalid_client` (AADSTS7000215, 7000222):
# our own secret is wrong or expired, which no member can fix; it stays a PermanentError.
REAUTH_ERRORS = frozenset(
    {
        "invalid_grant",
        "interaction_required",
        "consent_required",
        "login_required",
        "invalid_scope",
        "unauthorized_client",
    }
)
VIEW_PAGE_SIZE = 100  # calendarView $top
DELTA_PAGE_SIZE = 100  # delta Prefer: odata.maxpagesize
VIEW_SELECT = "id,subject,start,end,showAs,isCancelled,isAllDay,seriesMasterId"
NOT_BUSY = {"free", "workingelsewhere"}
# An attendee's `status.response` in the words Google and our hosts use.
RESPONSES = {"accepted": "accepted", "declined": "declined", "tentativelyAccepted": "tentative"}
EVENT_SELECT = "id,subject,start,end,showAs,isCancelled,changeKey,attendees"
# 410 is Graph's answer to an expired delta token; these codes mean the same on any 4xx.
SYNC_RESET_CODES = {
    "syncstatenotfound",
    "syncstateinvalid",
    "fullsyncrequired",
    "resyncrequired",
    "errorinvalidsyncstatedata",
}
UTC = dt.UTC
_aware, _iso = shared.aware, shared.bound
FRACTION = re.compile(r"(\.\d{6})\d+")
SUBSCRIPTION_MINUTES = 4200  # Graph allows at most 4230 minutes for Outlook event subscriptions
SUBSCRIPTION_CHANGES = "created,updated,deleted"
MAX_VALIDATION_TOKEN = 2048  # the webhook handshake's validationToken echo: anything longer is refused
TEAMS = "teamsForBusiness"  # the onlineMeetingProvider of Microsoft Teams (work or school accounts only)


def conference_of(operation: Operation, body: Any) -> Conference | None:
    """The Teams meeting an event answer shows, as the operation asked for one (Outcome.conference)."""
    wanted = operation.conference
    if wanted is None or wanted.status == "failed" or not isinstance(body, dict):
        return wanted
    meeting = body.get("onlineMeeting")
    join_url = str(meeting.get("joinUrl") or "") if isinstance(meeting, dict) else ""
    if body.get("isOnlineMeeting") and join_url:
        return Conference("teams", join_url, "ready")
    if wanted.status == "none":  # asked, and Outlook made none: the calendar does not offer Teams
        return Conference("teams", "", "failed", f"Outlook made no Teams meeting. {MicrosoftProvider.conference_note}")
    return wanted


def classify(status: int, headers: Any, body: Any) -> CalendarSyncError | None:
    """A Graph answer as our error hierarchy (None for success). Graph's code, never a token."""
    if 200 <= status < 300:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = str(error.get("code") or "") if isinstance(error, dict) else ""
    message = str(error.get("message") or "")[:200] if isinstance(error, dict) else ""
    text = f"Microsoft Graph {status} {code}: {message}".strip()
    if status == 401:
        return AuthorizationLost(text, status=status, code="unauthorized")
    if status == 429 or status >= 500:
        wait = retry_after(_header(headers, "Retry-After"))
        return TransientError(text, status=status, code=code[:64] or "unavailable", retry_after=wait)
    if status == 404:
        return PermanentError(text, status=status, code="not_found")
    if status == 410:
        return PermanentError(text, status=status, code="gone")
    return PermanentError(text, status=status, code=code[:64] or "rejected")


def _zone(name: str) -> dt.tzinfo:
    if not name or name.upper() in ("UTC", "ETC/UTC", "GMT"):
        return UTC
    try:
        return ZoneInfo(win_tz.get(name) or name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _moment(value: Any) -> dt.datetime | None:
    """A Graph dateTimeTimeZone as aware UTC (dateTime is local to timeZone; 7 fractional digits)."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        return None
    try:
        parsed = dt.datetime.fromisoformat(FRACTION.sub(r"\1", str(value["dateTime"])))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_zone(str(value.get("timeZone") or "UTC")))
    return parsed.astimezone(UTC)


def _is_ours(item: dict[str, Any]) -> bool:
    """Our extended property only: any client may set a transactionId, so it proves nothing (delta
    reads carry no extended properties; the caller also knows our events by the ids it stored)."""
    wanted = " ".join(PROP_ID.lower().split())
    return any(
        isinstance(prop, dict) and " ".join(str(prop.get("id", "")).lower().split()) == wanted and prop.get("value")
        for prop in item.get("singleValueExtendedProperties") or []
    )


def _graph_zone(name: str, *instants: dt.datetime) -> tuple[str, dt.tzinfo]:
    """(Windows zone name, IANA zone) to write `instants` as local times in, or ("UTC", UTC).

    Graph reads a local time by the Windows zone's rules, which are not always the tzdata rules
    of the IANA zone mapped to it (America/Scoresbysund, Antarctica/Casey...). The Windows zone's
    rules are those of its CLDR territory-001 zone (`win_tz`); where that zone reads one of the
    local times as another instant, or as two (an ambiguous or skipped hour), we send UTC.
    """
    windows = tz_win.get(name)
    if not windows or windows == "UTC":
        return "UTC", UTC
    try:
        zone, rules = ZoneInfo(name), ZoneInfo(win_tz[windows])
    except (KeyError, ZoneInfoNotFoundError, ValueError):
        return "UTC", UTC
    for instant in instants:
        local = instant.astimezone(zone).replace(tzinfo=None)
        if any(local.replace(tzinfo=rules, fold=fold).astimezone(UTC) != instant for fold in (0, 1)):
            return "UTC", UTC
    return windows, zone


def _owner_address(item: dict[str, Any]) -> str:
    """The e-mail address Graph names as a calendar's owner ("" when it names none)."""
    owner = item.get("owner")
    return str(owner.get("address") or "") if isinstance(owner, dict) else ""


def _guests(item: dict[str, Any]) -> tuple[Guest, ...]:
    """The attendees' answers (`status.response`) in Google's words; the organizer and rooms left out."""
    guests = []
    for attendee in item.get("attendees") or []:
        if not isinstance(attendee, dict) or str(attendee.get("type") or "").lower() == "resource":
            continue
        mailbox, status = attendee.get("emailAddress"), attendee.get("status")
        address = mailbox.get("address") if isinstance(mailbox, dict) else ""
        answer = str((status.get("response") if isinstance(status, dict) else None) or "none")
        if not address or answer == "organizer":
            continue
        guests.append(Guest(str(address).lower(), RESPONSES.get(answer, "needsAction")))
    return tuple(guests)


def _block(item: dict[str, Any], busy_only: bool = True) -> BusyBlock | None:
    """A Graph event as a BusyBlock, or None when it blocks no time (cancelled, free, working elsewhere;
    with `busy_only` False, only when cancelled or without a span)."""
    if item.get("isCancelled") or (busy_only and str(item.get("showAs") or "").lower() in NOT_BUSY):
        return None
    start, end = _moment(item.get("start")), _moment(item.get("end"))
    if start is None or end is None or end <= start:
        return None
    return BusyBlock(
        start=start,
        end=end,
        remote_id=str(item.get("id") or ""),
        summary=str(item.get("subject") or ""),
        ours=_is_ours(item),
        series_id=str(item.get("seriesMasterId") or ""),  # an occurrence: ours when its series master is
        version=str(item.get("changeKey") or ""),
        guests=_guests(item),
    )


def _throttled(status: int, headers: Any, body: Any) -> None:
    """Note an answer (or a batch part's) for the quota governor: Retry-After, MailboxConcurrency."""
    error = body.get("error") if isinstance(body, dict) else None
    code = str(error.get("code") or "") if isinstance(error, dict) else ""
    shared.answered(status, retry_after(_header(headers, "Retry-After")), code)


def _query(params: list[tuple[str, str]]) -> str:
    return "&".join(f"{key}={quote(value, safe='')}" for key, value in params)


def _header(headers: Any, name: str) -> Any:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


@dataclass
class _Step:
    """Where one operation stands: the request to send next and what we learnt so far."""

    kind: str  # create | patch | delete | find (look the event up by its extended property)
    remote_id: str | None = None
    transaction_id: str = ""
    gone_id: str | None = None  # an id that answered 404: a create answering with it is a ghost
    looked_up: bool = False
    throttled: int = 0
    error: CalendarSyncError | None = None


# --- recurring events (one per series, design decision 22) ---------------------------------------
GRAPH_DAYS = {
    "MO": "monday",
    "TU": "tuesday",
    "WE": "wednesday",
    "TH": "thursday",
    "FR": "friday",
    "SA": "saturday",
    "SU": "sunday",
}
GRAPH_INDEX = {1: "first", 2: "second", 3: "third", 4: "fourth", -1: "last"}
INSTANCE_WINDOW = dt.timedelta(days=8)  # around an occurrence's original start, to find its instance


def _unsupported(rule: str) -> PermanentError:
    return PermanentError(f"Outlook cannot repeat by {rule[:100]!r}.", code="unsupported_rule")


def _pattern(rule: str, local_start: dt.datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """An RFC 5545 RRULE (FREQ DAILY/WEEKLY/MONTHLY, INTERVAL, BYDAY, BYMONTHDAY, COUNT/UNTIL) as Graph's
    recurrence pattern and the range's end; PermanentError for what Graph cannot say."""
    parts = dict(p.split("=", 1) for p in rule.upper().removeprefix("RRULE:").split(";") if "=" in p)
    interval = int(parts.get("INTERVAL") or 1)
    days = [d for d in parts.get("BYDAY", "").split(",") if d]
    weekday = list(GRAPH_DAYS.values())[local_start.weekday()]
    freq = parts.get("FREQ")
    if freq == "DAILY" and not days and "BYMONTHDAY" not in parts:
        pattern: dict[str, Any] = {"type": "daily", "interval": interval}
    elif freq == "WEEKLY" and "BYMONTHDAY" not in parts and all(d in GRAPH_DAYS for d in days):
        wanted = [GRAPH_DAYS[d] for d in days] or [weekday]
        pattern = {"type": "weekly", "interval": interval, "daysOfWeek": wanted, "firstDayOfWeek": "monday"}
    elif freq == "MONTHLY" and not days and "," not in parts.get("BYMONTHDAY", ""):
        day = int(parts.get("BYMONTHDAY") or local_start.day)
        if day < 1:
            raise _unsupported(rule)
        pattern = {"type": "absoluteMonthly", "interval": interval, "dayOfMonth": day}
    elif freq == "MONTHLY" and len(days) == 1 and "BYMONTHDAY" not in parts:
        match = re.fullmatch(r"([+-]?\d)([A-Z]{2})", days[0])
        if not match or int(match[1]) not in GRAPH_INDEX or match[2] not in GRAPH_DAYS:
            raise _unsupported(rule)
        pattern = {
            "type": "relativeMonthly",
            "interval": interval,
            "daysOfWeek": [GRAPH_DAYS[match[2]]],
            "index": GRAPH_INDEX[int(match[1])],
        }
    else:
        raise _unsupported(rule)
    if "COUNT" in parts:
        return pattern, {"type": "numbered", "numberOfOccurrences": int(parts["COUNT"])}
    if "UNTIL" in parts:
        until = parts["UNTIL"]
        if until.endswith("Z"):
            moment = dt.datetime.strptime(until[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
            last = moment.astimezone(local_start.tzinfo).date()
        else:
            last = dt.datetime.strptime(until[:8], "%Y%m%d").date()
        return pattern, {"type": "endDate", "endDate": last.isoformat()}
    return pattern, {"type": "noEnd"}


def _recurrence(event: Any, zone_name: str, zone: dt.tzinfo) -> dict[str, Any]:
    """A series' event repeats by its rule in its zone (`recurrenceTimeZone`), from its local start."""
    if event.series is None:
        return {}
    local_start = event.start.astimezone(zone)
    pattern, end = _pattern(event.series.rule, local_start)
    window = {"startDate": local_start.date().isoformat(), "recurrenceTimeZone": zone_name}
    return {"recurrence": {"pattern": pattern, "range": {**window, **end}}}


def _instance_body(event: Any, zone_name: str, zone: dt.tzinfo) -> dict[str, Any]:
    """An exception: the instance's own time and title (the rest follows the series' event)."""
    return {
        "subject": event.summary,
        "start": {"dateTime": event.start.astimezone(zone).replace(tzinfo=None).isoformat(), "timeZone": zone_name},
        "end": {"dateTime": event.end.astimezone(zone).replace(tzinfo=None).isoformat(), "timeZone": zone_name},
    }


def _instances_path(op: Operation, master_id: str) -> str:
    """GET the series' instances around the occurrence's original start (an instance is found by it)."""
    assert op.occurrence is not None
    window = [
        ("startDateTime", _iso(op.occurrence - INSTANCE_WINDOW)),
        ("endDateTime", _iso(op.occurrence + INSTANCE_WINDOW, ceil=True)),
        ("$select", "id,originalStart,start,end"),
        ("$top", "100"),
    ]
    return f"me/events/{quote(master_id, safe='=')}/instances?{_query(window)}"


def _instance_step(op: Operation, step: _Step, body: dict[str, Any]) -> Outcome | None:
    """After a lookup: the series' event found (look up its instances), or the instance found (write it)."""
    assert op.occurrence is not None
    if step.kind == "find":
        found = [item.get("id") for item in body.get("value", []) if item.get("id")]
        if not found:  # no series' event: nothing to cancel; nothing to patch either
            return Outcome() if op.is_delete else Outcome(error=_missing_instance())
        step.kind, step.remote_id = "instances", found[0]
        return None
    wanted = op.occurrence.astimezone(UTC)
    for item in body.get("value", []):
        original = _moment({"dateTime": str(item.get("originalStart") or ""), "timeZone": "UTC"})
        if isinstance(item, dict) and item.get("id") and original == wanted:
            step.kind, step.remote_id = ("delete" if op.is_delete else "patch"), str(item["id"])
            return None
    return Outcome() if op.is_delete else Outcome(error=_missing_instance())  # cancelled already, or never there


def _missing_instance() -> PermanentError:
    return PermanentError("Microsoft Graph has no such instance of the series.", status=404, code="not_found")


class MicrosoftProvider(BaseProvider):
    name = "microsoft"
    label = "Outlook Calendar"
    reports_changes = True
    revocable = False  # the v2.0 endpoint has no per-grant revoke; disconnect deletes locally
    # Graph sends attendees a message on every create, update and delete by the organizer: the sync
    # core sends no write they need not hear of. No move without re-inviting (delete and create).
    notifies_every_write = True
    reauth_errors = REAUTH_ERRORS
    settings = {
        "MICROSOFT_CLIENT_ID": "",
        "MICROSOFT_CLIENT_SECRET": "",
        "MICROSOFT_REDIRECT_URI": "",
        "MICROSOFT_TENANT": "common",
        "MICROSOFT_LOGIN_ROOT": "https://login.microsoftonline.com/",
        "MICROSOFT_GRAPH_ROOT": "https://graph.microsoft.com/v1.0/",
        "MICROSOFT_BATCH_SIZE": 20,
    }
    required_settings = ("MICROSOFT_CLIENT_ID", "MICROSOFT_CLIENT_SECRET", "MICROSOFT_REDIRECT_URI")
    conferences = ("teams",)
    conference_note = (
        "Teams meetings need a Microsoft 365 work or school calendar: personal Microsoft accounts "
        "(Outlook.com, Hotmail) can't create them."
    )
    takes_guests = True
    endpoint_settings = ("MICROSOFT_LOGIN_ROOT", "MICROSOFT_GRAPH_ROOT", "MICROSOFT_REDIRECT_URI")

    # --- settings ----------------------------------------------------------------------------
    def endpoint(self, key: str, strict: bool = False) -> str:
        """Also the derived identity URLs: both live under LOGIN_ROOT and the same tenant."""
        if key in ("MICROSOFT_AUTHORIZE_URL", "MICROSOFT_TOKEN_URL"):
            tenant = quote(str(self.setting("MICROSOFT_TENANT") or "common"), safe="")
            action = "authorize" if key == "MICROSOFT_AUTHORIZE_URL" else "token"
            return f"{super().endpoint('MICROSOFT_LOGIN_ROOT', strict)}{tenant}/oauth2/v2.0/{action}"
        return super().endpoint(key, strict)

    def check(self) -> list[checks.CheckMessage]:
        messages = super().check()
        for key in ("MICROSOFT_LOGIN_ROOT", "MICROSOFT_GRAPH_ROOT"):
            url = self.setting(key)
            if url and not str(url).endswith("/"):
                messages.append(checks.Error(f'CALENDAR_SYNC["{key}"] must end with "/".', id="calendar_sync.E003"))
        return messages

    # --- OAuth -------------------------------------------------------------------------------
    @property
    def scopes(self) -> tuple[str, ...]:
        return ("offline_access", "Calendars.ReadWrite")

    def missing_scopes(self, granted: list[str]) -> set[str]:
        """Only Calendars.ReadWrite: Graph rarely lists offline_access (a refresh token proves it)."""
        have = {s.lower().removeprefix(GRAPH_SCOPE_PREFIX) for s in granted}
        return {s for s in self.scopes if s != "offline_access" and s.lower() not in have}

    def authorization_url(self, *, state: str, code_challenge: str) -> str:
        return self.authorize_url(
            self.endpoint("MICROSOFT_AUTHORIZE_URL"),
            {
                "client_id": self.setting("MICROSOFT_CLIENT_ID"),
                "response_type": "code",
                "redirect_uri": self.setting("MICROSOFT_REDIRECT_URI"),
                "response_mode": "query",
                "scope": " ".join(self.scopes),
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
                "prompt": "select_account",
            },
        )

    def _client(self) -> dict[str, str]:
        return {
            "client_id": self.setting("MICROSOFT_CLIENT_ID"),
            "client_secret": self.setting("MICROSOFT_CLIENT_SECRET"),
            "scope": " ".join(self.scopes),
        }

    def exchange_code(self, *, code: str, code_verifier: str) -> TokenSet:
        data = {
            **self._client(),
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": code_verifier,
            "redirect_uri": self.setting("MICROSOFT_REDIRECT_URI"),
        }
        return self.token_set(self.token_request("MICROSOFT_TOKEN_URL", data))

    def refresh(self, refresh_token: str) -> TokenSet:
        """Microsoft rotates refresh tokens: the answer's one replaces ours. Refusals: see REAUTH_ERRORS."""
        body = self.token_request(
            "MICROSOFT_TOKEN_URL", {**self._client(), "grant_type": "refresh_token", "refresh_token": refresh_token}
        )
        return self.token_set(body, refresh_token)

    def revoke(self, token: str) -> None:
        """Nothing to call: `revocable` is False, disconnecting forgets the grant locally."""
        return None

    # --- Graph HTTP --------------------------------------------------------------------------
    def _call(
        self, access_token: str, method: str, url: str, body: Any = None, parts: int = 1, prefer: str | None = None
    ) -> tuple[int, Any, Any]:
        """The one door of every Graph request: (status, headers, JSON body) over this thread's kept-alive
        session, inside the quota governor (`parts` calls for a batch); network trouble raised as TransientError."""
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        if prefer:
            headers["Prefer"] = prefer
        try:
            with shared.sent(parts):
                response = _sessions.get().request(
                    method, url, json=body, headers=headers, timeout=get_setting("HTTP_TIMEOUT")
                )
        except requests.RequestException as exc:
            _sessions.drop()
            raise TransientError(
                f"Network error talking to Microsoft Graph: {type(exc).__name__}", code="network"
            ) from None
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        _throttled(response.status_code, response.headers, payload)
        return response.status_code, response.headers, payload

    def list_calendars(self, access_token: str) -> list[Calendar]:
        root = self.endpoint("MICROSOFT_GRAPH_ROOT")

        def page(url: str) -> tuple[dict[str, Any], str | None]:
            body = self._get(access_token, url, root, None)
            return body, body.get("@odata.nextLink")

        first = f"{root}me/calendars?$select=id,name,canEdit,isDefaultCalendar,owner"
        return [
            Calendar(
                item["id"],
                item.get("name", ""),
                bool(item.get("isDefaultCalendar")),
                "owner" if item.get("isDefaultCalendar") else "writer",
                _owner_address(item),
            )
            for body in shared.Pages(page, first, "Microsoft Graph calendars")
            for item in body.get("value", [])
            if item.get("canEdit")
        ]

    # --- video meetings ----------------------------------------------------------------------
    def capabilities(self, access_token: str, calendar_id: str) -> list[str]:
        """GET the calendar: Teams where `allowedOnlineMeetingProviders` lists teamsForBusiness
        (a personal account's calendars never do)."""
        root = self.endpoint("MICROSOFT_GRAPH_ROOT")
        url = f"{root}{self._calendar_path(calendar_id)}?$select=id,allowedOnlineMeetingProviders"
        body = self._get(access_token, url, root, None)
        allowed = body.get("allowedOnlineMeetingProviders") or []
        return ["teams"] if isinstance(allowed, list) and TEAMS in allowed else []

    # --- reading calendars (busy time and incremental sync) ----------------------------------
    @staticmethod
    def _on_graph(url: str, root: str) -> bool:
        """Whether a link may carry the token: the Graph root's scheme and host, nothing else."""
        try:
            return urlsplit(url)[:2] == urlsplit(root)[:2]
        except ValueError:
            return False

    @staticmethod
    def _calendar_path(calendar_id: str) -> str:
        return "me/calendar" if calendar_id == "primary" else f"me/calendars/{quote(calendar_id, safe='=')}"

    def _get(self, access_token: str, url: str, root: str, prefer: str | None) -> dict[str, Any]:
        if not self._on_graph(url, root):  # never send the token anywhere but Graph
            raise PermanentError("Microsoft Graph returned a link outside the Graph root.", code="bad_next_link")
        status, headers, body = self._call(access_token, "GET", url, prefer=prefer)
        error = classify(status, headers, body)
        if error:
            raise error
        return body

    def busy(self, access_token: str, calendar_id: str, start: dt.datetime, end: dt.datetime) -> list[BusyBlock]:
        """calendarView over the window, our extended property expanded so our own events are known."""
        start, end = _aware(start), _aware(end)
        root = self.endpoint("MICROSOFT_GRAPH_ROOT")
        params = [
            ("startDateTime", _iso(start)),
            ("endDateTime", _iso(end, ceil=True)),
            ("$select", VIEW_SELECT),
            ("$expand", f"singleValueExtendedProperties($filter=id eq '{PROP_ID}')"),
            ("$top", str(VIEW_PAGE_SIZE)),
        ]
        fold = shared.Fold(start, end)

        def page(url: str) -> tuple[dict[str, Any], str | None]:
            body = self._get(access_token, url, root, 'outlook.timezone="UTC"')
            return body, body.get("@odata.nextLink")

        first = f"{root}{self._calendar_path(calendar_id)}/calendarView?{_query(params)}"
        for body in shared.Pages(page, first, "Microsoft Graph calendarView"):
            for item in body.get("value") or []:
                if isinstance(item, dict) and item.get("id") and (block := _block(item)) is not None:
                    fold.add(block.remote_id, block)
        return fold.blocks()

    def changes(
        self, access_token: str, calendar_id: str, cursor: str | None, start: dt.datetime, end: dt.datetime
    ) -> Changes:
        """calendarView delta rounds: the deltaLink is the cursor; a 410 (or no cursor) means a new round from scratch."""
        start, end = _aware(start), _aware(end)
        root = self.endpoint("MICROSOFT_GRAPH_ROOT")
        if cursor and self._on_graph(cursor, root):
            try:
                return self._delta(access_token, cursor, root, start, end, full=False)
            except CalendarSyncError as exc:
                if exc.status != 410 and str(exc.code or "").lower() not in SYNC_RESET_CODES:
                    raise
                logger.info("Microsoft Graph delta token expired (%s): full read.", exc.status)
        elif cursor:
            logger.warning("Stored Microsoft Graph delta link is not under the Graph root: full read.")
        params = [("startDateTime", _iso(start)), ("endDateTime", _iso(end, ceil=True))]
        url = f"{root}{self._calendar_path(calendar_id)}/calendarView/delta?{_query(params)}"
        return self._delta(access_token, url, root, start, end, full=True)

    def _delta(
        self, access_token: str, url: str, root: str, start: dt.datetime, end: dt.datetime, full: bool
    ) -> Changes:
        """Follow one delta round to its deltaLink (or the page bound: then the pending nextLink is the cursor)."""
        prefer = f'odata.maxpagesize={DELTA_PAGE_SIZE}, outlook.timezone="UTC"'

        def page(link: str) -> tuple[dict[str, Any], str | None]:
            body = self._get(access_token, link, root, prefer)
            if body.get("@odata.deltaLink"):
                return body, None
            if not body.get("@odata.nextLink"):
                raise TransientError("Microsoft Graph ended a delta round without a deltaLink.", code="incomplete_read")
            return body, body["@odata.nextLink"]

        fold, pages = shared.Fold(start, end), shared.Pages(page, url, "Microsoft Graph delta")
        for body in pages:
            for item in body.get("value") or []:
                if isinstance(item, dict) and item.get("id"):
                    fold.add(str(item["id"]), None if "@removed" in item else _block(item))
        # A round's nextLink is itself a state token: resuming from it continues the round.
        cursor = str(pages.last["@odata.deltaLink"] if pages.complete else pages.pending)
        if not self._on_graph(cursor, root):
            raise PermanentError("Microsoft Graph returned a link outside the Graph root.", code="bad_next_link")
        return fold.changes(cursor, full=full)

    def event(self, access_token: str, calendar_id: str, remote_id: str) -> BusyBlock | None:
        """GET one event (ids are unique per mailbox): None when it is gone (404/410) or cancelled."""
        root = self.endpoint("MICROSOFT_GRAPH_ROOT")
        url = f"{root}me/events/{quote(remote_id, safe='=')}?{_query([('$select', EVENT_SELECT)])}"
        status, headers, body = self._call(access_token, "GET", url, prefer='outlook.timezone="UTC"')
        if status in (404, 410):
            return None
        error = classify(status, headers, body)
        if error:
            raise error
        return _block(body, busy_only=False)

    # --- push notifications ------------------------------------------------------------------
    @staticmethod
    def _subscription_resource(calendar_id: str) -> str:
        return "me/events" if calendar_id == "primary" else f"me/calendars/{quote(calendar_id, safe='=')}/events"

    def watch(self, access_token: str, calendar_id: str, address: str, secret: str) -> tuple[str, str, dt.datetime]:
        """POST subscriptions: created/updated/deleted events, `secret` as clientState. Graph first checks
        `address` with its validationToken handshake (the webhook must echo it within 10 seconds)."""
        expires = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(minutes=SUBSCRIPTION_MINUTES)
        body = {
            "changeType": SUBSCRIPTION_CHANGES,
            "notificationUrl": address,
            "resource": self._subscription_resource(calendar_id),
            "expirationDateTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "clientState": secret,
        }
        status, headers, answer = self._call(
            access_token, "POST", f"{self.endpoint('MICROSOFT_GRAPH_ROOT')}subscriptions", body
        )
        error = classify(status, headers, answer)
        if error:
            raise error
        if not answer.get("id"):
            raise PermanentError("Microsoft Graph answered a subscription without an id.", code="bad_subscription")
        try:
            granted = dt.datetime.fromisoformat(
                FRACTION.sub(r"\1", str(answer.get("expirationDateTime") or "")).replace("Z", "+00:00")
            )
            expires = _aware(granted)
        except ValueError:
            pass  # keep what we asked for
        return str(answer["id"]), "", expires

    def unwatch(self, access_token: str, channel_id: str, resource_id: str) -> None:
        """DELETE subscriptions/{id}; one Graph no longer knows (404/410) is already gone."""
        url = f"{self.endpoint('MICROSOFT_GRAPH_ROOT')}subscriptions/{quote(channel_id, safe='')}"
        status, headers, answer = self._call(access_token, "DELETE", url)
        error = classify(status, headers, answer)
        if error and status not in (404, 410):
            raise error

    def parse_notification(self, headers: Any, query: Any, body: Any) -> Notification:
        """Graph's handshake (`?validationToken=`, echoed as text) or a JSON body whose `value` items
        each name a subscription and carry its clientState."""
        if "validationToken" in query:
            value = query.get("validationToken", "")
            if not value or len(value) > MAX_VALIDATION_TOKEN or not value.isprintable():
                raise PermanentError(
                    f"validationToken: at most {MAX_VALIDATION_TOKEN} printable characters.", code="invalid", status=400
                )
            return Notification(echo=value)
        try:
            payload = json.loads(body() or b"null")
        except (ValueError, RecursionError):
            raise PermanentError("A JSON body is required.", code="invalid", status=400) from None
        items = payload.get("value") if isinstance(payload, dict) else None
        items = [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
        return Notification(
            items=tuple(
                (sub if isinstance(sub := item.get("subscriptionId"), str) else "", item.get("clientState"), None)
                for item in items
            ),
            status=202,
        )

    # --- events ------------------------------------------------------------------------------
    def event_body(self, operation: Operation) -> dict[str, Any]:
        """Local times in the workspace's zone, named the Windows way Graph always accepts (UTC where
        the Windows zone would read them as another instant)."""
        event = operation.event
        assert event is not None  # only a create or an update has a body
        zone_name, zone = _graph_zone(event.time_zone, event.start, event.end)
        if operation.occurrence is not None:
            return _instance_body(event, zone_name, zone)
        return _recurrence(event, zone_name, zone) | {
            "subject": event.summary,
            "body": {"contentType": "text", "content": self.event_text(event)},
            "start": {"dateTime": event.start.astimezone(zone).replace(tzinfo=None).isoformat(), "timeZone": zone_name},
            "end": {"dateTime": event.end.astimezone(zone).replace(tzinfo=None).isoformat(), "timeZone": zone_name},
            "location": {"displayName": event.location},
            "showAs": "busy",
            "isReminderOn": False,
            "singleValueExtendedProperties": [{"id": PROP_ID, "value": operation.key}],
            "attendees": [{"emailAddress": {"address": email}, "type": "required"} for email in event.attendees],
        }

    @staticmethod
    def conference_body(operation: Operation, creating: bool = False) -> dict[str, Any]:
        """A Teams meeting to make (Graph makes one per event, once; a retried create is de-duplicated
        by its transactionId). Once one exists a patch sends nothing (it leaves the meeting); a create
        (the event is new, or made again) always asks."""
        wanted = operation.conference
        if wanted is None or wanted.status == "failed" or wanted.type != "teams":
            return {}
        if wanted.status != "none" and not creating:
            return {}
        return {"isOnlineMeeting": True, "onlineMeetingProvider": TEAMS}

    def _request(self, calendar_id: str, op: Operation, step: _Step) -> tuple[str, str, Any]:
        """(method, path relative to the Graph root, body) for an operation's next step."""
        # "primary" (the default when a member connects) is the mailbox's default calendar.
        events = (
            "me/calendar/events" if calendar_id == "primary" else f"me/calendars/{quote(calendar_id, safe='=')}/events"
        )
        if step.kind == "instances":
            return "GET", _instances_path(op, step.remote_id or ""), None
        if step.kind == "find":
            key = op.key.replace("'", "''")
            where = f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROP_ID}' and ep/value eq '{key}')"
            return "GET", f"{events}?$filter={quote(where, safe='')}&$select=id", None
        if step.kind == "create":  # transactionId only here: Graph refuses to change it later
            body = {**self.event_body(op), **self.conference_body(op, creating=True)}
            return "POST", events, {**body, "transactionId": step.transaction_id}
        path = f"{events}/{quote(step.remote_id or '', safe='=')}"
        if step.kind == "delete":
            return "DELETE", path, None
        return "PATCH", path, {**self.event_body(op), **self.conference_body(op)}

    def apply(self, access_token: str, calendar_id: str, operations: list[Operation]) -> list[Outcome]:
        """Operations step by step (see `_advance`), in batches when several. A throttled part is sent
        again once the governor lets the connection be called (its Retry-After marked it)."""
        results: list[Outcome | None] = [None] * len(operations)
        steps: dict[int, _Step] = {}
        for i, op in enumerate(operations):
            if op.occurrence is not None:  # an instance of a recurring event: look it up, then write it
                steps[i] = _Step("instances" if op.remote_id else "find", op.remote_id, op.key)
            elif op.remote_id:
                steps[i] = _Step("delete" if op.is_delete else "patch", op.remote_id, op.key)
            elif op.known_to_exist:
                steps[i] = _Step("find", None, op.key)
            elif op.is_delete:
                results[i] = Outcome()  # nothing was ever made: nothing to do
            else:
                steps[i] = _Step("create", None, op.key)
        batched = len(steps) > 1
        for _ in range(MAX_ROUNDS):
            if not steps:
                break
            for i, answer in self._send(access_token, calendar_id, operations, steps, batched).items():
                step = steps[i]
                outcome = (
                    answer
                    if isinstance(answer, Outcome)
                    else self._advance(operations[i], step, *answer, batched=batched)
                )
                if outcome is not None:
                    results[i] = outcome
                    del steps[i]
        for i, step in steps.items():
            results[i] = Outcome(
                error=step.error or TransientError("Microsoft Graph kept the operation pending.", code="unavailable")
            )
        return [r or Outcome() for r in results]

    def _advance(
        self, op: Operation, step: _Step, status: int, headers: Any, body: Any, *, batched: bool
    ) -> Outcome | None:
        """Outcome when the operation is done (or failed for good); None to send its next step."""
        error = classify(status, headers, body)
        body = body if isinstance(body, dict) else {}
        step.error = error
        if error is None:
            if op.occurrence is not None and step.kind in ("find", "instances"):
                return _instance_step(op, step, body)
            if step.kind == "find":
                found = [item.get("id") for item in body.get("value", []) if item.get("id")]
                if found:
                    step.kind, step.remote_id = ("delete" if op.is_delete else "patch"), found[0]
                    return None
                if op.is_delete:
                    return Outcome()
                step.kind = "create"
                return None
            if step.kind == "create" and body.get("id") and body["id"] == step.gone_id:
                step.transaction_id = f"{op.key}-2"  # Graph de-duplicated onto the deleted event
                return None
            if step.kind == "delete":
                return Outcome()
            return Outcome(
                remote_id=body.get("id") or step.remote_id,
                version=body.get("changeKey") or None,
                conference=conference_of(op, body),
            )
        if status in (404, 410) and step.kind == "delete":
            return Outcome()  # already gone
        if status in (404, 410) and op.occurrence is not None:
            return Outcome(error=error)  # an instance is never made: the series' event is not as we wrote it
        if status in (404, 410) and step.kind == "patch":
            step.kind, step.gone_id, step.remote_id = "create", step.remote_id, None
            return None
        duplicate = status == 409 or (status == 400 and "transaction" in str(error).lower())
        if step.kind == "create" and duplicate and not step.looked_up:
            step.kind, step.looked_up = "find", True  # a create under this transactionId exists: patch it
            return None
        if batched and status in (429, 503) and step.throttled < THROTTLE_ROUNDS:
            if retry_after(_header(headers, "Retry-After")) is not None:  # the connection is marked until then
                step.throttled += 1
                return None
        return Outcome(error=error)

    def _send(
        self,
        access_token: str,
        calendar_id: str,
        operations: list[Operation],
        steps: dict[int, _Step],
        batched: bool,
    ) -> dict[int, Any]:
        """One round: {index: (status, headers, body)}, or an error Outcome when the request itself failed."""
        root = self.endpoint("MICROSOFT_GRAPH_ROOT")
        answers: dict[int, Any] = {}
        if not batched:
            ((i, step),) = steps.items()
            method, path, body = self._request(calendar_id, operations[i], step)
            try:
                answers[i] = self._call(access_token, method, root + path, body)
            except CalendarSyncError as exc:
                answers[i] = Outcome(error=exc)
            return answers
        size = shared.batch_size(self.setting("MICROSOFT_BATCH_SIZE"), BATCH_LIMIT)
        items = list(steps.items())
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            parts = []
            for i, step in chunk:
                method, path, body = self._request(calendar_id, operations[i], step)
                part: dict[str, Any] = {"id": str(i), "method": method, "url": f"/{path}"}
                if body is not None:
                    part.update(headers={"Content-Type": "application/json"}, body=body)
                parts.append(part)
            try:
                status, headers, reply = self._call(
                    access_token, "POST", f"{root}$batch", {"requests": parts}, len(parts)
                )
                error = classify(status, headers, reply) if status != 200 else None
            except CalendarSyncError as exc:
                error = exc
            responses = (
                {str(r.get("id")): r for r in (reply.get("responses") or []) if isinstance(r, dict)}
                if error is None
                else {}
            )
            for i, _ in chunk:
                r = responses.get(str(i))
                if error is not None:
                    answers[i] = Outcome(error=error)  # the whole batch failed: every part shares it
                elif r is None:
                    answers[i] = Outcome(
                        error=TransientError(
                            "Microsoft Graph left a batch request unanswered.", code="incomplete_batch"
                        )
                    )
                else:
                    answers[i] = (int(r.get("status") or 0), r.get("headers") or {}, r.get("body"))
                    _throttled(*answers[i])
        return answers
