"""Every calendar a member has at once: Google (where bookings go) + Outlook + a CalDAV account (a real
Radicale on loopback) + an ICS link (a loopback feed server).

Busy times show the outside events of all four and none of ours — wherever ours show up again: our
Google events in Google's secret iCal address (UID `<key>@google.com`), our CalDAV events read back
over CalDAV or in a feed (UID `<key>@calendar-sync`). A confirmation writes only to Google; making the
CalDAV connection the write one moves the upcoming events there.
"""

import datetime as dt
import os
import socket
import urllib.parse

import icalendar
import pytest
from django.utils import timezone

from bookings.models import Booking
from calendar_sync import reads
from calendar_sync.models import CalendarToken
from calendar_sync.owners import Owner
from tests.caldav_servers import IcsServer, Radicale, free_port
from tests.helpers import GOOGLE_ACCOUNT, MS_ACCOUNT, client_for, connect, event_key, landing

# Busy reads run in threads with their own database connections: they must see committed rows.
pytestmark = pytest.mark.django_db(transaction=True)
HOUR = timezone.timedelta(hours=1)
EMPTY = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nEND:VCALENDAR\r\n"


@pytest.fixture(scope="module")
def radicale():
    with Radicale() as running:
        yield running


@pytest.fixture
def caldav(radicale):
    yield radicale
    for obj in radicale.calendar().events():  # every test starts from an empty calendar
        obj.delete()


@pytest.fixture
def feed():
    server = IcsServer(EMPTY)
    yield server
    server.close()


@pytest.fixture
def private_ok(settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}


@pytest.fixture
def four(fake_google, fake_microsoft, caldav, feed, private_ok, api, run):
    """Google first (the write one), then Outlook, the CalDAV account and the ICS link: {name: connection id}."""
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    assert landing(run(connect, api, fake_microsoft, add=True))["calendar_sync"] == "connected"
    body = {"server_url": caldav.url, "username": caldav.username, "password": caldav.password}
    response = run(api.post, "/api/calendar-sync/connections/caldav", body, format="json")
    assert response.status_code == 201, response.content
    response = run(api.post, "/api/calendar-sync/connections/ics", {"url": feed.url}, format="json")
    assert response.status_code == 201, response.content
    rows = {row["provider"]: row for row in api.get("/api/calendar-sync/connections/").json()}
    assert set(rows) == {"google", "microsoft", "caldav", "ics"}
    assert [p for p, row in rows.items() if row["write"]] == ["google"]
    assert all(row["conflicts"] and row["status"] == "active" for row in rows.values())
    assert len(api.get("/api/calendar-sync/status").json()["connections"]) == 4
    fake_google.reset_log()
    fake_microsoft.reset_log()
    return {name: rows[name]["id"] for name in rows}


def stamp(value):
    return value.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def vcalendar(*events):
    """An iCalendar document of (uid, start, end, title) events."""
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//phone//EN")
    calendar.add("version", "2.0")
    for uid, start, end, title in events:
        event = icalendar.Event()
        event.add("uid", uid)
        event.add("dtstamp", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        event.add("dtstart", start.astimezone(dt.UTC))
        event.add("dtend", end.astimezone(dt.UTC))
        event.add("summary", title)
        calendar.add_component(event)
    return calendar.to_ical()


def window(start, end):
    return "/api/calendar-sync/busy?" + urllib.parse.urlencode({"start": start.isoformat(), "end": end.isoformat()})


def spans(answer):
    return [(timezone.datetime.fromisoformat(b["start"]), b["connection"]) for b in answer["busy"]]


def confirmed(api, run, make_booking, member, hours, title):
    booking = make_booking(member, hours_from_now=hours, duration=1, title=title)
    assert run(api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    return Booking.objects.get(pk=booking.pk)


def titles(agenda):
    return sorted(e["title"].split(" — ")[0] for e in agenda)


def test_busy_shows_the_outside_events_of_all_four_and_none_of_ours(
    four, api, run, member, make_booking, fake_google, fake_microsoft, caldav, feed
):
    at = timezone.now().replace(minute=0, second=0, microsecond=0) + timezone.timedelta(days=2)
    booking = confirmed(api, run, make_booking, member, 48 + 8, "Deep work")
    # The confirmation wrote to Google only: one create, nothing at Outlook, nothing on the CalDAV server.
    assert [c["method"] for c in fake_google.calls(GOOGLE_ACCOUNT)] == ["POST"]
    assert fake_microsoft.calls() == [] and caldav.events() == []
    assert {status for status, _ in feed.hits} <= {200, 304}  # the feed is only ever read
    key = event_key(booking)
    fake_google.add_event(GOOGLE_ACCOUNT, at, at + HOUR, title="Dentist")
    fake_microsoft.add_event(MS_ACCOUNT, at + 2 * HOUR, at + 3 * HOUR, title="Client call")
    caldav.calendar().save_event(vcalendar(("school-run@phone", at + 4 * HOUR, at + 5 * HOUR, "School run")).decode())
    # The ICS link is Google's secret address of the same calendar, with a copy of an event we wrote
    # over CalDAV: both are ours, only the gym is outside.
    feed.body = vcalendar(
        ("gym-1@example.net", at + 6 * HOUR, at + 7 * HOUR, "Gym"),
        (f"{key}@google.com", booking.start, booking.end, "Deep work — The Loft"),
        (f"{key}@calendar-sync", booking.start, booking.end, "Deep work — The Loft"),
    )
    answer = api.get(window(at - HOUR, booking.end + HOUR)).json()
    assert answer["errors"] == []
    assert spans(answer) == [
        (at, four["google"]),
        (at + 2 * HOUR, four["microsoft"]),
        (at + 4 * HOUR, four["caldav"]),
        (at + 6 * HOUR, four["ics"]),
    ]  # the booking itself (in Google, and twice in the feed) is none of them


def test_making_the_caldav_connection_the_write_one_moves_the_upcoming_events(
    four, api, run, member, make_booking, fake_google, fake_microsoft, caldav, feed
):
    at = timezone.now().replace(minute=0, second=0, microsecond=0) + timezone.timedelta(days=1)
    fake_google.add_event(GOOGLE_ACCOUNT, at, at + HOUR, title="Dentist")
    bookings = [confirmed(api, run, make_booking, member, hours, f"Desk {hours}") for hours in (30, 54)]
    assert titles(fake_google.agenda(GOOGLE_ACCOUNT)) == ["Dentist", "Desk 30", "Desk 54"]
    response = run(api.patch, f"/api/calendar-sync/connections/{four['caldav']}/", {"write": True}, format="json")
    assert response.status_code == 200 and response.json()["write"] is True
    assert titles(fake_google.agenda(GOOGLE_ACCOUNT)) == ["Dentist"]  # Google holds none of ours
    held = [icalendar.Calendar.from_ical(text).walk("VEVENT")[0] for text in caldav.events()]
    assert sorted(str(e["SUMMARY"]).split(" — ")[0] for e in held) == ["Desk 30", "Desk 54"]
    assert sorted(str(e["UID"]) for e in held) == sorted(f"{event_key(b)}@calendar-sync" for b in bookings)
    assert fake_microsoft.calls() == []
    assert api.get("/api/calendar-sync/status").json()["provider"] == "caldav"
    assert CalendarToken.objects.get(write=True).pk == CalendarToken.objects.get(provider="caldav").pk
    # Busy now reads ours back from the CalDAV server (and the feed re-publishes them): still none of ours.
    feed.body = vcalendar(*[(f"{event_key(b)}@calendar-sync", b.start, b.end, b.title) for b in bookings])
    answer = api.get(window(at - HOUR, bookings[-1].end + HOUR)).json()
    assert answer["errors"] == [] and spans(answer) == [(at, four["google"])]
    # From now on a change goes to the CalDAV server only.
    fake_google.reset_log()
    assert run(api.post, f"/api/bookings/{bookings[0].pk}/cancel/").status_code == 200
    assert [str(icalendar.Calendar.from_ical(t).walk("VEVENT")[0]["UID"]) for t in caldav.events()] == [
        f"{event_key(bookings[1])}@calendar-sync"
    ]
    assert fake_google.calls() == []


def test_an_ics_link_cannot_become_the_write_connection(four, api):
    response = api.patch(f"/api/calendar-sync/connections/{four['ics']}/", {"write": True}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "read_only"
    assert CalendarToken.objects.get(write=True).provider == "google"


def test_conflicts_off_leaves_the_caldav_and_ics_connections_unread(four, api, caldav, feed):
    at = timezone.now().replace(minute=0, second=0, microsecond=0) + timezone.timedelta(days=3)
    caldav.calendar().save_event(vcalendar(("call@phone", at, at + HOUR, "Call")).decode())
    feed.body = vcalendar(("gym@example.net", at + HOUR, at + 2 * HOUR, "Gym"))
    before = spans(api.get(window(at, at + 3 * HOUR)).json())
    assert before == [(at, four["caldav"]), (at + HOUR, four["ics"])]
    for name in ("caldav", "ics"):
        response = api.patch(f"/api/calendar-sync/connections/{four[name]}/", {"conflicts": False}, format="json")
        assert response.status_code == 200 and response.json()["conflicts"] is False
    hits = len(feed.hits)
    answer = api.get(window(at, at + 2 * HOUR)).json()  # another window: nothing cached answers it
    assert answer["busy"] == [] and answer["errors"] == [] and len(feed.hits) == hits


@pytest.mark.slow
def test_the_sandbox_caldav_server_connects_with_its_printed_account(api, run, settings, monkeypatch, tmp_path):
    """`dev.py serve`'s CalDAV server (Radicale): the account it prints connects, and only the sandbox
    allows loopback addresses."""
    import dev

    monkeypatch.setenv("CALENDAR_SYNC_ALLOW_PRIVATE_ADDRESSES", "0")  # restored after the test
    with socket.socket() as taken:  # a port in use: the sandbox runs on without a CalDAV server
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert dev.start_caldav_sandbox(taken.getsockname()[1], storage=tmp_path) is None
    assert os.environ["CALENDAR_SYNC_ALLOW_PRIVATE_ADDRESSES"] == "0"
    port = free_port()
    radicale = dev.start_caldav_sandbox(port, storage=tmp_path)
    try:
        assert os.environ["CALENDAR_SYNC_ALLOW_PRIVATE_ADDRESSES"] == "1"
        body = {"server_url": f"http://127.0.0.1:{port}/", "username": "sandbox", "password": "sandbox"}
        refused = api.post("/api/calendar-sync/connections/caldav", body, format="json")  # settings not yet loaded
        assert refused.status_code == 400 and refused.json()["code"] in ("insecure_url", "private_address")
        settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}  # as the sandbox's
        response = run(api.post, "/api/calendar-sync/connections/caldav", body, format="json")
        assert response.status_code == 201, response.content
        assert response.json()["calendar_id"] == f"http://127.0.0.1:{port}/sandbox/calendar/"
        assert response.json()["write"] and "password" not in response.json()
    finally:
        radicale.terminate()
        radicale.wait(10)


def test_staff_connect_a_caldav_server_as_a_rooms_calendar(
    caldav, private_ok, api, staff, workspace, member, make_booking, run, settings
):
    url = f"/api/calendar-sync/shared/workspace/{workspace.pk}/connections/caldav"
    body = {"server_url": caldav.url, "username": caldav.username, "password": caldav.password}
    assert api.post(url, body, format="json").status_code == 403  # members never connect a room's calendar
    staff_api = client_for(staff)
    assert staff_api.post(url.replace(str(workspace.pk), "999999"), body, format="json").status_code == 404
    wrong = staff_api.post(url, {**body, "password": "wrong"}, format="json")
    assert wrong.status_code == 400 and wrong.json()["code"] == "invalid_credentials"
    response = run(staff_api.post, url, body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["provider"] == "caldav" and caldav.password not in response.content.decode()
    status = staff_api.get(f"/api/calendar-sync/shared/workspace/{workspace.pk}/status").json()
    assert status["provider"] == "caldav" and status["connected"]
    assert CalendarToken.objects.filter(owner_kind="workspace").count() == 1
    # A confirmed booking reaches the room's CalDAV calendar (the member has no calendar at all).
    booking = confirmed(api, run, make_booking, member, 30, "Deep work")
    held = [icalendar.Calendar.from_ical(text).walk("VEVENT")[0] for text in caldav.events()]
    assert [str(e["UID"]) for e in held] == [f"{event_key(booking, 'workspace')}@calendar-sync"]
    # What others put in the room's calendar is pulled for the overlap rule; ours never is.
    at = booking.start + 3 * HOUR
    caldav.calendar().save_event(vcalendar(("cleaning@phone", at, at + HOUR, "Cleaning")).decode())
    owner = Owner("workspace", str(workspace.pk))
    reads.pull(owner)
    blocks = reads.external_busy(owner, booking.start - HOUR, at + 2 * HOUR)
    assert [(b.start, b.end) for b in blocks] == [(at, at + HOUR)]
    # Staff's addresses are checked like members': with private addresses not allowed, 10.0.0.1 is refused.
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": False}
    refused = staff_api.post(url, {**body, "server_url": "https://10.0.0.1/"}, format="json")
    assert refused.status_code == 400 and refused.json()["code"] == "private_address" and "server_url" in refused.json()
    assert CalendarToken.objects.get(owner_kind="workspace").calendar_id.startswith(caldav.url)  # unchanged
