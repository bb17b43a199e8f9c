"""The private iCal feed: valid RFC 5545, the right events, stable UIDs, cheap polling, dead old URLs."""
import pytest
from django.utils import timezone
from icalendar import Calendar

from bookings.models import Booking
from calendar_sync.models import CalendarFeed
from calendar_sync.sources import get_source
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def feed_path(api):
    url = api.post("/api/calendar-sync/ical").json()["url"]
    return url.removeprefix("http://testserver")


def test_feed_lifecycle_and_contents(api, member, other, make_booking):
    assert api.get("/api/calendar-sync/ical").json()["url"] is None
    created = api.post("/api/calendar-sync/ical")
    assert created.status_code == 201
    url = created.json()["url"]
    assert url.startswith("http://testserver/api/calendar-sync/ical/") and url.endswith(".ics")
    assert api.post("/api/calendar-sync/ical").json()["url"] == url  # creating again shows the same
    assert api.get("/api/calendar-sync/ical").json()["url"] == url

    confirmed = make_booking(member, hours_from_now=24, status=Booking.Status.CONFIRMED)
    make_booking(member, hours_from_now=30, status=Booking.Status.PENDING)
    make_booking(member, hours_from_now=40, status=Booking.Status.CANCELLED)
    make_booking(member, hours_from_now=-48, status=Booking.Status.CONFIRMED)  # past
    make_booking(other, hours_from_now=50, status=Booking.Status.CONFIRMED)  # someone else's

    anonymous = client_for(None)
    response = anonymous.get(url.removeprefix("http://testserver"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/calendar")
    cal = Calendar.from_ical(response.content)
    events = cal.walk("VEVENT")
    assert len(events) == 1
    event = events[0]
    assert str(event["UID"]) == f"{get_source('booking').event_id(confirmed.pk)}@calendar-sync"
    assert event.decoded("DTSTART") == confirmed.start and event.decoded("DTEND") == confirmed.end
    assert str(event["SUMMARY"]) == "Deep work — The Loft" and "Harbour" in str(event["LOCATION"])
    assert cal["VERSION"] == "2.0" and cal["PRODID"]

    # cancelling removes it; the UID of the others stays the same across renders
    Booking.objects.filter(pk=confirmed.pk).update(status=Booking.Status.CANCELLED)
    assert Calendar.from_ical(anonymous.get(url.removeprefix("http://testserver")).content).walk("VEVENT") == []


def test_conditional_requests(api, member, make_booking):
    path = feed_path(api)
    make_booking(member, status=Booking.Status.CONFIRMED)
    client = client_for(None)
    first = client.get(path)
    assert first["ETag"] and first["Last-Modified"]
    again = client.get(path, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304 and again.content == b""
    make_booking(member, hours_from_now=72, status=Booking.Status.CONFIRMED, title="Another")
    changed = client.get(path, HTTP_IF_NONE_MATCH=first["ETag"])
    assert changed.status_code == 200 and changed["ETag"] != first["ETag"]


def test_wrong_or_rotated_token_is_404(api, member):
    old = feed_path(api)
    client = client_for(None)
    assert client.get(old).status_code == 200
    assert client.get(old.replace(old[-10:-4], "AAAAAA")).status_code == 404
    new = api.post("/api/calendar-sync/ical/rotate").json()["url"].removeprefix("http://testserver")
    assert new != old
    assert client.get(old).status_code == 404
    assert client.get(new).status_code == 200
    assert api.delete("/api/calendar-sync/ical").status_code == 204
    assert client.get(new).status_code == 404


def test_feed_secret_is_not_stored_in_clear(api, member):
    path = feed_path(api)
    secret = path.rsplit("/", 1)[1].removesuffix(".ics")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT secret, secret_hash FROM calendar_sync_calendarfeed")
        stored, digest = cursor.fetchone()
    assert secret not in stored and digest == CalendarFeed.hash(secret)


def test_feed_needs_no_google_configuration(api, member, make_booking, settings):
    settings.CALENDAR_SYNC = {"SOURCES": settings.CALENDAR_SYNC["SOURCES"]}
    make_booking(member, status=Booking.Status.CONFIRMED)
    path = feed_path(api)
    assert len(Calendar.from_ical(client_for(None).get(path).content).walk("VEVENT")) == 1


def test_feed_events_take_one_query(api, member, workspace, django_assert_num_queries):
    path = feed_path(api)
    client = client_for(None)
    start = timezone.now() + timezone.timedelta(days=1)

    def add(n, offset):
        Booking.objects.bulk_create(
            [Booking(user=member, workspace=workspace, title=f"B{i}", start=start + timezone.timedelta(hours=offset + i), end=start + timezone.timedelta(hours=offset + i, minutes=30), status="confirmed") for i in range(n)]
        )

    add(2, 0)
    with django_assert_num_queries(3) as small:  # feed lookup, events, last-modified
        assert len(Calendar.from_ical(client.get(path).content).walk("VEVENT")) == 2
    add(200, 10)
    with django_assert_num_queries(len(small.captured_queries)):
        assert len(Calendar.from_ical(client.get(path).content).walk("VEVENT")) == 202
