"""ICS links: read-only, conflicts only; expanded exactly; an unchanged feed (304) is never parsed again."""

import datetime as dt
import logging
from pathlib import Path

import icalendar
import pytest
from django.db import connection
from django.utils import timezone

from calendar_sync import sync
from calendar_sync.fetch import normalize
from calendar_sync.models import CalendarToken, SyncRecord
from calendar_sync.providers import get_provider
from calendar_sync.providers.ics import credential
from tests.caldav_servers import IcsServer

pytestmark = pytest.mark.django_db
FEED = (Path(__file__).parent / "fixtures" / "member_feed.ics").read_bytes()
UTC = dt.UTC
START, END = dt.datetime(2027, 3, 1, tzinfo=UTC), dt.datetime(2027, 4, 5, tzinfo=UTC)


def at(day, hour, month=3):
    return dt.datetime(2027, month, day, hour, tzinfo=UTC)


#: The fixture's busy time, member in New York: the stand-up at 09:00 Berlin (08:00Z, then 07:00Z
#: after Europe's clocks change on 28 March), 15 March excluded, 22 March moved to the 23rd at 10:00;
#: the all-day offsite as New York's 10 March; the transparent and the cancelled event not at all.
EXPECTED = [
    (at(1, 8), at(1, 9)),
    (at(8, 8), at(8, 9)),
    (at(10, 5), at(11, 5)),
    (at(23, 9), at(23, 10)),
    (at(29, 7), at(29, 8)),
]


@pytest.fixture
def feed():
    server = IcsServer(FEED)
    yield server
    server.close()


@pytest.fixture
def private_ok(settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}


@pytest.fixture
def parses(monkeypatch):
    """How many times an iCalendar document was parsed (counted in the library, not in our code)."""
    calls = []
    original = icalendar.Calendar.from_ical.__func__

    def counting(cls, *args, **kwargs):
        calls.append(1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(icalendar.Calendar, "from_ical", classmethod(counting))
    return calls


def test_the_fixture_gives_exactly_the_expected_busy_intervals(feed, private_ok):
    with timezone.override("America/New_York"):
        blocks = get_provider("ics").busy(credential(feed.url), "primary", START, END)
    assert sorted((b.start, b.end) for b in blocks) == EXPECTED
    assert not any(b.ours for b in blocks)


def test_an_unchanged_feed_costs_no_parse(feed, private_ok, parses):
    provider, secret = get_provider("ics"), credential(feed.url)
    first = provider.changes(secret, "primary", None, START, END)
    assert first.full and len(first.blocks) == 5 and len(parses) == 1
    again = provider.changes(secret, "primary", first.cursor, START, END)
    assert feed.hits[-1][0] == 304 and feed.hits[-1][1]  # asked with its ETag, answered Not Modified
    assert (again.full, again.blocks, again.removed, again.cursor) == (False, [], [], first.cursor)
    assert len(parses) == 1
    provider.busy(secret, "primary", START, END)
    provider.busy(secret, "primary", START, END)  # the second is a 304: the parsed calendar is reused
    assert [status for status, _ in feed.hits[-2:]] == [200, 304] and len(parses) == 2


def test_connecting_an_ics_link_keeps_it_secret_and_never_writes(
    feed, private_ok, api, member, make_booking, run, caplog
):
    caplog.set_level(logging.DEBUG)  # even the HTTP library's request lines never show the link
    response = run(api.post, "/api/calendar-sync/connections/ics", {"url": feed.url}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["provider"] == "ics" and "secret-feed" not in str(body)
    token = CalendarToken.objects.get()
    with connection.cursor() as cursor:
        cursor.execute("SELECT access_token, refresh_token FROM calendar_sync_calendartoken")
        assert all("secret-feed" not in column for column in cursor.fetchone())  # encrypted at rest
    shown = get_provider("ics").account(token.access_token)
    assert shown == "http://127.0.0.1/…"  # the host only: an iCloud link's path ends in its token
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    sync.sync_object("booking", booking.pk)
    record = SyncRecord.objects.get()
    assert record.state == SyncRecord.State.NOT_CONNECTED  # an ICS link is never where bookings go
    assert (
        not body["write"]
        and api.patch(f"/api/calendar-sync/connections/{body['id']}/", {"write": True}, format="json").json()["code"]
        == "read_only"
    )
    assert caplog.messages and all("secret-feed" not in message for message in caplog.messages)
    gets = [status for status, _ in feed.hits]
    assert gets == [200]  # one fetch to connect; nothing was written to it


def test_webcal_is_read_as_https():
    assert (
        normalize("webcal://p01-caldav.icloud.com/published/2/abc") == "https://p01-caldav.icloud.com/published/2/abc"
    )


def test_a_link_that_is_not_a_calendar_is_a_400(private_ok, api):
    server = IcsServer(b"<html>not a calendar</html>")
    try:
        response = api.post("/api/calendar-sync/connections/ics", {"url": server.url}, format="json")
    finally:
        server.close()
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_calendar" and "url" in response.json()


def test_a_withdrawn_link_is_a_400_naming_it(private_ok, api, feed):
    response = api.post("/api/calendar-sync/connections/ics", {"url": feed.url + ".old"}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "link_gone" and "url" in response.json()
    assert not CalendarToken.objects.exists()
