"""Reading calendars: `busy()` and `changes()` of both providers against FakeGoogle / FakeMicrosoft,
plus the fakes' read-side surfaces (sync tokens, delta rounds, freeBusy, getSchedule, push channels,
subscriptions) as the real services document them."""

import base64
import datetime as dt
import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import requests

from calendar_sync.exceptions import AuthorizationLost, PermanentError, TransientError
from calendar_sync.providers.base import BusyBlock, Changes, Operation
from calendar_sync.providers.google import GoogleProvider
from calendar_sync.providers.microsoft import MicrosoftProvider
from calendar_sync.sources import Event
from calendar_sync.testing.fake_microsoft import DEFAULT_ACCOUNT
from tests.helpers import MS_REDIRECT, REDIRECT, pkce

UTC = dt.UTC
DAY = dt.datetime(2030, 5, 6, tzinfo=UTC)  # a Monday, far from now


def at(hour, minute=0, day=0):
    return DAY + dt.timedelta(days=day, hours=hour, minutes=minute)


def key(n):
    return base64.b32hexencode(hashlib.sha256(f"booking:{n}".encode()).digest()[:20]).decode().lower()


def upsert(n, start, hours=1):
    event = Event(
        summary=f"Booking {n}",
        start=start,
        end=start + dt.timedelta(hours=hours),
        time_zone="Europe/Berlin",
        location="Desk",
        description="",
    )
    return Operation(key=key(n), event=event, object_ref=f"booking:{n}")


# --- one fixture per provider: the same tests drive both fakes through their shared vocabulary ----
def connected(fake, provider, settings, redirect):
    """`fake` reset and its default account connected: (fake, provider, access token, account)."""
    settings.DEBUG = True  # plain http to the loopback fakes
    fake.reset()
    settings.CALENDAR_SYNC = {
        **settings.CALENDAR_SYNC,
        **fake.settings(),
        f"{fake.provider.upper()}_REDIRECT_URI": redirect,
    }
    verifier, challenge = pkce()
    location = fake.consent(provider.authorization_url(state="st", code_challenge=challenge))
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]
    return SimpleNamespace(
        fake=fake,
        provider=provider,
        token=provider.exchange_code(code=code, code_verifier=verifier).access_token,
        account=fake.default_account,
    )


@pytest.fixture(params=["google", "microsoft"])
def side(request, settings, google_server, microsoft_server):
    if request.param == "google":
        return connected(google_server, GoogleProvider(), settings, REDIRECT)
    return connected(microsoft_server, MicrosoftProvider(), settings, MS_REDIRECT)


@pytest.fixture
def gside(settings, google_server):
    return connected(google_server, GoogleProvider(), settings, REDIRECT)


@pytest.fixture
def mside(settings, microsoft_server):
    return connected(microsoft_server, MicrosoftProvider(), settings, MS_REDIRECT)


def busy(side, start, end):
    return side.provider.busy(side.token, "primary", start, end)


def changes(side, cursor, start=DAY, end=DAY + dt.timedelta(days=7)):
    return side.provider.changes(side.token, "primary", cursor, start, end)


# --- busy() -------------------------------------------------------------------------------------
def test_a_persons_event_is_busy_in_an_overlapping_window_only(side):
    event_id = side.fake.add_event(side.account, at(10), at(11), title="Dentist")
    blocks = busy(side, at(9, 30), at(10, 30))
    assert blocks == [BusyBlock(start=at(10), end=at(11), remote_id=event_id, summary="Dentist", ours=False)]
    assert blocks[0].start.tzinfo is not None and blocks[0].start.utcoffset() == dt.timedelta(0)
    assert busy(side, at(10, 59), at(12)) == blocks  # overlapping at the end
    assert busy(side, at(11), at(12)) == []  # [start, end): touching is not overlapping
    assert busy(side, at(8), at(10)) == []
    assert busy(side, at(10, day=1), at(11, day=1)) == []


def test_events_we_wrote_are_ours(side):
    theirs = side.fake.add_event(side.account, at(9), at(10), title="Standup")
    [outcome] = side.provider.apply(side.token, "primary", [upsert(1, at(13))])
    assert outcome.error is None
    blocks = {b.remote_id: b for b in busy(side, DAY, DAY + dt.timedelta(days=1))}
    assert set(blocks) == {theirs, outcome.remote_id}
    assert blocks[outcome.remote_id].ours and blocks[outcome.remote_id].summary == "Booking 1"
    assert (blocks[outcome.remote_id].start, blocks[outcome.remote_id].end) == (
        at(13),
        at(14),
    )  # written in Berlin time, read in UTC
    assert not blocks[theirs].ours


def test_free_transparent_and_deleted_events_do_not_block(side):
    side.fake.add_event(side.account, at(9), at(10), title="Focus (free)", busy=False)
    gone = side.fake.add_event(side.account, at(11), at(12), title="Gone")
    side.fake.delete_event(side.account, gone)
    freed = side.fake.add_event(side.account, at(13), at(14), title="Was busy")
    side.fake.set_busy(side.account, freed, False)
    kept = side.fake.add_event(side.account, at(15), at(16))
    assert [b.remote_id for b in busy(side, DAY, DAY + dt.timedelta(days=1))] == [kept]


def test_all_day_events_block_midnight_to_midnight_utc(side):
    event_id = side.fake.add_event(side.account, DAY.date(), (DAY + dt.timedelta(days=1)).date(), title="Offsite")
    [block] = busy(side, at(12), at(13))
    assert (block.remote_id, block.start, block.end, block.summary) == (
        event_id,
        DAY,
        DAY + dt.timedelta(days=1),
        "Offsite",
    )
    assert busy(side, at(0, day=1), at(1, day=1)) == []


def test_busy_follows_pages(side):
    side.fake.max_page_size = 2
    ids = {side.fake.add_event(side.account, at(8 + i), at(8 + i, 30)) for i in range(5)}
    before = len(side.fake.calls())
    assert {b.remote_id for b in busy(side, DAY, DAY + dt.timedelta(days=1))} == ids
    assert len(side.fake.calls()) - before == 3


@pytest.mark.parametrize("status, error", [(503, TransientError), (429, TransientError), (403, PermanentError)])
def test_busy_errors_are_classified(side, status, error):
    if status == 403 and side.fake.provider == "google":
        side.fake.inject(403, path="/calendar/v3/calendars/", code="forbidden")
    else:
        side.fake.inject(status)
    with pytest.raises(error):
        busy(side, DAY, DAY + dt.timedelta(days=1))


def test_busy_with_an_expired_token_is_authorization_lost(side):
    side.fake.expire_access_tokens()
    with pytest.raises(AuthorizationLost):
        busy(side, DAY, DAY + dt.timedelta(days=1))


def test_busy_on_an_unknown_calendar_is_permanent(side):
    with pytest.raises(PermanentError):
        side.provider.busy(side.token, "no-such-calendar", DAY, DAY + dt.timedelta(days=1))


# --- changes() ----------------------------------------------------------------------------------
def test_full_read_then_nothing_changed_costs_one_request(side):
    first = side.fake.add_event(side.account, at(9), at(10))
    side.fake.add_event(side.account, at(9, day=30), at(10, day=30))  # outside the window
    full = changes(side, None)
    assert isinstance(full, Changes) and full.full and full.cursor
    assert [b.remote_id for b in full.blocks] == [first]
    before = len(side.fake.calls())
    again = changes(side, full.cursor)
    assert len(side.fake.calls()) - before == 1
    assert (again.blocks, again.removed, again.full) == ([], [], False)
    assert again.cursor


def test_incremental_read_reports_adds_moves_and_deletes(side):
    moved = side.fake.add_event(side.account, at(9), at(10))
    deleted = side.fake.add_event(side.account, at(11), at(12))
    freed = side.fake.add_event(side.account, at(13), at(14))
    leaving = side.fake.add_event(side.account, at(15), at(16))
    steady = side.fake.add_event(side.account, at(17), at(18))
    cursor = changes(side, None).cursor

    added = side.fake.add_event(side.account, at(9, day=1), at(10, day=1), title="New")
    side.fake.move_event(side.account, moved, at(10), at(11, 30))
    side.fake.delete_event(side.account, deleted)
    side.fake.set_busy(side.account, freed, False)
    side.fake.move_event(side.account, leaving, at(15, day=60), at(16, day=60))  # out of the window
    result = changes(side, cursor)

    assert not result.full and result.cursor
    blocks = {b.remote_id: b for b in result.blocks}
    assert set(blocks) == {added, moved}
    assert (blocks[moved].start, blocks[moved].end) == (at(10), at(11, 30))
    assert blocks[added].summary == "New" and not blocks[added].ours
    assert {deleted, freed, leaving} <= set(result.removed) and steady not in result.removed
    # and the next round starts from there
    assert (changes(side, result.cursor).blocks, changes(side, result.cursor).removed) == ([], [])


def test_our_own_writes_show_up_as_ours_in_changes(side):
    cursor = changes(side, None).cursor
    [outcome] = side.provider.apply(side.token, "primary", [upsert(7, at(12))])
    result = changes(side, cursor)
    [block] = [b for b in result.blocks if b.remote_id == outcome.remote_id]
    # Graph's delta carries no extended properties (and a transactionId proves nothing): there the
    # pull knows our events by the remote ids it stored.
    assert block.ours == (side.fake.provider == "google") and (block.start, block.end) == (at(12), at(13))


def test_an_expired_cursor_recovers_with_a_full_read(side):
    kept = side.fake.add_event(side.account, at(9), at(10))
    cursor = changes(side, None).cursor
    side.fake.delete_event(side.account, kept)
    fresh = side.fake.add_event(side.account, at(11), at(12))
    side.fake.expire_cursors()
    result = changes(side, cursor)
    assert result.full and result.cursor and result.cursor != cursor
    assert [b.remote_id for b in result.blocks] == [fresh]
    assert changes(side, result.cursor).blocks == []


def test_changes_follow_pages(side):
    side.fake.max_page_size = 2
    ids = {side.fake.add_event(side.account, at(8 + i), at(8 + i, 30)) for i in range(5)}
    before = len(side.fake.calls())
    full = changes(side, None)
    assert {b.remote_id for b in full.blocks} == ids and full.full
    assert len(side.fake.calls()) - before == 3
    more = {side.fake.add_event(side.account, at(8 + i, day=2), at(8 + i, 30, day=2)) for i in range(3)}
    before = len(side.fake.calls())
    result = changes(side, full.cursor)
    assert {b.remote_id for b in result.blocks} == more
    assert len(side.fake.calls()) - before == 2


def test_incremental_errors_other_than_expiry_are_raised(side):
    cursor = changes(side, None).cursor
    side.fake.inject(503)
    with pytest.raises(TransientError):
        changes(side, cursor)


# --- Google specifics ------------------------------------------------------------------------------
def test_google_requests_use_the_documented_parameters(gside):
    gside.fake.add_event(gside.account, at(9), at(10))
    busy(gside, at(8, 15), at(12))
    [call] = gside.fake.calls()
    q = call["query"]
    assert (q["timeMin"], q["timeMax"]) == ("2030-05-06T08:15:00Z", "2030-05-06T12:00:00Z")
    assert (q["singleEvents"], q["showDeleted"], q["maxResults"]) == ("true", "false", "2500") and "fields" in q
    gside.fake.reset_log()
    cursor = changes(gside, None).cursor
    changes(gside, cursor)
    full, incremental = (c["query"] for c in gside.fake.calls())
    assert (
        "syncToken" not in full and full["showDeleted"] == "true" and full["singleEvents"] == "true"
    )  # as the incremental read
    assert (
        incremental["syncToken"] == cursor
        and incremental["showDeleted"] == "true"
        and incremental["singleEvents"] == "true"
    )
    assert "timeMin" not in incremental and "timeMax" not in incremental


def test_google_full_read_past_the_page_bound_is_transient(gside):
    gside.fake.max_page_size = 1
    for i in range(101):
        gside.fake.add_event(gside.account, at(0, i * 10), at(0, i * 10 + 5))
    with pytest.raises(TransientError):
        changes(gside, None)
    assert len(gside.fake.calls()) == 100


def _google_get(fake, token, path, **params):
    return requests.get(
        f"{fake.url}calendar/v3/{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_fake_google_sync_tokens_as_documented(gside):
    fake, token = gside.fake, gside.token
    kept = gside.fake.add_event(gside.account, at(9), at(10))
    first = _google_get(
        fake, token, "calendars/primary/events", timeMin=at(0).isoformat(), timeMax=at(0, day=1).isoformat()
    ).json()
    assert [e["id"] for e in first["items"]] == [kept] and first["nextSyncToken"] and "nextPageToken" not in first
    sync = first["nextSyncToken"]
    clash = _google_get(fake, token, "calendars/primary/events", syncToken=sync, timeMin=at(0).isoformat())
    assert clash.status_code == 400 and clash.json()["error"]["errors"][0]["reason"] == "invalid"
    gside.fake.delete_event(gside.account, kept)
    delta = _google_get(fake, token, "calendars/primary/events", syncToken=sync).json()
    assert delta["items"] == [
        {"kind": "calendar#event", "etag": delta["items"][0]["etag"], "id": kept, "status": "cancelled"}
    ]
    bogus = _google_get(fake, token, "calendars/primary/events", syncToken="not-a-token")
    assert bogus.status_code == 410 and bogus.json()["error"]["errors"][0]["reason"] == "fullSyncRequired"
    fake.expire_cursors()
    assert _google_get(fake, token, "calendars/primary/events", syncToken=delta["nextSyncToken"]).status_code == 410
    # showDeleted returns the cancelled event in a window; without it, it is gone
    shown = _google_get(fake, token, "calendars/primary/events", timeMin=at(0).isoformat(), showDeleted="true").json()
    assert [e["status"] for e in shown["items"]] == ["cancelled"]
    assert _google_get(fake, token, "calendars/primary/events", timeMin=at(0).isoformat()).json()["items"] == []


def test_fake_google_free_busy(gside):
    fake = gside.fake
    gside.fake.add_event(gside.account, at(9), at(10))
    gside.fake.add_event(gside.account, at(9, 30), at(11))  # overlapping: merged
    gside.fake.add_event(gside.account, at(12), at(13), busy=False)
    answer = requests.post(
        f"{fake.url}calendar/v3/freeBusy",
        json={
            "timeMin": at(0).isoformat(),
            "timeMax": at(0, day=1).isoformat(),
            "items": [{"id": "primary"}, {"id": "nobody@example.com"}],
        },
        headers={"Authorization": f"Bearer {gside.token}"},
        timeout=10,
    ).json()
    assert answer["calendars"]["primary"]["busy"] == [{"start": "2030-05-06T09:00:00Z", "end": "2030-05-06T11:00:00Z"}]
    assert answer["calendars"]["nobody@example.com"]["errors"][0]["reason"] == "notFound"


class _Receiver:
    """A local HTTP endpoint recording what is POSTed to it (a push / notification receiver)."""

    def __init__(self, echo_validation=False):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                headers = requests.structures.CaseInsensitiveDict(self.headers.items())  # as HTTP compares names
                received.append({"headers": headers, "body": body, "query": query})
                data = query.get("validationToken", "").encode() if echo_validation else b""
                self.send_response(200 if echo_validation and data else 202)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        # shutdown() waits for the loop's next poll: 0.5 s by default
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_fake_google_push_channels(gside):
    fake = gside.fake
    receiver = _Receiver()
    try:
        from calendar_sync.providers.google import _service

        service = _service(fake.url)
        http = gside.provider._http(gside.token)
        channel = (
            service.events()
            .watch(
                calendarId="primary",
                body={"id": "chan-1", "type": "web_hook", "address": receiver.url, "token": "secret"},
            )
            .execute(http=http)
        )
        assert channel["id"] == "chan-1" and channel["resourceId"] and int(channel["expiration"]) > 0
        assert (
            fake.push_channels()["chan-1"]["address"] == receiver.url and not fake.push_channels()["chan-1"]["stopped"]
        )
        fake.notify("chan-1")
        headers = receiver.received[0]["headers"]
        assert headers["X-Goog-Channel-ID"] == "chan-1" and headers["X-Goog-Channel-Token"] == "secret"
        assert headers["X-Goog-Resource-ID"] == channel["resourceId"] and headers["X-Goog-Resource-State"] == "exists"
        assert headers["X-Goog-Message-Number"] == "1"
        service.channels().stop(body={"id": "chan-1", "resourceId": channel["resourceId"]}).execute(http=http)
        assert fake.push_channels()["chan-1"]["stopped"]
        with pytest.raises(Exception) as stopped_twice:
            service.channels().stop(body={"id": "chan-1", "resourceId": channel["resourceId"]}).execute(http=http)
        assert stopped_twice.value.resp.status == 404
        not_https = requests.post(
            f"{fake.url}calendar/v3/calendars/primary/events/watch",
            json={"id": "chan-2", "type": "web_hook", "address": "http://example.com/hook"},
            headers={"Authorization": f"Bearer {gside.token}"},
            timeout=10,
        )
        assert not_https.status_code == 400
    finally:
        receiver.close()


# --- Microsoft specifics ---------------------------------------------------------------------------
def test_graph_busy_asks_for_utc_and_our_property(mside):
    mside.fake.add_event(DEFAULT_ACCOUNT, at(9), at(10), time_zone="W. Europe Standard Time")
    [block] = busy(mside, DAY, DAY + dt.timedelta(days=1))
    assert (block.start, block.end) == (at(9), at(10))
    [call] = mside.fake.calls()
    assert call["path"] == "/v1.0/me/calendar/calendarView"
    assert (
        call["query"]["startDateTime"] == "2030-05-06T00:00:00Z"
        and call["query"]["endDateTime"] == "2030-05-07T00:00:00Z"
    )
    assert (
        "singleValueExtendedProperties" in call["query"]["$expand"] and "transactionId" not in call["query"]["$select"]
    )


def test_graph_busy_on_a_named_calendar(mside):
    team = mside.fake.calendar_id(DEFAULT_ACCOUNT, "Team")
    event_id = mside.fake.add_event(DEFAULT_ACCOUNT, at(9), at(10), calendar=team)
    mside.fake.add_event(DEFAULT_ACCOUNT, at(11), at(12))  # default calendar
    assert [b.remote_id for b in mside.provider.busy(mside.token, team, DAY, DAY + dt.timedelta(days=1))] == [event_id]
    full = mside.provider.changes(mside.token, team, None, DAY, DAY + dt.timedelta(days=1))
    assert [b.remote_id for b in full.blocks] == [event_id]


def test_graph_cancelled_meetings_and_working_elsewhere_do_not_block(mside):
    mside.fake.add_event(DEFAULT_ACCOUNT, at(9), at(10), is_cancelled=True)
    mside.fake.add_event(DEFAULT_ACCOUNT, at(10), at(11), show_as="workingElsewhere")
    tentative = mside.fake.add_event(DEFAULT_ACCOUNT, at(11), at(12), show_as="tentative")
    assert [b.remote_id for b in busy(mside, DAY, DAY + dt.timedelta(days=1))] == [tentative]


def test_graph_delta_page_bound_hands_back_the_next_link(mside):
    mside.fake.max_page_size = 1
    ids = [mside.fake.add_event(mside.account, at(0, i * 10), at(0, i * 10 + 5)) for i in range(103)]
    first = changes(mside, None)
    assert first.full and len(first.blocks) == 100 and "$skiptoken" in first.cursor
    rest = changes(mside, first.cursor)
    assert not rest.full and {b.remote_id for b in rest.blocks} == set(ids[100:]) and "$deltatoken" in rest.cursor


def test_graph_cursor_off_the_graph_root_is_never_followed(mside):
    full = changes(mside, None)
    foreign = full.cursor.replace("127.0.0.1", "localhost")
    mside.fake.reset_log()
    result = changes(mside, foreign)
    assert result.full
    [call] = mside.fake.calls()
    assert "$deltatoken" not in call["query"] and call["query"]["startDateTime"]


def test_graph_fullsyncrequired_code_also_recovers(mside):
    cursor = changes(mside, None).cursor
    mside.fake.expire_cursors(code="fullSyncRequired")
    assert changes(mside, cursor).full


def _graph(fake, token, method, path, **kw):
    headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
    return requests.request(method, f"{fake.url}v1.0/{path}", headers=headers, timeout=10, **kw)


def test_fake_graph_calendar_view_and_delta_as_documented(mside):
    fake, token = mside.fake, mside.token
    no_window = _graph(fake, token, "GET", "me/calendarView")
    assert no_window.status_code == 400 and no_window.json()["error"]["code"] == "ErrorInvalidParameter"
    event_id = fake.add_event(DEFAULT_ACCOUNT, at(9), at(10), time_zone="Pacific Standard Time")
    window = {"startDateTime": at(0).isoformat(), "endDateTime": at(0, day=1).isoformat()}
    pacific = _graph(
        fake,
        token,
        "GET",
        "me/calendar/calendarView",
        params=window,
        headers={"Prefer": 'outlook.timezone="Pacific Standard Time"'},
    )
    assert pacific.json()["value"][0]["start"] == {
        "dateTime": "2030-05-06T02:00:00.0000000",
        "timeZone": "Pacific Standard Time",
    }
    utc = _graph(fake, token, "GET", "me/calendar/calendarView", params=window).json()["value"][0]
    assert utc["start"] == {"dateTime": "2030-05-06T09:00:00.0000000", "timeZone": "UTC"}
    # delta: a round, then only changes; deletions as @removed; expired tokens answer 410
    first = _graph(fake, token, "GET", "me/calendarView/delta", params=window).json()
    assert [e["id"] for e in first["value"]] == [event_id] and first["@odata.deltaLink"].startswith(fake.url)
    assert _graph(fake, token, "GET", "me/calendarView/delta", params={**window, "$select": "id"}).status_code == 400
    fake.delete_event(DEFAULT_ACCOUNT, event_id)
    second = requests.get(first["@odata.deltaLink"], headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    assert second["value"] == [
        {"@odata.type": "#microsoft.graph.event", "id": event_id, "@removed": {"reason": "deleted"}}
    ]
    fake.expire_cursors()
    gone = requests.get(second["@odata.deltaLink"], headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "SyncStateNotFound"


def test_fake_graph_get_schedule(mside):
    fake = mside.fake
    fake.add_event(DEFAULT_ACCOUNT, at(9), at(10), title="Review")
    fake.add_event(DEFAULT_ACCOUNT, at(10), at(10, 30), show_as="tentative")
    answer = _graph(
        fake,
        mside.token,
        "POST",
        "me/calendar/getSchedule",
        json={
            "schedules": [DEFAULT_ACCOUNT, "stranger@contoso.com"],
            "startTime": {"dateTime": "2030-05-06T08:00:00", "timeZone": "UTC"},
            "endTime": {"dateTime": "2030-05-06T11:00:00", "timeZone": "UTC"},
            "availabilityViewInterval": 30,
        },
    )
    assert answer.status_code == 200
    mine, stranger = answer.json()["value"]
    assert mine["availabilityView"] == "002210"
    assert [(i["status"], i["start"]["dateTime"]) for i in mine["scheduleItems"]] == [
        ("busy", "2030-05-06T09:00:00.0000000"),
        ("tentative", "2030-05-06T10:00:00.0000000"),
    ]
    assert stranger["error"]["responseCode"]


def test_fake_graph_subscriptions(mside):
    fake, token = mside.fake, mside.token
    receiver = _Receiver(echo_validation=True)
    try:
        fake.validate_subscriptions = True
        expiry = (dt.datetime.now(UTC) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": receiver.url,
            "resource": "me/events",
            "expirationDateTime": expiry,
            "clientState": "s3cret",
        }
        created = _graph(fake, token, "POST", "subscriptions", json=body)
        assert created.status_code == 201, created.text
        sub = created.json()
        assert sub["id"] in fake.subscriptions and receiver.received[0]["query"]["validationToken"]
        too_long = _graph(
            fake,
            token,
            "POST",
            "subscriptions",
            json={**body, "expirationDateTime": (dt.datetime.now(UTC) + dt.timedelta(days=4)).isoformat()},
        )
        assert too_long.status_code == 400
        event_id = fake.add_event(DEFAULT_ACCOUNT, at(9), at(10))
        fake.notify(sub["id"], event_id, change_type="created")
        note = json.loads(receiver.received[-1]["body"])["value"][0]
        assert (note["subscriptionId"], note["clientState"], note["resourceData"]["id"], note["changeType"]) == (
            sub["id"],
            "s3cret",
            event_id,
            "created",
        )
        assert _graph(fake, token, "DELETE", f"subscriptions/{sub['id']}").status_code == 204
        assert fake.push_channels()[sub["id"]]["stopped"]
        assert _graph(fake, token, "DELETE", f"subscriptions/{sub['id']}").status_code == 404
        assert [c["path"] for c in fake.calls()][-2:] == [f"/v1.0/subscriptions/{sub['id']}"] * 2
    finally:
        receiver.close()
