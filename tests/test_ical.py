"""The private iCal feed: valid RFC 5545, the right events, stable UIDs, cheap polling, dead old URLs."""

from datetime import timedelta
from email.utils import parsedate_to_datetime

import pytest
from django.utils import timezone
from django.utils.http import http_date
from icalendar import Calendar

from bookings.models import Booking
from calendar_sync.models import CalendarFeed
from calendar_sync.sources import get_source
from tests.helpers import client_for

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
            [
                Booking(
                    user=member,
                    workspace=workspace,
                    title=f"B{i}",
                    start=start + timezone.timedelta(hours=offset + i),
                    end=start + timezone.timedelta(hours=offset + i, minutes=30),
                    status="confirmed",
                )
                for i in range(n)
            ]
        )

    add(2, 0)
    with django_assert_num_queries(4) as small:  # feed lookup, events, their sync records, content-changed update
        assert len(Calendar.from_ical(client.get(path).content).walk("VEVENT")) == 2
    add(200, 10)
    with django_assert_num_queries(len(small.captured_queries)):
        assert len(Calendar.from_ical(client.get(path).content).walk("VEVENT")) == 202


# --- HTTP conditional requests (Django's condition machinery) and RFC correctness -------------


def fetch(path, **headers):
    return client_for(None).get(path, **headers)


def only_event(response):
    events = Calendar.from_ical(response.content).walk("VEVENT")
    assert len(events) == 1
    return events[0]


def test_weak_listed_and_star_etags_match(api, member, make_booking):
    path = feed_path(api)
    make_booking(member, status=Booking.Status.CONFIRMED)
    tag = fetch(path)["ETag"]
    assert tag.startswith('"') and tag.endswith('"')
    for header in (f"W/{tag}", f'"nope", W/{tag}', f'"nope",{tag}', "*"):
        response = fetch(path, HTTP_IF_NONE_MATCH=header)
        assert response.status_code == 304, header
        assert response.content == b"" and response["ETag"] == tag
    assert fetch(path, HTTP_IF_NONE_MATCH='"nope", W/"other"').status_code == 200


def test_if_modified_since(api, member, make_booking):
    path = feed_path(api)
    make_booking(member, status=Booking.Status.CONFIRMED)
    first = fetch(path)
    last_modified = parsedate_to_datetime(first["Last-Modified"])
    for when in (last_modified, last_modified + timedelta(hours=1)):
        assert fetch(path, HTTP_IF_MODIFIED_SINCE=http_date(when.timestamp())).status_code == 304
    earlier = fetch(path, HTTP_IF_MODIFIED_SINCE=http_date((last_modified - timedelta(seconds=1)).timestamp()))
    assert earlier.status_code == 200 and earlier.content == first.content


def test_not_modified_has_no_content_length_but_keeps_validators(api, member, make_booking):
    path = feed_path(api)
    make_booking(member, status=Booking.Status.CONFIRMED)
    first = fetch(path)
    assert int(first["Content-Length"]) == len(first.content) > 0
    response = fetch(path, HTTP_IF_NONE_MATCH=first["ETag"])
    assert response.status_code == 304
    assert not response.has_header("Content-Length")  # RFC 9110 §8.6: never a wrong length, and 0 is wrong
    assert response["ETag"] == first["ETag"] and response["Last-Modified"] == first["Last-Modified"]
    assert response["Cache-Control"] == "private, max-age=300"


def test_renaming_the_workspace_changes_tag_date_and_summary(api, member, workspace, make_booking):
    path = feed_path(api)
    make_booking(member, status=Booking.Status.CONFIRMED)
    first = fetch(path)
    assert str(only_event(first)["SUMMARY"]) == "Deep work — The Loft"
    an_hour_ago = timezone.now() - timedelta(hours=1)
    CalendarFeed.objects.update(content_changed_at=an_hour_ago)  # as if the content was last seen changing then
    assert parsedate_to_datetime(fetch(path)["Last-Modified"]) == an_hour_ago.replace(microsecond=0)  # unchanged

    workspace.name = "The Attic"
    workspace.save()
    after = fetch(path, HTTP_IF_NONE_MATCH=first["ETag"])
    assert after.status_code == 200 and after["ETag"] != first["ETag"]
    assert parsedate_to_datetime(after["Last-Modified"]) > an_hour_ago
    event = only_event(after)
    assert str(event["SUMMARY"]) == "Deep work — The Attic" and str(event["LOCATION"]).startswith("The Attic")
    assert fetch(path, HTTP_IF_MODIFIED_SINCE=http_date(an_hour_ago.timestamp())).status_code == 200


def test_unchanged_feed_is_byte_identical_later(api, member, make_booking, monkeypatch):
    path = feed_path(api)
    make_booking(member, status=Booking.Status.CONFIRMED)
    make_booking(member, hours_from_now=48, status=Booking.Status.CONFIRMED, title="Later")
    first = fetch(path)
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=5))  # fetched 5 s later
    second = fetch(path)
    assert second.content == first.content
    assert second["ETag"] == first["ETag"] and second["Last-Modified"] == first["Last-Modified"]


def test_reschedule_is_a_new_revision(api, member, make_booking):
    path = feed_path(api)
    booking = make_booking(member, status=Booking.Status.CONFIRMED)
    an_hour_ago = timezone.now().replace(microsecond=0) - timedelta(hours=1)
    Booking.objects.filter(pk=booking.pk).update(updated_at=an_hour_ago)  # no signal: not a revision
    before = only_event(fetch(path))
    assert before["SEQUENCE"] == 0
    assert before.decoded("DTSTAMP") == before.decoded("LAST-MODIFIED") == an_hour_ago

    booking.refresh_from_db()
    booking.start += timedelta(days=1)
    booking.end += timedelta(days=1)
    booking.save()
    after = only_event(fetch(path))
    assert str(after["UID"]) == str(before["UID"])
    assert after.decoded("DTSTART") == booking.start
    assert after["SEQUENCE"] == 1
    assert after.decoded("LAST-MODIFIED") > an_hour_ago
    assert after.decoded("DTSTAMP") == after.decoded("LAST-MODIFIED") == booking.updated_at.replace(microsecond=0)

    booking.title = "Renamed"
    booking.save()
    assert only_event(fetch(path))["SEQUENCE"] == 2


def test_feed_only_answers_get_and_head(api, member, make_booking):
    path = feed_path(api)
    make_booking(member, status=Booking.Status.CONFIRMED)
    client = client_for(None)
    assert client.post(path).status_code == 405
    assert client.put(path).status_code == 405
    assert client.delete(path).status_code == 405
    head = client.head(path)
    assert head.status_code == 200 and head.content == b"" and head["ETag"] == client.get(path)["ETag"]


def test_unknown_feed_is_404_before_any_work(api, member):
    path = feed_path(api)
    response = client_for(None).get(path.replace(path[-10:-4], "AAAAAA"), HTTP_IF_NONE_MATCH="*")
    assert response.status_code == 404


def test_clients_are_told_how_often_to_poll(api, member, make_booking):
    path = feed_path(api)
    make_booking(member, status=Booking.Status.CONFIRMED)
    response = fetch(path)
    lines = response.content.splitlines()
    assert b"REFRESH-INTERVAL;VALUE=DURATION:PT15M" in lines and b"X-PUBLISHED-TTL:PT15M" in lines
    assert response["Cache-Control"] == "private, max-age=300"
    cal = Calendar.from_ical(response.content)
    assert cal.decoded("REFRESH-INTERVAL") == timedelta(minutes=15)
    for event in cal.walk("VEVENT"):
        for name in ("UID", "DTSTAMP", "DTSTART", "DTEND", "SEQUENCE", "LAST-MODIFIED"):
            assert name in event, name
