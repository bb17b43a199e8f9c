"""Apple iCloud / any CalDAV server, against real servers (Radicale and Xandikos) on loopback.

Writes are counted by a proxy in front of the server, never by patching our code.
"""

import datetime as dt
import http.server
import json
import threading

import pytest
from django.core import mail
from django.utils import timezone

from calendar_sync import channels, flows, reads, sync, tasks
from calendar_sync.models import CalendarToken, SyncRecord
from calendar_sync.owners import Owner
from calendar_sync.providers import get_provider
from calendar_sync.providers.caldav import credential
from tests.caldav_servers import CountingProxy, Radicale, Xandikos

pytestmark = pytest.mark.django_db
SERVERS = {"radicale": Radicale, "xandikos": Xandikos}
OUTSIDE = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//phone//EN
BEGIN:VEVENT
UID:dentist-1@phone
DTSTAMP:20260101T000000Z
DTSTART:{start}
DTEND:{end}
SUMMARY:Dentist
END:VEVENT
END:VCALENDAR
"""


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(request):
    with SERVERS[request.param]() as running:
        yield running


@pytest.fixture
def proxy(server):
    proxy = CountingProxy(server.url)
    yield proxy
    proxy.close()
    calendar = server.calendar()
    for obj in calendar.events():  # every test starts from an empty calendar
        obj.delete()


@pytest.fixture
def private_ok(settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}


@pytest.fixture
def connected(server, proxy, private_ok, api, run):
    response = run(
        api.post,
        "/api/calendar-sync/connections/caldav",
        {"server_url": proxy.url, "username": server.username, "password": server.password},
        format="json",
    )
    assert response.status_code == 201, response.content
    proxy.reset()
    return response.json()


def stamp(value):
    return value.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def add_outside_event(server, start, end):
    """Another client of the account (the member's phone) adds an event."""
    server.calendar().save_event(OUTSIDE.format(start=stamp(start), end=stamp(end)))


def test_connect_finds_the_calendar_and_never_returns_the_password(server, connected, api, proxy):
    assert connected["status"] == "active" and connected["provider"] == "caldav" and connected["write"]
    assert server.password not in str(connected)
    token = CalendarToken.objects.get()
    assert token.calendar_id.startswith(proxy.url) and token.calendar_id.endswith("/")
    assert token.expires_at is None
    calendars = api.get("/api/calendar-sync/calendars").json()
    assert [c["id"] for c in calendars] == [token.calendar_id]
    assert calendars[0]["selected"] and calendars[0]["primary"]


def test_lifecycle_costs_three_writes_and_leaves_nothing(server, connected, api, member, make_booking, run, proxy):
    booking = make_booking(member)
    assert run(api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    (event,) = server.events()
    assert "Deep work" in event and "@calendar-sync" in event
    later = booking.start + timezone.timedelta(hours=5)
    run(
        api.patch,
        f"/api/bookings/{booking.pk}/",
        {"start": later.isoformat(), "end": (later + timezone.timedelta(hours=1)).isoformat()},
        format="json",
    )
    (event,) = server.events()
    assert stamp(later) in event or later.astimezone(dt.UTC).strftime("%H%M%S") in event
    run(api.post, f"/api/bookings/{booking.pk}/cancel/")
    assert [method for method, _ in proxy.writes()] == ["PUT", "PUT", "DELETE"]
    puts = [(m, p) for m, p, _ in proxy.log if m == "PUT"]
    assert len(puts) == 2  # no refused attempt either: the update named the stored ETag
    assert server.events() == []
    assert SyncRecord.objects.get().state == SyncRecord.State.SYNCED


def test_a_lost_answer_to_a_create_retried_leaves_one_event(server, connected, api, member, make_booking, run, proxy):
    booking = make_booking(member)
    proxy.lose_next("PUT")
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    assert len(server.events()) == 1  # the server made it; we never heard
    sync.sync_object("booking", booking.pk)  # the retry
    # The retry's create met the event (412), read its ETag and brought it up to date in place.
    # (caldav 2.0 probes a dropped connection with a GET when no sign-in is set up: not a write)
    calls = [(m, s) for m, _, s in proxy.log if m != "GET"]
    assert calls == [("PUT", 201), ("PUT", 412), ("HEAD", 200), ("PUT", 204)]
    (event,) = server.events()
    assert "Deep work" in event
    record = SyncRecord.objects.get()
    assert record.state == SyncRecord.State.SYNCED and record.remote_id
    run(api.post, f"/api/bookings/{booking.pk}/cancel/")
    assert server.events() == []


def test_busy_shows_an_outside_event_and_not_ours(server, connected, api, member, make_booking, run):
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    outside = booking.start + timezone.timedelta(hours=3)
    add_outside_event(server, outside, outside + timezone.timedelta(hours=1))
    start, end = booking.start - timezone.timedelta(days=1), booking.start + timezone.timedelta(days=1)
    response = api.get("/api/calendar-sync/busy", {"start": start.isoformat(), "end": end.isoformat()})
    assert response.status_code == 200, response.content
    spans = [(b["start"], b["end"]) for b in response.json()["busy"]]
    assert len(spans) == 1
    assert dt.datetime.fromisoformat(spans[0][0].replace("Z", "+00:00")) == outside


def test_incremental_reads_see_an_event_another_client_added(server, connected):
    token = CalendarToken.objects.get()
    provider = get_provider("caldav")
    now = timezone.now()
    start, end = now - timezone.timedelta(days=1), now + timezone.timedelta(days=30)
    first = provider.changes(token.access_token, token.calendar_id, None, start, end)
    assert first.full and first.blocks == []
    outside = now.replace(microsecond=0) + timezone.timedelta(days=2)
    add_outside_event(server, outside, outside + timezone.timedelta(hours=1))
    second = provider.changes(token.access_token, token.calendar_id, first.cursor, start, end)
    assert not second.full
    assert [(b.start, b.summary, b.ours) for b in second.blocks] == [(outside, "Dentist", False)]
    third = provider.changes(token.access_token, token.calendar_id, second.cursor, start, end)
    assert not third.full and third.blocks == [] and third.removed == []


def test_without_sync_collection_an_unchanged_calendar_costs_one_propfind(server, connected, proxy):
    proxy.refuse_sync = True
    token = CalendarToken.objects.get()
    provider = get_provider("caldav")
    now = timezone.now()
    start, end = now - timezone.timedelta(days=1), now + timezone.timedelta(days=30)
    first = provider.changes(token.access_token, token.calendar_id, None, start, end)
    assert first.full and "etags" in json.loads(first.cursor)
    proxy.reset()
    again = provider.changes(token.access_token, token.calendar_id, first.cursor, start, end)
    assert (again.full, again.blocks, again.cursor) == (False, [], first.cursor)
    assert [m for m, _, _ in proxy.log] == ["PROPFIND"]  # ETags only: no event was read
    outside = now.replace(microsecond=0) + timezone.timedelta(days=2)
    add_outside_event(server, outside, outside + timezone.timedelta(hours=1))
    changed = provider.changes(token.access_token, token.calendar_id, again.cursor, start, end)
    assert changed.full and [(b.start, b.summary) for b in changed.blocks] == [(outside, "Dentist")]


@pytest.mark.parametrize("server", ["radicale"], indirect=True)
def test_a_wrong_password_needs_reauth_and_sends_one_email(server, connected, api, member, make_booking, run):
    token = CalendarToken.objects.get()
    calendar_id = token.calendar_id
    wrong = credential(json.loads(token.access_token)["url"], server.username, "old one")
    CalendarToken.objects.filter(pk=token.pk).update(access_token=wrong, refresh_token=wrong)  # the password changed
    mail.outbox.clear()
    for i in range(2):
        booking = make_booking(member, hours_from_now=24 + 3 * i)
        assert run(api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    token.refresh_from_db()
    assert token.status == CalendarToken.Status.NEEDS_REAUTH
    assert len(mail.outbox) == 1 and "Reconnect" in mail.outbox[0].subject
    assert set(SyncRecord.objects.values_list("state", flat=True)) == {SyncRecord.State.NOT_CONNECTED}
    assert "old one" not in token.last_error
    # Reconnecting with the right password resumes: the calendar is kept and the waiting bookings arrive.
    body = {"server_url": json.loads(wrong)["url"], "username": server.username, "password": server.password}
    assert run(api.post, "/api/calendar-sync/connections/caldav", body, format="json").status_code == 201
    token = CalendarToken.objects.get()  # the same account connected again: still one connection
    assert token.status == CalendarToken.Status.ACTIVE and token.calendar_id == calendar_id and token.write
    assert len(server.events()) == 2 and len(mail.outbox) == 1


@pytest.mark.parametrize("server", ["radicale"], indirect=True)
def test_connecting_with_a_wrong_password_is_a_400(server, proxy, private_ok, api):
    response = api.post(
        "/api/calendar-sync/connections/caldav",
        {"server_url": proxy.url, "username": server.username, "password": "nope"},
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_credentials" and "app-specific password" in body["detail"]
    assert "nope" not in str(body)
    assert not CalendarToken.objects.exists()


def test_the_icloud_preset_needs_no_url(api, private_ok):
    response = api.post(
        "/api/calendar-sync/connections/caldav", {"preset": "icloud", "username": "a", "password": "b"}, format="json"
    )
    assert response.status_code == 400  # no network here: but the preset was taken as the server
    assert response.json()["code"] in ("unreachable", "invalid_credentials")
    assert "server_url" in response.json() or "password" in response.json()
    missing = api.post("/api/calendar-sync/connections/caldav", {"username": "a", "password": "b"}, format="json")
    assert missing.status_code == 400 and missing.json()["code"] == "invalid" and "server_url" in missing.json()


def test_a_room_calendar_on_caldav_is_pulled_and_never_watched(
    server, proxy, private_ok, staff, workspace, run, settings
):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "PUSH_URL": "https://hub.example.com"}
    outside = timezone.now().replace(microsecond=0) + timezone.timedelta(days=3)
    add_outside_event(server, outside, outside + timezone.timedelta(hours=1))
    owner = Owner("workspace", str(workspace.pk))
    token, work = flows.connect_caldav(owner, staff, proxy.url, server.username, server.password)
    run(tasks.schedule, work)  # backfill, pull, push upkeep
    assert channels.renew_all() == 0  # CalDAV has no push: pulled only, and nothing fails trying
    token.refresh_from_db()
    assert token.push_channel == "" and token.pull_cursor and token.pulled_at
    window = (outside - timezone.timedelta(hours=1), outside + timezone.timedelta(hours=2))
    assert [(b.start, b.end) for b in reads.external_busy(owner, *window)] == [
        (outside, outside + timezone.timedelta(hours=1))
    ]
    assert reads.pull(owner)["full"] is False  # the next pull is incremental (sync-collection)


class NotCalDAV(http.server.BaseHTTPRequestHandler):
    """A web server that answers PROPFIND with a web page."""

    def log_message(self, *args):
        pass

    def do_PROPFIND(self):
        body = b"<html><body>Welcome</body></html>"
        self.send_response(207)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_server_that_is_not_caldav_is_a_400_not_a_500(private_ok, api):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotCalDAV)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        response = api.post(
            "/api/calendar-sync/connections/caldav",
            {"server_url": f"http://127.0.0.1:{server.server_address[1]}/", "username": "a", "password": "b"},
            format="json",
        )
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 400, response.content
    assert "server_url" in response.json() and not CalendarToken.objects.exists()
