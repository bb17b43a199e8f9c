"""Google: OAuth 2.0 with PKCE against Google's endpoints, Calendar v3 through
google-api-python-client. Every endpoint comes from settings; every error is classified here.

The token endpoint is spoken to through the shared `BaseProvider.token_request` (plain
`requests`), not oauthlib: oauthlib allows plain-http endpoints only through a process-wide
environment variable, which we never set; `BaseProvider.endpoint` decides per URL instead.
"""

import datetime as dt
import json
import logging
import socket
import uuid
from dataclasses import replace
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import google.auth.exceptions
import google_auth_httplib2
import httplib2
import requests
from django.core import checks
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from ..conf import get_setting
from ..exceptions import AuthorizationLost, CalendarSyncError, PermanentError, TransientError, UsageLimited
from ..types import Conference, Guest
from . import http as shared
from .base import BaseProvider, BusyBlock, Calendar, Notification, Outcome, retry_after

logger = logging.getLogger(__name__)

RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"}
USAGE_LIMIT = ("quotaExceeded", "usageLimits")  # "Calendar usage limits exceeded": (reason, domain)
GONE_STATUSES = {404, 410}
WRITABLE_ROLES = {"owner", "writer"}
MARKER = "calendar_sync_source"  # private extended property every event we write carries
PAGE_SIZE = 2500  # events.list's maximum maxResults
# What a read needs of an event: its span, whether it is ours (or an occurrence of ours), its version
# and its guests' answers.
EVENT_FIELDS = (
    "id,etag,status,summary,start,end,transparency,extendedProperties/private,recurringEventId,"
    "attendees(email,responseStatus,self,organizer,resource)"
)
LIST_FIELDS = f"nextPageToken,nextSyncToken,items({EVENT_FIELDS})"
RESPONSES = {"needsAction", "accepted", "declined", "tentative"}
UTC = dt.UTC
BATCH_LIMIT = 1000  # calls per batch request the service accepts
CHANNEL_TTL = 7 * 24 * 3600  # seconds a push channel is asked to live (Google's default, a week)
MEET = "hangoutsMeet"  # conferenceSolutionKey.type of Google Meet


def conference_of(operation, body):
    """The meeting an event answer shows, as the operation asked for one (Outcome.conference)."""
    wanted = operation.conference
    if wanted is None or wanted.status == "failed" or not isinstance(body, dict):
        return wanted
    data = _dict(body.get("conferenceData"))
    code = str(_dict(_dict(data.get("createRequest")).get("status")).get("statusCode") or "")
    video = [p for p in data.get("entryPoints") or [] if isinstance(p, dict) and p.get("entryPointType") == "video"]
    uri = str(video[0].get("uri") or "") if video else ""
    if code == "failure":
        return Conference("google_meet", "", "failed", "Google could not make the Meet meeting.")
    if code == "pending":
        return Conference("google_meet", uri, "pending")
    if uri:
        return Conference("google_meet", uri, "ready")
    if wanted.status == "none":  # asked, and the event came back without one
        return Conference("google_meet", "", "failed", "Google made no Meet meeting for this event.")
    return wanted


def _dict(value):
    return value if isinstance(value, dict) else {}


def _conference_refused(error):
    """Google's 400 for a conference the calendar does not allow ("Invalid conference type value.")."""
    return error is not None and error.status == 400 and "conference" in str(error).lower()


def classify_http_error(exc):
    """Turn a googleapiclient HttpError into our hierarchy (status and reason, no body text)."""
    status = int(exc.resp.status)
    reason = domain = ""
    message = ""
    try:
        error = json.loads(exc.content or b"{}").get("error", {})
        message = error.get("message", "") if isinstance(error, dict) else str(error)
        first = (error.get("errors") or [{}])[0] if isinstance(error, dict) else {}
        reason, domain = first.get("reason", ""), first.get("domain", "")
    except (ValueError, AttributeError):
        pass
    text = f"Google Calendar API {status} {reason or ''}: {message}".strip()
    if status == 403 and (reason, domain) == USAGE_LIMIT:  # the account's write limit, not the API quota
        return UsageLimited(text, status=status)
    if status == 429 or status >= 500 or (status == 403 and reason in RATE_LIMIT_REASONS):
        return TransientError(
            text, status=status, code=reason or "unavailable", retry_after=retry_after(exc.resp.get("retry-after"))
        )
    if status == 401:
        return AuthorizationLost(text, status=status, code="unauthorized")
    if status in GONE_STATUSES:
        return PermanentError(text, status=status, code="not_found")
    if status == 409:
        return PermanentError(text, status=status, code="duplicate")
    return PermanentError(text, status=status, code=reason or "rejected")


def classify(exc):
    if isinstance(exc, CalendarSyncError):
        return exc
    if isinstance(exc, HttpError):
        return classify_http_error(exc)
    if isinstance(exc, google.auth.exceptions.RefreshError):
        # A batch part got 401 and the client tried to refresh credentials we give it no means to refresh.
        return AuthorizationLost("Google rejected the access token (401).", status=401, code="unauthorized")
    if isinstance(exc, (httplib2.HttpLib2Error, OSError, socket.timeout, requests.RequestException)):
        return TransientError(f"Network error talking to Google: {type(exc).__name__}", code="network")
    raise exc


@lru_cache(maxsize=4)
def _service(api_root):
    # Built once per API root from the bundled discovery document; requests carry their own http.
    service = build(
        "calendar",
        "v3",
        http=httplib2.Http(),
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": f"{api_root}calendar/v3/"},
    )
    # `service.events()` builds a new collection each call: every method created anew and its
    # docstring rendered from the schemas (about a third of a sync's CPU). Each is built once
    # here, on first use, then shared: a collection only makes request objects.
    for name in getattr(service, "_resourceDesc", {}).get("resources", {}):
        setattr(service, name, lru_cache(maxsize=1)(getattr(service, name)))
    return service


_connections = shared.PerThread(lambda timeout: httplib2.Http(timeout=timeout))  # httplib2 is not thread-safe


class _Http(google_auth_httplib2.AuthorizedHttp):
    """The one door of every Calendar API request: the access token added (per request: the
    connection underneath is this thread's, reused), the quota governor around it, a throttled
    answer noted. `parts` is the number of calls the next request carries (a batch's)."""

    parts = 1

    def request(self, *args, **kwargs):
        with shared.sent(self.parts):
            response, content = super().request(*args, **kwargs)
        shared.answered(int(response.status), retry_after(response.get("retry-after")))
        return response, content


def _reset_http(exc):
    """After a failure other than an HTTP error answer, drop this thread's connections: a timed-out
    request may still answer later, and that answer must never be read as the next request's."""
    if not isinstance(exc, (HttpError, CalendarSyncError)):
        _connections.drop()


# --- reading calendars ---------------------------------------------------------------------------
def _moment(value):
    """An EventDateTime as aware UTC: `dateTime` (offset, else its `timeZone`), or all-day `date` at midnight UTC."""
    if not isinstance(value, dict):
        return None
    try:
        if value.get("dateTime"):
            parsed = dt.datetime.fromisoformat(str(value["dateTime"]))
            if parsed.tzinfo is None:
                try:
                    parsed = parsed.replace(tzinfo=ZoneInfo(str(value.get("timeZone") or "UTC")))
                except (ZoneInfoNotFoundError, ValueError):
                    parsed = parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
        if value.get("date"):
            day = dt.date.fromisoformat(str(value["date"]))
            return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    except ValueError:
        return None
    return None


def _guests(item):
    """The attendees' answers (Google's `responseStatus`), the organizer and rooms left out."""
    guests = []
    for attendee in item.get("attendees") or []:
        if not isinstance(attendee, dict) or attendee.get("self") or attendee.get("organizer"):
            continue
        if attendee.get("resource") or not attendee.get("email"):
            continue
        answer = str(attendee.get("responseStatus") or "needsAction")
        guests.append(Guest(str(attendee["email"]).lower(), answer if answer in RESPONSES else "needsAction"))
    return tuple(guests)


def _block(item):
    """A listed event as a BusyBlock, or None when it blocks no time (cancelled, transparent, no span).
    One of ours stays a block even when marked free: it still is the booking's event."""
    private = (item.get("extendedProperties") or {}).get("private") or {}
    ours = MARKER in private
    if item.get("status") == "cancelled" or (item.get("transparency") == "transparent" and not ours):
        return None
    start, end = _moment(item.get("start")), _moment(item.get("end"))
    if start is None or end is None or end <= start:
        return None
    return BusyBlock(
        start=start,
        end=end,
        remote_id=str(item.get("id") or ""),
        summary=str(item.get("summary") or ""),
        ours=ours,  # instances of a recurring event carry the master's properties
        series_id=str(item.get("recurringEventId") or ""),
        version=str(item.get("etag") or ""),
        guests=_guests(item),
    )


# --- recurring events (one per series, design decision 22) ---------------------------------------
def _recurrence(event):
    """A series' event repeats by its rule, from its local start in its zone (`start.timeZone`)."""
    return {"recurrence": [f"RRULE:{event.series.rule}"]} if event.series is not None else {}


def _instance_id(operation):
    """The event to write: an instance's id is the recurring event's id and its original start in UTC."""
    event_id = operation.remote_id or operation.key
    if operation.occurrence is None:
        return event_id
    return f"{event_id}_{operation.occurrence.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def _instance_body(event, zone):
    """An exception: the instance's own time and title (the rest follows the recurring event)."""
    return {
        "status": "confirmed",
        "summary": event.summary,
        "start": {"dateTime": event.start.astimezone(zone).isoformat(), "timeZone": event.time_zone},
        "end": {"dateTime": event.end.astimezone(zone).isoformat(), "timeZone": event.time_zone},
    }


def _etag(answer):
    """The etag Google answered a write with (a delete answers none)."""
    return str(answer["etag"]) if isinstance(answer, dict) and answer.get("etag") else None


class GoogleProvider(BaseProvider):
    name = "google"
    label = "Google Calendar"
    can_move = True  # events.move: the event, its guests and their answers go along, nobody is told
    reports_changes = True
    settings = {
        # OAuth client registered with Google (required to connect).
        "GOOGLE_CLIENT_ID": "",
        "GOOGLE_CLIENT_SECRET": "",
        # Must match an "Authorized redirect URI" of the Google client exactly.
        "GOOGLE_REDIRECT_URI": "",
        # Endpoints; overridable so tests (and integrators) can point at calendar_sync.testing.FakeGoogle.
        "GOOGLE_OAUTH_AUTH_URI": "https://accounts.google.com/o/oauth2/auth",
        "GOOGLE_OAUTH_TOKEN_URI": "https://oauth2.googleapis.com/token",
        "GOOGLE_OAUTH_REVOKE_URI": "https://oauth2.googleapis.com/revoke",
        "GOOGLE_API_ROOT": "https://www.googleapis.com/",
        "GOOGLE_SCOPES": [
            "https://www.googleapis.com/auth/calendar.events",
            "https://www.googleapis.com/auth/calendar.readonly",
        ],
        # Calls per batch request: conservative by default; the service takes at most 1,000.
        "BATCH_SIZE": 50,
    }
    required_settings = ("GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "GOOGLE_REDIRECT_URI")
    conferences = ("google_meet",)
    conference_note = "Google Meet has to be allowed for it (a Google Workspace administrator may have turned it off)."
    takes_guests = True
    endpoint_settings = (
        "GOOGLE_OAUTH_AUTH_URI",
        "GOOGLE_OAUTH_TOKEN_URI",
        "GOOGLE_OAUTH_REVOKE_URI",
        "GOOGLE_API_ROOT",
        "GOOGLE_REDIRECT_URI",
    )

    @property
    def scopes(self):
        return tuple(self.setting("GOOGLE_SCOPES"))

    def check(self):
        messages = super().check()
        if not str(self.setting("GOOGLE_API_ROOT")).endswith("/"):
            messages.append(
                checks.Error('CALENDAR_SYNC["GOOGLE_API_ROOT"] must end with "/".', id="calendar_sync.E003")
            )
        return messages

    # --- OAuth -----------------------------------------------------------------------------
    def _client(self):
        return {"client_id": self.setting("GOOGLE_CLIENT_ID"), "client_secret": self.setting("GOOGLE_CLIENT_SECRET")}

    def authorization_url(self, *, state, code_challenge):
        params = {
            "response_type": "code",
            "client_id": self.setting("GOOGLE_CLIENT_ID"),
            "redirect_uri": self.setting("GOOGLE_REDIRECT_URI"),
            "scope": " ".join(self.scopes),
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
            "access_type": "offline",
            "prompt": "consent",
            "include_granted_scopes": "true",
        }
        return self.authorize_url(self.endpoint("GOOGLE_OAUTH_AUTH_URI"), params)

    def exchange_code(self, *, code, code_verifier):
        body = self.token_request(
            "GOOGLE_OAUTH_TOKEN_URI",
            {
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": code_verifier,
                "redirect_uri": self.setting("GOOGLE_REDIRECT_URI"),
                **self._client(),
            },
        )
        return self.token_set(body)

    def refresh(self, refresh_token):
        body = self.token_request(
            "GOOGLE_OAUTH_TOKEN_URI", {"grant_type": "refresh_token", "refresh_token": refresh_token, **self._client()}
        )
        return self.token_set(body, refresh_token)

    def revoke(self, token):
        """RFC 7009 with client authentication (§2.1; Google takes client_id and client_secret in
        the body). Only `invalid_token` means the token was already invalid; any other refusal
        (a wrong client, a malformed request) is a failed revoke, not a success."""
        url = self.endpoint("GOOGLE_OAUTH_REVOKE_URI")
        try:
            response = requests.post(
                url,
                data={"token": token, **self._client()},
                headers={"Accept": "application/json"},
                timeout=get_setting("HTTP_TIMEOUT"),
            )
        except requests.RequestException as exc:
            raise TransientError(f"Google revoke endpoint unreachable: {type(exc).__name__}", code="network") from None
        if response.status_code == 200:
            return
        try:
            body = response.json()
        except ValueError:
            body = {}
        error = str(body.get("error") or "") if isinstance(body, dict) else ""
        if response.status_code == 400 and error == "invalid_token":
            raise AuthorizationLost("Google says the token was already invalid.", code="already_invalid")
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(
                f"Google revoke endpoint answered {response.status_code}.", status=response.status_code
            )
        raise PermanentError(
            f"Google refused the revoke: {error[:64] or response.status_code}.",
            status=response.status_code,
            code="revoke_failed",
        )

    # --- Calendar API ----------------------------------------------------------------------
    def _http(self, access_token):
        return _Http(
            Credentials(token=access_token),
            http=_connections.get(get_setting("HTTP_TIMEOUT")),
            refresh_status_codes=(),  # refreshing is ours: proactive, locked and persisted
        )

    def _execute(self, request, http):
        try:
            return request.execute(http=http)  # through `_Http.request`
        except Exception as exc:  # noqa: BLE001 - classified, unknown errors re-raised
            _reset_http(exc)
            raise classify(exc) from None

    def list_calendars(self, access_token):
        service, http = _service(self.endpoint("GOOGLE_API_ROOT")), self._http(access_token)

        def page(token):
            result = self._execute(service.calendarList().list(minAccessRole="writer", pageToken=token), http)
            return result, result.get("nextPageToken")

        return [
            Calendar(
                item["id"],
                item.get("summaryOverride") or item.get("summary", ""),
                bool(item.get("primary")),
                item["accessRole"],
                item["id"] if item.get("primary") else "",  # the primary calendar's id is the address
            )
            for result in shared.Pages(page, None, "Google calendarList.list")
            for item in result.get("items", [])
            if item.get("accessRole") in WRITABLE_ROLES and not item.get("deleted")
        ]

    # --- video meetings ----------------------------------------------------------------------
    def capabilities(self, access_token, calendar_id):
        """calendarList.get: Meet where `conferenceProperties.allowedConferenceSolutionTypes` lists it."""
        service, http = _service(self.endpoint("GOOGLE_API_ROOT")), self._http(access_token)
        entry = self._execute(service.calendarList().get(calendarId=calendar_id), http)
        allowed = ((entry or {}).get("conferenceProperties") or {}).get("allowedConferenceSolutionTypes") or []
        return ["google_meet"] if MEET in allowed else []

    def read_conference(self, access_token, calendar_id, operation):
        """events.get with conferenceData: a pending meeting read again."""
        service, http = _service(self.endpoint("GOOGLE_API_ROOT")), self._http(access_token)
        request = service.events().get(calendarId=calendar_id, eventId=operation.remote_id or operation.key)
        try:
            body = self._execute(request, http)
        except CalendarSyncError as exc:
            if exc.status in GONE_STATUSES:
                return None
            raise
        return conference_of(operation, body)

    # --- reading calendars (busy time and incremental sync) ----------------------------------
    def busy(self, access_token, calendar_id, start, end):
        """events.list over the window, not freeBusy: freeBusy cannot tell our own events apart."""
        start, end = shared.aware(start), shared.aware(end)
        service, http = _service(self.endpoint("GOOGLE_API_ROOT")), self._http(access_token)
        fold, _, _ = self._read(service, http, calendar_id, start, end, sync_token=None, tracked=False)
        return fold.blocks()

    def changes(self, access_token, calendar_id, cursor, start, end):
        """syncToken reads; a 410 (fullSyncRequired) or no cursor means a full read of [start, end)."""
        start, end = shared.aware(start), shared.aware(end)
        service, http = _service(self.endpoint("GOOGLE_API_ROOT")), self._http(access_token)
        if cursor:
            try:
                fold, token, _ = self._read(service, http, calendar_id, start, end, sync_token=cursor)
            except CalendarSyncError as exc:
                if exc.status != 410:  # 410 fullSyncRequired: the token expired, read everything again
                    raise
                logger.info("Google sync token for a calendar expired (410): full read.")
            else:  # page bound hit: keep the old token, the changes come again
                return fold.changes(token or cursor, full=False)
        fold, token, complete = self._read(service, http, calendar_id, start, end, sync_token=None)
        if not token:
            raise TransientError(
                "Google did not finish the calendar read within the page bound."
                if not complete
                else "Google ended the calendar read without a sync token.",
                code="incomplete_read",
            )
        return fold.changes(token, full=True)

    def _read(
        self, service, http, calendar_id, start, end, sync_token, tracked=True
    ) -> tuple[shared.Fold, str | None, bool]:
        """Every page of one events.list: (the events folded, nextSyncToken, complete).

        A full read is bounded by [start, end); an incremental one (syncToken) may not carry a window
        (Google refuses), so events changed outside the window count as no longer busy there. Every
        other parameter of an incremental read must match the full read that began the sync (the
        discovery document), so reads that are `tracked` (`changes`) always show deleted events;
        a one-off read (`busy`) needs none.
        """
        params = {
            "calendarId": calendar_id,
            "singleEvents": True,
            "maxResults": PAGE_SIZE,
            "fields": LIST_FIELDS,
            "showDeleted": tracked,
        }
        if sync_token:
            params.update(syncToken=sync_token)
        else:
            params.update(timeMin=shared.bound(start), timeMax=shared.bound(end, ceil=True))

        def page(token):
            result = self._execute(service.events().list(pageToken=token, **params), http)
            return result, result.get("nextPageToken")

        fold, pages = shared.Fold(start, end), shared.Pages(page, None, "Google events.list")
        for result in pages:
            for item in result.get("items") or []:
                if isinstance(item, dict) and item.get("id"):
                    fold.add(item["id"], _block(item))
        return fold, pages.last.get("nextSyncToken") if pages.complete else None, pages.complete

    def event(self, access_token, calendar_id, remote_id):
        """events.get of one event: None when it is gone (404/410, or kept as `cancelled`)."""
        service, http = _service(self.endpoint("GOOGLE_API_ROOT")), self._http(access_token)
        try:
            item = self._execute(
                service.events().get(calendarId=calendar_id, eventId=remote_id, fields=EVENT_FIELDS), http
            )
        except CalendarSyncError as exc:
            if exc.status in GONE_STATUSES:
                return None
            raise
        return _block(item) if isinstance(item, dict) and item.get("status") != "cancelled" else None

    # --- push notifications ----------------------------------------------------------------
    def watch(self, access_token, calendar_id, address, secret):
        """events.watch: a web_hook channel whose notifications carry `secret` as X-Goog-Channel-Token."""
        service, http = _service(self.endpoint("GOOGLE_API_ROOT")), self._http(access_token)
        body = {
            "id": str(uuid.uuid4()),
            "type": "web_hook",
            "address": address,
            "token": secret,
            "params": {"ttl": str(CHANNEL_TTL)},
        }
        result = self._execute(service.events().watch(calendarId=calendar_id, body=body), http)
        channel_id, resource_id = str(result.get("id") or body["id"]), str(result.get("resourceId") or "")
        if not resource_id:
            raise PermanentError("Google answered events.watch without a resourceId.", code="bad_channel")
        try:  # Unix time in milliseconds, as a string
            expires = dt.datetime.fromtimestamp(int(result["expiration"]) / 1000, UTC)
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            expires = dt.datetime.now(UTC) + dt.timedelta(seconds=CHANNEL_TTL)
        return channel_id, resource_id, expires

    def unwatch(self, access_token, channel_id, resource_id):
        """channels.stop; a channel Google no longer knows (404/410) is already stopped."""
        service, http = _service(self.endpoint("GOOGLE_API_ROOT")), self._http(access_token)
        try:
            self._execute(service.channels().stop(body={"id": channel_id, "resourceId": resource_id}), http)
        except CalendarSyncError as exc:
            if exc.status not in GONE_STATUSES:
                raise

    def parse_notification(self, headers, query, body):
        """A Google notification is headers only. `sync` (sent as a channel is made, maybe before
        events.watch has even answered us) needs nothing; `exists` / `not_exists` mean "pull"."""
        if headers.get("X-Goog-Resource-State", "") == "sync":
            return Notification(ping=True)
        item = (
            headers.get("X-Goog-Channel-ID", ""),
            headers.get("X-Goog-Channel-Token", ""),
            headers.get("X-Goog-Resource-ID", ""),
        )
        return Notification(items=(item,))

    def event_body(self, operation):
        event = operation.event
        zone = ZoneInfo(event.time_zone)
        if operation.occurrence is not None:
            return _instance_body(event, zone)
        source, _, object_id = operation.object_ref.partition(":")
        return _recurrence(event) | {
            "id": operation.key,
            "status": "confirmed",
            "summary": event.summary,
            "location": event.location,
            "description": self.event_text(event),
            "start": {"dateTime": event.start.astimezone(zone).isoformat(), "timeZone": event.time_zone},
            "end": {"dateTime": event.end.astimezone(zone).isoformat(), "timeZone": event.time_zone},
            "extendedProperties": {"private": {"calendar_sync_source": source, "calendar_sync_id": object_id}},
            "attendees": [{"email": email} for email in event.attendees],
        }

    @staticmethod
    def conference_body(operation, creating=False):
        """A Meet to make: `conferenceData.createRequest` whose requestId is the event's own key, so a
        retried write never makes a second meeting. Once one exists a patch sends nothing (it leaves the
        meeting as it is); an insert (the event is new, or made again) always asks."""
        wanted = operation.conference
        if wanted is None or wanted.status == "failed" or wanted.type != "google_meet":
            return {}
        if wanted.status != "none" and not creating:
            return {}
        return {
            "conferenceData": {"createRequest": {"requestId": operation.key, "conferenceSolutionKey": {"type": MEET}}}
        }

    def _request(self, service, calendar_id, operation, step):
        events = service.events()
        # Guests hear of a write only when the sync core says so (`Operation.notify`); never otherwise.
        send = "all" if operation.notify else "none"
        if isinstance(step, tuple):  # ("move", destination calendar)
            return events.move(
                calendarId=calendar_id,
                eventId=operation.remote_id or operation.key,
                destination=step[1],
                sendUpdates="none",
            )
        if step == "delete":
            return events.delete(calendarId=calendar_id, eventId=_instance_id(operation), sendUpdates=send)
        body = {**self.event_body(operation), **self.conference_body(operation, creating=step == "insert")}
        extra = {"conferenceDataVersion": 1} if operation.conference is not None else {}
        if step == "insert":
            return events.insert(calendarId=calendar_id, body=body, sendUpdates=send, **extra)
        return events.patch(
            calendarId=calendar_id, eventId=_instance_id(operation), body=body, sendUpdates=send, **extra
        )

    def move(self, access_token, calendar_id, destination, operations):
        """events.move (in batches when several), telling nobody (`sendUpdates=none`): each event keeps
        its id, guests and their answers. One already gone (404/410) is an error: the caller creates it anew."""
        service, http = _service(self.endpoint("GOOGLE_API_ROOT")), self._http(access_token)
        answers: dict[int, dict] = {}  # the events as moved (their etags)
        steps = dict.fromkeys(range(len(operations)), ("move", destination))
        errors = self._run(service, http, calendar_id, operations, steps, answers)
        return [
            Outcome(errors[i], None if errors[i] else op.remote_id or op.key, version=_etag(answers.get(i)))
            for i, op in enumerate(operations)
        ]

    @staticmethod
    def _next_step(step, error):
        """The idempotent repair for an error, or None when the error stands (or is success)."""
        if error is None:
            return None
        if step == "insert" and error.status == 409:
            return "patch"  # already there (maybe cancelled): patch it back
        if step == "patch" and error.status in GONE_STATUSES:
            return "insert"  # gone for good: create it under the same id
        return None

    def apply(self, access_token, calendar_id, operations):
        service, http = _service(self.endpoint("GOOGLE_API_ROOT")), self._http(access_token)
        operations = list(operations)  # a refused meeting is dropped from its operation (see below)
        results = [Outcome()] * len(operations)
        answers: dict[int, dict] = {}  # the body of each answer: the event as written (its etag, its meeting)
        pending = {
            i: ("delete" if op.is_delete else "patch" if op.known_to_exist or op.occurrence else "insert")
            for i, op in enumerate(operations)
        }
        for _ in range(3):  # first attempt, repair, repair of a racing repair
            if not pending:
                break
            errors = self._run(service, http, calendar_id, operations, pending, answers)
            next_pending = {}
            for i, step in pending.items():
                error = errors[i]
                if step == "delete" and error is not None and error.status in GONE_STATUSES:
                    error = None  # deleting what is already gone is success
                written = error is None and not operations[i].is_delete
                results[i] = Outcome(
                    error,
                    None if error or operations[i].is_delete else operations[i].key,
                    version=_etag(answers.get(i)) if written else None,
                    conference=None if error else conference_of(operations[i], answers.get(i)),
                )
                if _conference_refused(error) and self.conference_body(operations[i], creating=step == "insert"):
                    # The calendar no longer allows Meet: write the event without one, report why.
                    why = f"This calendar doesn't allow Google Meet meetings. {self.conference_note}"
                    refused = Conference("google_meet", "", "failed", why)
                    operations[i] = replace(operations[i], conference=refused)
                    next_pending[i] = step
                    continue
                # An instance of a recurring event is only ever patched or cancelled, never made.
                repair = None if operations[i].occurrence else self._next_step(step, error)
                if repair:
                    next_pending[i] = repair
            pending = next_pending
        return results

    def _run(self, service, http, calendar_id, operations, pending, answers=None):
        """Send one round of requests: alone when single, else in batches. Returns {index: error};
        the answers' bodies go to `answers` {index: body}."""
        errors: dict[int, CalendarSyncError | None] = {}
        answers = {} if answers is None else answers
        items = list(pending.items())
        if len(items) == 1:
            ((i, step),) = items
            try:
                answers[i] = self._execute(self._request(service, calendar_id, operations[i], step), http)
                errors[i] = None
            except CalendarSyncError as exc:
                errors[i] = exc
            return errors
        size = shared.batch_size(self.setting("BATCH_SIZE"), BATCH_LIMIT)
        root = self.endpoint("GOOGLE_API_ROOT")
        limited = None  # the account's usage limit: it can't write for hours, so the rest is not sent
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            if limited is not None:
                errors.update((i, limited) for i, _ in chunk)
                continue

            def callback(request_id, response, exception):
                if isinstance(exception, HttpError):
                    shared.answered(int(exception.resp.status), retry_after(exception.resp.get("retry-after")))
                errors[int(request_id)] = classify(exception) if exception is not None else None
                answers[int(request_id)] = response

            batch = BatchHttpRequest(callback=callback, batch_uri=f"{root}batch/calendar/v3")
            for i, step in chunk:
                batch.add(self._request(service, calendar_id, operations[i], step), request_id=str(i))
            try:
                http.parts = len(chunk)  # the batch request counts as many calls as it carries
                batch.execute(http=http)
            except Exception as exc:  # noqa: BLE001 - the whole batch failed: every item shares it
                _reset_http(exc)
                error = classify(exc)
                for i, _ in chunk:
                    errors[i] = error
            finally:
                http.parts = 1
            limited = next((e for i, _ in chunk if isinstance(e := errors.get(i), UsageLimited)), None)
        return errors
